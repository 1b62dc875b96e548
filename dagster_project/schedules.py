"""Schedules: re-crawl and re-curate the default snapshot weekly (the local web changes when packages do)."""

from __future__ import annotations

import dagster as dg

from dagster_project.jobs import DOMAIN_JOBS
from dagster_project.partitions import DEFAULT_SNAPSHOT


@dg.schedule(
    job=DOMAIN_JOBS["data"], cron_schedule="0 3 * * 1", default_status=dg.DefaultScheduleStatus.STOPPED
)
def weekly_data_refresh(context: dg.ScheduleEvaluationContext):
    """Monday 03:00: materialize the data pipeline for the default snapshot."""
    return dg.RunRequest(partition_key=DEFAULT_SNAPSHOT, run_key=context.scheduled_execution_time.isoformat())


SCHEDULES = [weekly_data_refresh]
