"""Run a per-shard curation step on Dask (one task per shard) or in process, with the same output.

``map_shards(fn, in_paths, out_dir, client=...)``: each task reads one Parquet shard (``ml.io.read_shard``),
calls ``fn(df, **kwargs) -> StepResult`` and writes ``kept/part-<i>.parquet`` and ``dropped/part-<i>.parquet``
where ``i`` is the shard's position in ``in_paths``; output bytes do not depend on where a task ran.
Tasks write into a staging folder inside ``out_dir``; only when every shard succeeded are the files moved
into place, so a corrupt shard raises :class:`ml.io.ShardError` naming it and leaves ``out_dir`` as it was.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml.curate.steps import StepResult
from ml.io import DOC_COLUMNS, ShardError, read_shard, write_parquet

StepFn = Callable[..., StepResult]
# stats whose sum over shards means nothing; merged as a docs_in-weighted mean instead
_MEAN_MARKERS = ("fraction", "frac", "ratio", "mean", "rate")


@dataclass
class ShardRunResult:
    """Merged summary (counts summed over shards) and the written shard paths, in input order."""

    summary: dict[str, float | int]
    kept_paths: list[Path]
    dropped_paths: list[Path]
    shard_summaries: list[dict[str, float | int]] = field(default_factory=list)


def _part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def run_shard(fn: StepFn, in_path: str, stage_dir: str, index: int, required: tuple[str, ...],
              kwargs: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """One task: read, step, write kept/dropped into ``stage_dir``. A bad shard is returned, not raised.

    ``ShardError`` is returned as ``{"shard_error": (path, problem)}`` because its two-argument constructor
    does not survive pickling back from a Dask worker; other errors propagate with a note naming the shard.
    """
    try:
        df = read_shard(Path(in_path), required)
    except ShardError as exc:
        problem = str(exc).removeprefix(f"{exc.path}: ")
        return {"shard_error": (str(exc.path), problem)}
    try:
        result = fn(df, **kwargs)
    except Exception as exc:
        exc.add_note(f"while running {getattr(fn, '__name__', fn)} on shard {in_path}")
        raise
    if not isinstance(result, StepResult):
        raise TypeError(
            f"{getattr(fn, '__name__', fn)} returned {type(result).__name__}, not StepResult ({in_path})"
        )
    write_parquet(result.kept, Path(stage_dir) / "kept" / _part_name(index))
    write_parquet(result.dropped, Path(stage_dir) / "dropped" / _part_name(index))
    return {"summary": result.summary()}


def merge_summaries(summaries: Sequence[dict[str, float | int]]) -> dict[str, float | int]:
    """Sum counters over shards; keys naming a fraction/ratio/mean/rate become a docs_in-weighted mean."""
    keys: list[str] = []
    for s in summaries:
        keys.extend(k for k in s if k not in keys)
    weights = [float(s.get("docs_in", 0)) for s in summaries]
    total_w = sum(weights)
    out: dict[str, float | int] = {}
    for k in keys:
        values = [s.get(k, 0) for s in summaries]
        if any(m in k.lower() for m in _MEAN_MARKERS):
            out[k] = (sum(v * w for v, w in zip(values, weights, strict=True)) / total_w) if total_w else 0.0
        else:
            out[k] = sum(values)
    out["shards"] = len(summaries)
    return out


def map_shards(
    fn: StepFn,
    in_paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    client: Any | None = None,
    required: tuple[str, ...] = DOC_COLUMNS,
    **kwargs: Any,
) -> ShardRunResult:
    """Apply ``fn(df, **kwargs)`` to every shard; on Dask when ``client`` (a distributed.Client) is given.

    ``fn`` must be importable by name on the workers (a module-level function such as ``line_dedup``).
    Returns merged stats and ``out_dir/kept|dropped/part-<i>.parquet`` paths in input order.
    """
    in_paths = [str(p) for p in in_paths]
    if not in_paths:
        raise ValueError("map_shards: no input shards given")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = out_dir / f".staging-{uuid.uuid4().hex[:8]}"
    try:
        args = [(fn, p, str(stage), i, required, kwargs) for i, p in enumerate(in_paths)]
        if client is None:
            outcomes = [run_shard(*a) for a in args]
        else:
            futures = [client.submit(run_shard, *a, key=f"shard-{i:05d}-{stage.name}", pure=False)
                       for i, a in enumerate(args)]  # fmt: skip
            from distributed import wait

            wait(futures)  # every task finished (or failed) before the staging folder can be removed
            outcomes = client.gather(futures)
        for outcome in outcomes:  # first bad shard in input order → deterministic error
            if "shard_error" in outcome:
                path, problem = outcome["shard_error"]
                raise ShardError(path, problem)
        kept, dropped = [], []
        for sub, paths in (("kept", kept), ("dropped", dropped)):
            (out_dir / sub).mkdir(exist_ok=True)
            for i in range(len(in_paths)):
                final = out_dir / sub / _part_name(i)
                os.replace(stage / sub / _part_name(i), final)
                paths.append(final)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    summaries = [o["summary"] for o in outcomes]
    return ShardRunResult(merge_summaries(summaries), kept, dropped, summaries)
