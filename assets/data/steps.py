"""The shared shape of a curation step: read ``docs/`` shards, call one pure ``ml.curate`` function,
write ``docs/`` (kept) and ``dropped/`` (with a ``reason``) shards, report counts in/out and drops by
reason. Per-shard steps run on Dask (a LocalCluster by default; ``DASK_SCHEDULER_ADDRESS`` joins a
cluster)."""

from collections.abc import Callable
from pathlib import Path

import dagster as dg

from dagster_project.artifacts import Artifact, DocShards
from dagster_project.configs import resolve_config
from dagster_project.resources import DaskResource
from dagster_project.stage import StageRun, md_table, stage_run
from ml.curate.parallel import map_shards
from ml.curate.steps import StepResult
from ml.io import atomic_dir, write_shards


def write_step(tmp: Path, result: StepResult) -> None:
    write_shards(result.kept, tmp / "docs")
    write_shards(result.dropped, tmp / "dropped")


def finish_step(
    run: StageRun, summary_stats: dict, *, title: str, extra_md: str = "", metadata: dict | None = None
):
    """Log a step's counters and return metadata with counts in/out and drops by reason."""
    run.log_metrics(summary_stats)
    drops = {k.split("/", 1)[1]: int(v) for k, v in summary_stats.items() if k.startswith("dropped/")}
    summary = "\n\n".join(
        filter(
            None,
            [
                f"**{title}**: {summary_stats['docs_in']} docs in → **{summary_stats['docs_out']} out**, "
                f"{summary_stats['docs_dropped']} dropped.",
                "### Drops by reason\n" + md_table(drops or {"none": 0}, ("reason", "docs")),
                extra_md,
            ],
        )
    )
    return run.result(
        num_records=int(summary_stats["docs_out"]),
        summary=summary,
        metadata={
            "docs_in": int(summary_stats["docs_in"]),
            "docs_out": int(summary_stats["docs_out"]),
            "docs_dropped": int(summary_stats["docs_dropped"]),
            "drops_by_reason": dg.MetadataValue.json(drops),
            **_counter_groups(summary_stats),
            **(metadata or {}),
        },
    )


def _counter_groups(stats: dict) -> dict:
    """Grouped counters other than drops (``skipped/stop_words/ja``, ``lines_removed/navigation`` ...) as one
    JSON entry per group, so a rule that was skipped for a language is visible next to the drops."""
    groups: dict[str, dict] = {}
    for key, value in stats.items():
        group, _, rest = key.partition("/")
        if rest and group != "dropped":
            groups.setdefault(group, {})[rest] = value
    return {group: dg.MetadataValue.json(values) for group, values in sorted(groups.items())}


def global_step(
    context, run_cfg, cfg_cls, upstream: DocShards, fn: Callable[..., StepResult], mlflow, dvc, title: str
):
    """A step that needs the whole corpus at once (URL dedup; filters, whose KL reference is the whole corpus)."""
    cfg = resolve_config(cfg_cls, run_cfg)
    df = upstream.read()
    with stage_run(context, mlflow, dvc, cfg, upstream) as run:
        result = fn(df, cfg)
        with atomic_dir(run.out_dir) as tmp:
            write_step(tmp, result)
        return finish_step(run, result.summary(), title=title)


def sharded_step(
    context,
    stage_cfg,
    upstream: DocShards,
    fn: Callable[..., StepResult],
    mlflow,
    dvc,
    dask: DaskResource,
    title: str,
    also_read: tuple[Artifact, ...] = (),
    **fn_kwargs,
):
    """A step that runs shard by shard on Dask (line dedup buckets, classifier scoring); ``fn_kwargs`` go to ``fn``."""
    with stage_run(context, mlflow, dvc, stage_cfg, upstream, *also_read) as run:
        with dask.client() as client, atomic_dir(run.out_dir) as tmp:
            scheduler = client.scheduler.address if client is not None else "in-process"
            res = map_shards(fn, upstream.shard_paths(), tmp, client=client, **fn_kwargs)
            (tmp / "kept").rename(tmp / "docs")
        run.log.set_tags({"dask.scheduler": scheduler})
        return finish_step(
            run,
            res.summary,
            title=title,
            metadata={"dask_scheduler": scheduler, "shards": len(res.kept_paths)},
        )
