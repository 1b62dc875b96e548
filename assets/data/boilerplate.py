"""Boilerplate lines removed (C4/FineWeb-style line rules) and hard-wrapped paragraphs unwrapped."""

import dagster as dg

from assets.data.steps import global_step
from dagster_project.artifacts import DocShards
from dagster_project.configs import dagster_config_for
from dagster_project.partitions import SNAPSHOTS
from dagster_project.resources import DvcResource, MlflowResource
from dagster_project.stage import stage_asset
from ml.curate.boilerplate import BoilerplateConfig, remove_boilerplate

BoilerplateRun = dagster_config_for(BoilerplateConfig)


@stage_asset(DocShards, partitions_def=SNAPSHOTS, kinds={"python", "parquet"})
def boilerplate_removed(
    context: dg.AssetExecutionContext,
    config: BoilerplateRun,
    url_deduped: DocShards,
    mlflow: MlflowResource,
    dvc: DvcResource,
) -> dg.MaterializeResult:
    """Line-level clean-up before dedup: javascript, cookie/policy and navigation lines (texinfo's "Next: …
    Up: …") removed, hard-wrapped paragraphs joined so that line dedup sees sentences; documents left
    empty, lorem ipsum, or failing the terminal-punctuation rule dropped with their reason."""
    return global_step(
        context, config, BoilerplateConfig, url_deduped, remove_boilerplate, mlflow, dvc, "Boilerplate lines"
    )
