"""URL filter before dedup (Llama 3 paper §3.1.1: unsafe and adult domains are removed)."""

import dagster as dg

from assets.data.steps import global_step
from dagster_project.artifacts import DocShards
from dagster_project.configs import dagster_config_for
from dagster_project.partitions import SNAPSHOTS
from dagster_project.resources import DvcResource, MlflowResource
from dagster_project.stage import stage_asset
from ml.curate.url_filter import UrlFilterConfig, filter_urls

UrlFilterRun = dagster_config_for(UrlFilterConfig)


@stage_asset(DocShards, partitions_def=SNAPSHOTS, kinds={"python", "parquet"})
def url_filtered(
    context: dg.AssetExecutionContext,
    config: UrlFilterRun,
    extracted_docs: DocShards,
    mlflow: MlflowResource,
    dvc: DvcResource,
) -> dg.MaterializeResult:
    """Documents whose host or URL matches the block list (a versioned file shipped with the package, plus
    configured hosts and patterns) are dropped; the reason (``blocked_host`` / ``blocked_pattern``) names
    the matching entry."""
    return global_step(
        context, config, UrlFilterConfig, extracted_docs, filter_urls, mlflow, dvc, "URL filter"
    )
