"""Crawl snapshots partition the data assets: a date (``2026-11-23``) or a name (``local-web``, ``CC-MAIN-2024-10``)."""

import dagster as dg

SNAPSHOTS = dg.DynamicPartitionsDefinition(name="crawl_snapshot")
DEFAULT_SNAPSHOT = "local-web"
