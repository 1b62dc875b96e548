"""URL dedup (Llama 3 paper §3.1.1): keep one crawl of each normalized URL."""

import dagster as dg

from assets.data.steps import global_step
from dagster_project.artifacts import DocShards
from dagster_project.configs import dagster_config_for
from dagster_project.partitions import SNAPSHOTS
from dagster_project.resources import DvcResource, MlflowResource
from dagster_project.stage import stage_asset
from ml.curate.url_dedup import UrlDedupConfig, url_dedup

UrlRun = dagster_config_for(UrlDedupConfig)


@stage_asset(DocShards, partitions_def=SNAPSHOTS, kinds={"python", "parquet"})
def url_deduped(
    context: dg.AssetExecutionContext,
    config: UrlRun,
    url_filtered: DocShards,
    mlflow: MlflowResource,
    dvc: DvcResource,
) -> dg.MaterializeResult:
    """URL-level dedup (Llama 3 paper §3.1.1: keep the most recent crawl of each URL). URLs are
    normalized first (case, default ports, fragments, tracking parameters, query order)."""
    return global_step(context, config, UrlDedupConfig, url_filtered, url_dedup, mlflow, dvc, "URL dedup")
