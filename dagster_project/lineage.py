"""Lineage of one artifact version: every upstream version it was built from, with the run, config, code
version, git SHA and DVC md5 of each, read from the Dagster materializations (each records the versions of
its inputs, ``StageRun`` metadata ``inputs``).

    lifecycle lineage base_model --partition local-web [--version v2026...]
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import dagster as dg


@dataclass
class Node:
    """One artifact version and where it came from."""

    asset: str
    partition: str | None
    version: str
    run_id: str
    code_version: str | None
    facts: dict[str, Any]
    inputs: list[Node] = field(default_factory=list)

    def lines(self, depth: int = 0) -> list[str]:
        f = self.facts
        head = (
            f"{'  ' * depth}{self.asset}[{self.partition or 'all'}] {self.version} run {self.run_id[:8]} "
            f"code {self.code_version or '?'} git {str(f.get('git_sha', '?'))[:12]} md5 {f.get('dvc_md5', '?')}"
        )
        extra = (
            f"{'  ' * depth}  config {f.get('config_sha', '?')}, {f.get('num_records', '?')} records, "
            f"mlflow {f.get('mlflow_run_url', '?')}"
        )
        return [head, extra, *(line for node in self.inputs for line in node.lines(depth + 1))]


def _value(v: Any) -> Any:
    return getattr(v, "value", v)


def _materialization(instance: dg.DagsterInstance, asset: str, partition: str | None, version: str | None):
    """The newest materialization of ``asset``/``partition`` (with metadata ``version`` == ``version`` if given)."""
    filt = dg.AssetRecordsFilter(
        asset_key=dg.AssetKey.from_user_string(asset), asset_partitions=[partition] if partition else None
    )
    cursor = None
    while True:
        page = instance.fetch_materializations(filt, limit=100, cursor=cursor)
        for rec in page.records:
            meta = rec.asset_materialization.metadata
            if version is None or _value(meta.get("version")) == version:
                return rec
        if not page.has_more:
            return None
        cursor = page.cursor


def lineage(
    instance: dg.DagsterInstance, asset: str, partition: str | None, version: str | None = None
) -> Node:
    """The lineage tree of ``asset``'s version (its newest materialization when ``version`` is None)."""
    rec = _materialization(instance, asset, partition, version)
    if rec is None:
        what = f"version {version}" if version else "any materialization"
        raise LookupError(f"{asset} (partition {partition or 'none'}) has no {what} in this Dagster instance")
    mat = rec.asset_materialization
    meta = {k: _value(v) for k, v in mat.metadata.items()}
    config = json.dumps(meta.get("preset_config"), sort_keys=True, default=str).encode()
    node = Node(
        asset=asset,
        partition=partition,
        version=str(meta.get("version", "(unversioned)")),
        run_id=rec.run_id,
        code_version=(mat.tags or {}).get("dagster/code_version"),
        facts={
            **{k: meta.get(k) for k in ("git_sha", "dvc_md5", "num_records", "mlflow_run_url")},
            "config_sha": hashlib.sha256(config).hexdigest()[:12],
        },
    )
    for up, info in (meta.get("inputs") or {}).items():
        up_version = info.get("version") if isinstance(info, dict) else None
        wanted = None if up_version in (None, "current") else up_version
        for part in dict.fromkeys((partition, None)):  # the same partition, else an unpartitioned upstream
            with contextlib.suppress(LookupError):
                node.inputs.append(lineage(instance, up, part, wanted))
                break
    return node
