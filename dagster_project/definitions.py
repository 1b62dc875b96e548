"""The one ``Definitions`` object: every discovered asset and check, resources, jobs and schedules."""

from __future__ import annotations

import warnings

import dagster as dg

# Partitioned asset checks are a Dagster "preview" feature; the gates rely on them, so say it once here.
warnings.filterwarnings(
    "ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning
)
# An asset's output carries its DVC md5 as the data version (a Dagster "beta" parameter of dg.Output).
warnings.filterwarnings("ignore", message="Parameter `data_version`", category=dg.BetaWarning)

from dagster_project.artifacts import ArtifactIOManager  # noqa: E402 (after the warnings filter)
from dagster_project.discovery import ASSETS, CHECKS  # noqa: E402 (after the warnings filter)
from dagster_project.jobs import JOBS  # noqa: E402 (after the warnings filter)
from dagster_project.resources import (  # noqa: E402 (after the warnings filter)
    DaskResource,
    DvcResource,
    LocalWebResource,
    MlflowResource,
    RedisResource,
    TorchrunResource,
)
from dagster_project.schedules import AUTOMATION_SENSORS, SCHEDULES  # noqa: E402 (after the warnings filter)
from dagster_project.sensors import SENSORS  # noqa: E402 (after the warnings filter)


def default_resources() -> dict:
    return {
        "io_manager": ArtifactIOManager(),
        "mlflow": MlflowResource(),
        "dvc": DvcResource(),
        "local_web": LocalWebResource(),
        "redis": RedisResource(mode=dg.EnvVar("LIFECYCLE_REDIS_MODE").get_value("off") or "off"),
        "dask": DaskResource(scheduler_address=dg.EnvVar("DASK_SCHEDULER_ADDRESS").get_value("") or ""),
        "torchrun": TorchrunResource(),
    }


defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=CHECKS,
    jobs=JOBS,
    schedules=SCHEDULES,
    sensors=[*SENSORS, *AUTOMATION_SENSORS],
    resources=default_resources(),
)


def stage_names() -> list[str]:
    """Every materializable asset, in dependency order (what ``lifecycle run`` and the tests expect)."""
    graph = defs.resolve_asset_graph()
    return [k.to_user_string() for k in graph.toposorted_asset_keys if graph.get(k).is_executable]
