"""Heuristic quality filters (Llama 3 paper §3.1.1)."""

import dagster as dg

from assets.data.steps import global_step
from dagster_project.artifacts import DocShards
from dagster_project.configs import dagster_config_for
from dagster_project.partitions import SNAPSHOTS
from dagster_project.resources import DvcResource, MlflowResource
from dagster_project.stage import stage_asset
from ml.curate.filters import FilterConfig, heuristic_filter

FilterRun = dagster_config_for(FilterConfig)


@stage_asset(DocShards, partitions_def=SNAPSHOTS, kinds={"python", "parquet"})
def filtered_docs(
    context: dg.AssetExecutionContext,
    config: FilterRun,
    line_deduped: DocShards,
    mlflow: MlflowResource,
    dvc: DvcResource,
) -> dg.MaterializeResult:
    """Heuristic filters: duplicated n-gram coverage, dirty-word ratio (per-language lists shipped with the
    project), token-distribution KL outliers against the corpus, length, symbol and alpha ratios."""
    return global_step(
        context, config, FilterConfig, line_deduped, heuristic_filter, mlflow, dvc, "Heuristic filters"
    )
