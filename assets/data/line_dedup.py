"""Line-level dedup, ccNet style (Llama 3 paper §3.1.1)."""

import dagster as dg

from assets.data.steps import sharded_step
from dagster_project.artifacts import DocShards
from dagster_project.configs import dagster_config_for, resolve_config
from dagster_project.partitions import SNAPSHOTS
from dagster_project.resources import DaskResource, DvcResource, MlflowResource
from dagster_project.stage import stage_asset
from ml.curate.line_dedup import LineDedupConfig, line_dedup

LineRun = dagster_config_for(LineDedupConfig)


@stage_asset(DocShards, partitions_def=SNAPSHOTS, kinds={"python", "dask"})
def line_deduped(
    context: dg.AssetExecutionContext,
    config: LineRun,
    minhash_deduped: DocShards,
    mlflow: MlflowResource,
    dvc: DvcResource,
    dask: DaskResource,
) -> dg.MaterializeResult:
    """ccNet-style line dedup (Llama 3 paper §3.1.1: drop lines seen more than 6 times in each bucket of
    30M documents); each shard is a bucket, counted through 8-byte line hashes so memory stays bounded."""
    cfg = resolve_config(LineDedupConfig, config)
    return sharded_step(context, cfg, minhash_deduped, line_dedup, mlflow, dvc, dask, "Line dedup", cfg=cfg)
