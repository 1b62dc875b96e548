"""Schedules and automation.

* ``weekly_crawl`` (Monday 03:00, on): crawls a new snapshot partition named by the date; every
  downstream asset follows through its automation condition (eager, ``stage_asset``'s default), evaluated
  by ``lifecycle_automation``, the automation-condition sensor (on).
* ``weekly_data_refresh`` (Monday 03:00, off): re-runs the data pipeline of the default snapshot in place.
* ``nightly_evals`` (02:00, on): re-evaluates the newest base model (the snapshot of ``base_model``'s newest
  materialization): ``base_model_evals`` and ``safety_evals``. Evaluations follow their inputs by automation
  anyway; the nightly run catches what automation cannot see (a host, library or data-file change under
  an evaluator) and gives each night a dated record to compare.
* ``next_post_training_round`` (sensor, on): when a round's ``chat_promotion`` becomes current (the chat
  model's checks, its safety evaluation's and the promotion's all passed, so it is the ``champion``) and the
  rounds config plans another round, requests that round's run (``posttrain_round``).
"""

from __future__ import annotations

import dagster as dg

from dagster_project.jobs import DOMAIN_JOBS, ROUNDS_JOB
from dagster_project.partitions import (
    DEFAULT_SNAPSHOT,
    ROUND_KEYS,
    SNAPSHOTS,
    round_key,
    round_number,
    round_partition,
)

NIGHTLY_EVALS = ("base_model_evals", "safety_evals")


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


def _newest_partition(instance: dg.DagsterInstance, asset: str) -> str | None:
    records = instance.fetch_materializations(dg.AssetKey(asset), limit=1).records
    return records[0].partition_key if records else None


@dg.schedule(
    target=dg.AssetSelection.assets(*NIGHTLY_EVALS),
    cron_schedule="0 2 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def nightly_evals(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    """02:00: the evaluations of the newest base model (the snapshot of its newest materialization)."""
    snapshot = _newest_partition(context.instance, "base_model")
    if snapshot is None:
        return dg.SkipReason("no base_model has been materialized yet: nothing to evaluate")
    night = context.scheduled_execution_time.strftime("%Y-%m-%d")
    return dg.RunRequest(partition_key=snapshot, run_key=f"evals-{night}-{snapshot}", tags={"nightly": night})


def _planned_rounds() -> int:
    """The rounds config's count for the deployment's preset (``LIFECYCLE_PRESET``, its YAML layers)."""
    from dagster_project.cli import rounds_config

    return int(rounds_config(None, None).rounds)


def next_round_request(
    instance: dg.DagsterInstance, partition: str, status: str, planned: int
) -> dg.RunRequest | dg.SkipReason:
    """The run of the round after ``partition`` (``<snapshot>|round-<k>``) when its promotion is current and
    round k+1 is planned; the round's key is registered if new."""
    snapshot, key = partition.split("|")
    k = round_number(key)
    if status != "current":
        return dg.SkipReason(
            f"chat_promotion {partition} is {status!r}, not current: its checks did not pass"
        )
    if k >= planned:
        return dg.SkipReason(f"round {k} of {planned} planned: post-training of {snapshot} is complete")
    nxt = round_key(k + 1)
    if not instance.has_dynamic_partition(ROUND_KEYS.name, nxt):
        instance.add_dynamic_partitions(ROUND_KEYS.name, [nxt])
    return dg.RunRequest(partition_key=round_partition(snapshot, k + 1), run_key=f"{snapshot}|{nxt}")


@dg.asset_sensor(
    asset_key=dg.AssetKey("chat_promotion"),
    job_name=ROUNDS_JOB,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def next_post_training_round(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry):
    """A round's chat model was promoted (every check passed): start the next planned round of the snapshot."""
    mat = asset_event.asset_materialization
    status = getattr(mat.metadata.get("version_status"), "value", "")
    return next_round_request(context.instance, str(mat.partition), status, _planned_rounds())


automation = dg.AutomationConditionSensorDefinition(
    "lifecycle_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Evaluates every asset's automation condition (eager by default): a new upstream "
    "materialization, such as the weekly snapshot's crawl, is followed downstream.",
)

SCHEDULES = [weekly_crawl, weekly_data_refresh, nightly_evals]
AUTOMATION_SENSORS = [automation, next_post_training_round]
