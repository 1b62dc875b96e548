"""The one pattern every asset body follows.

    @dg.asset(partitions_def=SNAPSHOTS)
    def url_deduped(context, config: UrlRun, extracted_docs: DocShards, mlflow, dvc) -> dg.Output[DocShards]:
        cfg = resolve_config(UrlDedupConfig, config)
        with stage_run(context, mlflow, dvc, cfg, extracted_docs) as run:
            with atomic_dir(run.out_dir) as tmp:
                result = ml_function(extracted_docs.read(), cfg, tmp)
            return run.result(num_records=..., summary=...)

``stage_run`` opens the asset's MLflow run (nested under the Dagster run's parent run) with the resolved
config as params and the upstream artifact handles as dataset inputs; ``run.result`` versions the
artifact with DVC, logs metrics and tags, and returns ``dg.Output`` of the asset's declared handle type
with the metadata every asset carries (path, num_records and ``dagster/row_count``, MLflow run id/URL,
DVC md5, git SHA, a markdown summary).
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg

from dagster_project.artifacts import Artifact
from dagster_project.home import artifact_dir, git_sha, lifecycle_home
from dagster_project.resources import AssetRunLog, DvcResource, MlflowResource
from ml.config import StageConfig


def partition_of(context: dg.AssetExecutionContext) -> str | None:
    return context.partition_key if context.has_partition_key else None


def md_table(rows: Mapping[str, Any] | list[tuple], headers: tuple[str, ...] = ("key", "value")) -> str:
    items = list(rows.items()) if isinstance(rows, Mapping) else rows
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in items:
        cells = [f"{c:.4g}" if isinstance(c, float) else str(c) for c in row]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def png_markdown(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


class StageRun:
    """State of one asset materialization: output dir, MLflow run, metrics collected so far."""

    def __init__(
        self,
        context: dg.AssetExecutionContext,
        mlflow: MlflowResource,
        dvc: DvcResource,
        cfg: StageConfig,
        inputs: list[Artifact],
    ):
        self.context = context
        self.asset = context.asset_key.to_user_string()
        self.partition = partition_of(context)
        self.out_dir = artifact_dir(self.asset, self.partition)
        self.dvc = dvc
        self.cfg = cfg
        self.input_md5 = {a.asset: a.md5 for a in inputs}
        self.log: AssetRunLog = mlflow.start_asset_run(
            dagster_run_id=context.run_id,
            job_name=context.job_name,
            asset=self.asset,
            partition=self.partition,
            params={"config_class": type(cfg).__name__, **cfg.to_dict()},
            tags={"git_sha": git_sha(), "lifecycle.home": str(lifecycle_home())},
        )
        for a in inputs:
            self.log.log_input(a.asset, a.path, a.md5)
        self.metrics: dict[str, float] = {}
        self.extra_md: list[str] = []
        self.plots: dict[str, str] = {}

    def log_metrics(self, metrics: Mapping[str, Any]) -> None:
        numeric = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        self.metrics.update(numeric)
        self.log.log_metrics(numeric)

    def log_png(self, png_path: Path, alt: str) -> str:
        """Log a plot as an MLflow artifact; returns markdown embedding it for the Dagster UI."""
        self.log.log_artifact(png_path, "plots")
        md = png_markdown(Path(png_path).read_bytes(), alt)
        self.extra_md.append(md)
        self.plots[alt.replace(" ", "_") + "_plot"] = md
        return md

    def result(
        self,
        *,
        num_records: int,
        summary: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> dg.Output:
        md5 = self.dvc.track(self.out_dir)
        self.log.set_tags({"dvc_md5": md5, "num_records": num_records})
        self.log.log_metrics({"num_records": num_records})
        self.log.log_text(summary, "summary.md")
        self.log.finish("FINISHED")
        meta: dict[str, Any] = {
            "path": dg.MetadataValue.path(str(self.out_dir)),
            "num_records": num_records,
            "dagster/row_count": num_records,
            "mlflow_run_id": self.log.run_id,
            "mlflow_run_url": dg.MetadataValue.url(self.log.url),
            "dvc_md5": md5,
            "git_sha": git_sha(),
            "preset_config": dg.MetadataValue.json(self.cfg.to_dict()),
            "inputs": dg.MetadataValue.json(self.input_md5),
            "summary": dg.MetadataValue.md("\n\n".join([summary, *self.extra_md])),
        }
        meta.update({name: dg.MetadataValue.md(md) for name, md in self.plots.items()})
        meta.update(metadata or {})
        handle_cls = self.context.assets_def.op.output_defs[0].dagster_type.typing_type
        handle = handle_cls(asset=self.asset, partition=self.partition, path=self.out_dir, md5=md5)
        return dg.Output(handle, metadata=meta, data_version=dg.DataVersion(md5))


@contextlib.contextmanager
def stage_run(
    context: dg.AssetExecutionContext,
    mlflow: MlflowResource,
    dvc: DvcResource,
    cfg: StageConfig,
    *inputs: Artifact,
) -> Iterator[StageRun]:
    """The asset's MLflow run around its body; ``inputs`` are the upstream handles it reads."""
    run = StageRun(context, mlflow, dvc, cfg, list(inputs))
    try:
        yield run
    except BaseException:
        run.log.finish("FAILED")
        raise
