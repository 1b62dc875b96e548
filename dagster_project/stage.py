"""The one pattern every asset body follows.

    def url_deduped_contract(url_deduped: DocShards) -> dg.AssetCheckResult: ...   # a blocking check ("gate")

    @stage_asset(gates=[url_deduped_contract], partitions_def=SNAPSHOTS)
    def url_deduped(context, config: UrlRun, extracted_docs: DocShards, mlflow, dvc) -> dg.MaterializeResult:
        cfg = resolve_config(UrlDedupConfig, config)
        with stage_run(context, mlflow, dvc, cfg, extracted_docs) as run:
            with atomic_dir(run.out_dir) as tmp:
                result = ml_function(extracted_docs.read(), cfg, tmp)
            return run.result(num_records=..., summary=...)

``stage_run`` reserves a new immutable version of the artifact (``run.out_dir``, see
dagster_project/versions.py) and opens the asset's MLflow run (nested under the Dagster run's parent run)
with the resolved config as params and the upstream artifact handles as dataset inputs. ``run.result``
runs the asset's gates on the new version; if every blocking one passes it promotes the version to current
(DVC records it), otherwise the version is kept, marked failed, and current does not move. It logs
metrics and tags and returns ``dg.MaterializeResult`` with the gates' check results and the metadata every
asset carries (version and its status, path, num_records and ``dagster/row_count``, MLflow run id/URL, DVC
md5, git SHA, a markdown summary). Downstream assets load the version their upstream's materialization
recorded (``ArtifactIOManager``).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import os
import sys
import time
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg

from dagster_project.artifacts import Artifact
from dagster_project.dvc_yaml import source_deps
from dagster_project.home import REPO_ROOT, git_sha, lifecycle_home
from dagster_project.registry import Registered, log_and_register
from dagster_project.resources import AssetRunLog, DvcResource, MlflowResource, directory_md5
from dagster_project.versions import VersionError, VersionStore
from ml.config import StageConfig
from ml.io import update_hash

Gate = Callable[[Any], dg.AssetCheckResult]
_GATES: dict[str, tuple[Gate, ...]] = {}
_REGISTERED: dict[str, Registered] = {}


def stage_asset(
    artifact: type[Artifact],
    *,
    gates: Sequence[Gate] = (),
    registered: Registered | None = None,
    **asset_kwargs: Any,
) -> Callable[[Callable], dg.AssetsDefinition]:
    """``dg.asset`` for a stage writing an ``artifact`` (a handle class), with blocking checks (``gates``)
    that run inside the materialization on the new version, before it may become current. A gate takes the
    artifact handle (typed by its first parameter) and returns a ``dg.AssetCheckResult``; it shows in the
    UI as the asset's check of the same name.

    Defaults (overridable per asset): ``code_version`` = a hash of the source files on the asset module's
    import graph (the files its dvc.yaml stage depends on), so a code change marks exactly the assets whose
    code changed, and what is downstream of them, stale; ``automation_condition`` = eager: when an upstream
    partition is materialized (a new weekly snapshot) the automation sensor materializes it too.

    ``registered``: the asset writes a model; each version that becomes current is logged as an MLflow
    model, registered under ``registered.name`` and aliased ``candidate`` (dagster_project/registry.py)."""

    def wrap(fn: Callable) -> dg.AssetsDefinition:
        name = asset_kwargs.get("name") or fn.__name__
        asset_kwargs.setdefault("code_version", code_version(fn.__module__))
        asset_kwargs.setdefault("automation_condition", dg.AutomationCondition.eager())
        specs = [
            dg.AssetCheckSpec(g.__name__, asset=name, blocking=True, description=(g.__doc__ or "").strip())
            for g in gates
        ]
        _GATES[name] = tuple(gates)
        if registered is not None:
            _REGISTERED[name] = registered
        meta = {"artifact_type": artifact.__name__, "artifact_layout": (artifact.__doc__ or "").strip()}
        meta.update(asset_kwargs.pop("metadata", {}))
        return dg.asset(check_specs=specs or None, metadata=meta, **asset_kwargs)(fn)

    return wrap


@functools.cache
def code_version(module: str, root: Path = REPO_ROOT) -> str:
    """sha256 (16 hex) over the path and bytes of every repo source file on ``module``'s import graph."""
    h = hashlib.sha256()
    for rel in source_deps(module, root=root):
        h.update(rel.encode() + b"\0")
        update_hash(h, root / rel)
    return h.hexdigest()[:16]


def gates_of(asset: str) -> tuple[Gate, ...]:
    return _GATES.get(asset, ())


def run_gate(gate: Gate, asset: str, partition: str | None, path: Path, md5: str) -> dg.AssetCheckResult:
    """Evaluate one gate on the artifact at ``path``; a gate that raises has failed, with the error."""
    hints = {k: v for k, v in typing.get_type_hints(gate).items() if k != "return"}
    handle_cls = next(iter(hints.values()), Artifact)
    try:
        res = gate(handle_cls(asset=asset, partition=partition, path=path, md5=md5))
    except (
        Exception
    ) as exc:  # the check itself failed on this version: that is a failed check, with the reason
        res = dg.AssetCheckResult(
            passed=False, description=f"{gate.__name__} raised {type(exc).__name__}: {exc}"
        )
    return dg.AssetCheckResult(
        passed=res.passed,
        severity=res.severity,
        description=res.description,
        metadata=res.metadata,
        check_name=gate.__name__,
    )


def progress(line: str) -> None:
    """One line per asset start and end on stderr, for people watching ``make run`` (``LIFECYCLE_PROGRESS=0``
    silences it); Dagster captures it in the step's logs too."""
    if os.environ.get("LIFECYCLE_PROGRESS", "1") not in ("0", "false", "off"):
        print(f"[lifecycle {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def partition_of(context: dg.AssetExecutionContext) -> str | None:
    return context.partition_key if context.has_partition_key else None


def md_table(rows: Mapping[str, Any] | list[tuple], headers: tuple[str, ...] = ("key", "value")) -> str:
    items = list(rows.items()) if isinstance(rows, Mapping) else rows
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in items:
        cells = [f"{c:.4g}" if isinstance(c, float) else str(c) for c in row]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def frame_md(df: Any) -> str:
    """A pandas DataFrame as a markdown table, its index as the first column (floats to 4 significant)."""
    rows = [(idx, *row) for idx, row in zip(df.index, df.itertuples(index=False), strict=True)]
    return md_table(rows, (str(df.index.name or ""), *map(str, df.columns)))


def png_markdown(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


class StageRun:
    """State of one asset materialization: its new version's dir, MLflow run, metrics collected so far."""

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
        self.store = VersionStore(self.asset, self.partition)
        self.version = self.store.begin(context.run_id)
        self.out_dir = self.store.path(
            self.version
        )  # written by the asset (atomic_dir), immutable afterwards
        self.dvc = dvc
        self.cfg = cfg
        self.input_md5 = {a.asset: a.md5 for a in inputs}
        self.input_versions = {a.asset: {"version": a.version or "current", "md5": a.md5} for a in inputs}
        self.mlflow_uri = mlflow.resolved_uri()
        self.log: AssetRunLog = mlflow.start_asset_run(
            dagster_run_id=context.run_id,
            job_name=context.job_name,
            asset=self.asset,
            partition=self.partition,
            params={"config_class": type(cfg).__name__, **cfg.to_dict()},
            tags={"git_sha": git_sha(), "lifecycle.home": str(lifecycle_home()), "version": self.version},
        )
        for a in inputs:
            self.log.log_input(a.asset, a.path, a.md5)
        self.t0 = time.perf_counter()
        progress(
            f"> {self.asset}{f' [{self.partition}]' if self.partition else ''}: started (version {self.version})"
        )
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
    ) -> dg.MaterializeResult:
        """Gate the new version, promote it (or keep it as failed), log, and return the materialization."""
        if not self.out_dir.is_dir():
            raise dg.Failure(description=f"{self.asset} wrote no artifact directory at {self.out_dir}")
        content_md5 = directory_md5(self.out_dir)
        checks = [
            run_gate(g, self.asset, self.partition, self.out_dir, content_md5) for g in gates_of(self.asset)
        ]
        blocked = [c.check_name for c in checks if not c.passed and c.severity == dg.AssetCheckSeverity.ERROR]
        previous = self.store.current_id()
        if blocked:
            reason = f"blocking check(s) failed: {', '.join(blocked)}"
            self.store.fail(
                self.version, reason, md5=content_md5, num_records=num_records, inputs=self.input_versions
            )
            md5, status = content_md5, "failed"
        else:
            try:
                record = self.store.promote(
                    self.version, self.dvc, num_records=num_records, inputs=self.input_versions
                )
            except VersionError as exc:
                raise dg.Failure(description=str(exc), metadata={"version": self.version}) from exc
            md5, status = record.get("md5") or content_md5, "current"
        registry = self._register(md5) if status == "current" else {}
        self.log.set_tags({"dvc_md5": md5, "num_records": num_records, "version_status": status})
        self.log.log_metrics({"num_records": num_records})
        self.log.log_text(summary, "summary.md")
        self.log.finish("FINISHED" if status == "current" else "FAILED")
        progress(
            f"{'+' if status == 'current' else 'x'} {self.asset}{f' [{self.partition}]' if self.partition else ''}: "
            f"{num_records:,} records, version {status}, {time.perf_counter() - self.t0:.1f}s"
            + (f" (blocked by {', '.join(blocked)})" if blocked else "")
        )
        meta = self._metadata(num_records, summary, md5, status, previous)
        meta.update(registry)
        meta.update(metadata or {})
        return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(md5), check_results=checks)

    def _register(self, md5: str) -> dict[str, Any]:
        """A model asset's new current version registered (``candidate``); the metadata saying where."""
        reg = _REGISTERED.get(self.asset)
        if reg is None:
            return {}
        tags = {
            "asset": self.asset,
            "partition": self.partition or "",
            "artifact_version": self.version,
            "dvc_md5": md5,
            "dagster.run_id": self.context.run_id,
        }
        version = log_and_register(self.mlflow_uri, self.log.run_id, reg, self.out_dir / reg.subdir, tags)
        return {
            "registered_model": reg.name,
            "registered_version": version,
            "model_uri": f"models:/{reg.name}/{version}",
        }

    def _metadata(self, num_records: int, summary: str, md5: str, status: str, previous: str | None) -> dict:
        current = status == "current"
        meta: dict[str, Any] = {
            "version": self.version,
            "version_status": status,
            "previous_version": previous or "(none)",
            "path": dg.MetadataValue.path(str(self.out_dir)),
            "current_path": dg.MetadataValue.path(str(self.store.current_dir)),
            "num_records": num_records,
            "dagster/row_count": num_records,
            "mlflow_run_id": self.log.run_id,
            "mlflow_run_url": dg.MetadataValue.url(self.log.url),
            "dvc_md5": md5 if current else f"(not recorded: version {status})",
            "git_sha": git_sha(),
            "preset_config": dg.MetadataValue.json(self.cfg.to_dict()),
            "inputs": dg.MetadataValue.json(self.input_versions),
            "summary": dg.MetadataValue.md("\n\n".join([summary, *self.extra_md])),
        }
        meta.update({name: dg.MetadataValue.md(md) for name, md in self.plots.items()})
        return meta


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
    except BaseException as exc:
        run.log.finish("FAILED")
        progress(
            f"x {run.asset}: failed after {time.perf_counter() - run.t0:.1f}s: {type(exc).__name__}: {exc}"[
                :500
            ]
        )
        if run.store.record(run.version).get("status") == "pending":  # kept for inspection, never current
            run.store.fail(run.version, f"materialization raised {type(exc).__name__}: {exc}"[:2000])
        raise
