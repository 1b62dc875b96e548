"""The one ``Definitions`` object: every lifecycle asset, its checks, resources, jobs and schedules."""

from __future__ import annotations

import warnings

import dagster as dg

# Partitioned asset checks are a Dagster "preview" feature; the gates rely on them, so say it once here.
warnings.filterwarnings(
    "ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning
)

from dagster_project.jobs import ALL_ASSETS, ALL_CHECKS, JOBS  # noqa: E402 (after the warnings filter)
from dagster_project.resources import (  # noqa: E402 (after the warnings filter)
    DaskResource,
    DvcResource,
    LocalWebResource,
    MlflowResource,
    RedisResource,
    TorchrunResource,
)
from dagster_project.schedules import SCHEDULES  # noqa: E402 (after the warnings filter)


def default_resources() -> dict:
    return {
        "mlflow": MlflowResource(),
        "dvc": DvcResource(),
        "local_web": LocalWebResource(),
        "redis": RedisResource(mode=dg.EnvVar("LIFECYCLE_REDIS_MODE").get_value("off") or "off"),
        "dask": DaskResource(scheduler_address=dg.EnvVar("DASK_SCHEDULER_ADDRESS").get_value("") or ""),
        "torchrun": TorchrunResource(),
    }


defs = dg.Definitions(
    assets=ALL_ASSETS,
    asset_checks=ALL_CHECKS,
    jobs=JOBS,
    schedules=SCHEDULES,
    resources=default_resources(),
)
