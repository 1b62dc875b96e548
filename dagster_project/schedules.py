"""Schedules and automation.

* ``weekly_crawl`` (Monday 03:00, on): crawls a new snapshot partition named by the date; every
  downstream asset follows through its automation condition (eager, ``stage_asset``'s default), evaluated
  by ``lifecycle_automation``, the automation-condition sensor (on).
* ``weekly_data_refresh`` (Monday 03:00, off): re-runs the data pipeline of the default snapshot in place.
"""

from __future__ import annotations

import dagster as dg

from dagster_project.jobs import DOMAIN_JOBS
from dagster_project.partitions import DEFAULT_SNAPSHOT, SNAPSHOTS


@dg.schedule(
    target=dg.AssetSelection.assets("raw_crawl"),
    cron_schedule="0 3 * * 1",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def weekly_crawl(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Monday 03:00: a new crawl snapshot (partition ``YYYY-MM-DD``); downstream follows by automation."""
    snapshot = context.scheduled_execution_time.strftime("%Y-%m-%d")
    if not context.instance.has_dynamic_partition(SNAPSHOTS.name, snapshot):
        context.instance.add_dynamic_partitions(SNAPSHOTS.name, [snapshot])
    return dg.RunRequest(partition_key=snapshot, run_key=f"crawl-{snapshot}")


@dg.schedule(
    job=DOMAIN_JOBS["data"], cron_schedule="0 3 * * 1", default_status=dg.DefaultScheduleStatus.STOPPED
)
def weekly_data_refresh(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Monday 03:00: materialize the data pipeline for the default snapshot."""
    return dg.RunRequest(partition_key=DEFAULT_SNAPSHOT, run_key=context.scheduled_execution_time.isoformat())


automation = dg.AutomationConditionSensorDefinition(
    "lifecycle_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Evaluates every asset's automation condition (eager by default): a new upstream "
    "materialization, such as the weekly snapshot's crawl, is followed downstream.",
)

SCHEDULES = [weekly_crawl, weekly_data_refresh]
AUTOMATION_SENSORS = [automation]
