"""PII redaction: e-mail and IP addresses replaced by placeholders (Llama 3 paper §3.1.1)."""

import dagster as dg

from assets.data.steps import global_step
from dagster_project.artifacts import DocShards
from dagster_project.configs import dagster_config_for
from dagster_project.partitions import SNAPSHOTS
from dagster_project.resources import DvcResource, MlflowResource
from dagster_project.stage import stage_asset
from ml.curate.pii import PiiConfig, redact_pii

PiiRun = dagster_config_for(PiiConfig)


@stage_asset(DocShards, partitions_def=SNAPSHOTS, kinds={"python", "parquet"})
def pii_redacted(
    context: dg.AssetExecutionContext,
    config: PiiRun,
    boilerplate_removed: DocShards,
    mlflow: MlflowResource,
    dvc: DvcResource,
) -> dg.MaterializeResult:
    """E-mail and public IP addresses replaced by placeholders, counted per document (``pii_emails``,
    ``pii_ips``); nothing is dropped. The originals stay only in ``raw_crawl``."""
    return global_step(
        context, config, PiiConfig, boilerplate_removed, redact_pii, mlflow, dvc, "PII redaction"
    )
