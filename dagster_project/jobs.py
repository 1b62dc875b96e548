"""Asset lists and jobs. ``lifecycle`` materializes the whole graph for one crawl snapshot."""

from __future__ import annotations

import dagster as dg

from assets.data import crawl, curate
from assets.pretrain import pretrain
from assets.tokens import tokenize
from dagster_project import checks
from dagster_project.partitions import SNAPSHOTS

ASSET_MODULES = [crawl, curate, tokenize, pretrain]
ALL_ASSETS = dg.load_assets_from_modules(ASSET_MODULES)
ALL_CHECKS = dg.load_asset_checks_from_modules([checks])

lifecycle_job = dg.define_asset_job(
    "lifecycle",
    selection=dg.AssetSelection.all(),
    partitions_def=SNAPSHOTS,
    description="Every lifecycle asset for one crawl snapshot, in dependency order.",
)
data_job = dg.define_asset_job(
    "data_pipeline",
    selection=dg.AssetSelection.groups("data"),
    partitions_def=SNAPSHOTS,
    description="Crawl → extraction → dedup → filters → classifiers → mix.",
)
JOBS = [lifecycle_job, data_job]
