"""Curated corpus: URL, MinHash and line dedup, heuristic filters, quality and domain classifiers, data mix.

Every asset reads the upstream ``docs/`` Parquet shards, calls one pure function from ``ml/data``, and
writes ``docs/`` (kept) and ``dropped/`` (with a ``reason``) shards. Per-shard steps run on Dask (a
LocalCluster by default; ``DASK_SCHEDULER_ADDRESS`` joins a cluster).
"""

import json
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pandas as pd

from assets.data.crawl import extracted_docs
from dagster_project.configs import dagster_config_for, resolve_config
from dagster_project.partitions import SNAPSHOTS
from dagster_project.resources import DaskResource, DvcResource, MlflowResource, RedisResource
from dagster_project.stage import StageRun, md_table, stage_run, upstream_dir
from ml.curate.classify import flat_metrics
from ml.curate.domain import DomainConfig, classify_domain, train_domain_classifier
from ml.curate.filters import FilterConfig, heuristic_filter
from ml.curate.line_dedup import LineDedupConfig, line_dedup
from ml.curate.minhash import MinHashConfig, example_pairs, minhash_dedup
from ml.curate.mix import MixConfig, plot_mix, realize_mix
from ml.curate.parallel import map_shards
from ml.curate.quality import (
    TEACHER_DESCRIPTION,
    QualityConfig,
    QualityModel,
    score_quality,
    train_quality_classifier,
)
from ml.curate.steps import StepResult
from ml.curate.url_dedup import UrlDedupConfig, url_dedup
from ml.io import atomic_dir, atomic_write_bytes, atomic_write_text, read_shards, shard_paths, write_shards

GROUP = "data"


def _docs(asset: str, context) -> tuple[Path, pd.DataFrame]:
    src = upstream_dir(asset, context)
    return src, read_shards(src / "docs")


def _write_step(tmp: Path, result: StepResult) -> None:
    write_shards(result.kept, tmp / "docs")
    write_shards(result.dropped, tmp / "dropped")


def _finish(
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
            **(metadata or {}),
        },
    )


def _global_step(
    context, run_cfg, cfg_cls, upstream: str, fn: Callable[..., StepResult], mlflow, dvc, title: str
):
    """A step that needs the whole corpus at once (URL dedup; filters, whose KL reference is the whole corpus)."""
    cfg = resolve_config(cfg_cls, run_cfg)
    src, df = _docs(upstream, context)
    with stage_run(context, mlflow, dvc, cfg, inputs={upstream: src}) as run:
        result = fn(df, cfg)
        with atomic_dir(run.out_dir) as tmp:
            _write_step(tmp, result)
        return _finish(run, result.summary(), title=title)


def _sharded_step(
    context,
    stage_cfg,
    upstream: str,
    fn: Callable[..., StepResult],
    mlflow,
    dvc,
    dask: DaskResource,
    title: str,
    inputs: dict[str, Path] | None = None,
    **fn_kwargs,
):
    """A step that runs shard by shard on Dask (line dedup buckets, classifier scoring); ``fn_kwargs`` go to ``fn``."""
    src = upstream_dir(upstream, context)
    with stage_run(context, mlflow, dvc, stage_cfg, inputs={upstream: src, **(inputs or {})}) as run:
        with dask.client() as client, atomic_dir(run.out_dir) as tmp:
            scheduler = client.scheduler.address if client is not None else "in-process"
            res = map_shards(fn, shard_paths(src / "docs"), tmp, client=client, **fn_kwargs)
            (tmp / "kept").rename(tmp / "docs")
        run.log.set_tags({"dask.scheduler": scheduler})
        return _finish(
            run,
            res.summary,
            title=title,
            metadata={"dask_scheduler": scheduler, "shards": len(res.kept_paths)},
        )


UrlRun = dagster_config_for(UrlDedupConfig)


@dg.asset(partitions_def=SNAPSHOTS, group_name=GROUP, deps=[extracted_docs], kinds={"python", "parquet"})
def url_deduped(context: dg.AssetExecutionContext, config: UrlRun, mlflow: MlflowResource, dvc: DvcResource):
    """URL-level dedup (paper: keep the most recent crawl of each URL). URLs are normalized first
    (case, default ports, fragments, tracking parameters, query order)."""
    return _global_step(
        context, config, UrlDedupConfig, "extracted_docs", url_dedup, mlflow, dvc, "URL dedup"
    )


MinHashRun = dagster_config_for(MinHashConfig)


def _minhash_extra(result: StepResult, df: pd.DataFrame) -> tuple[str, dict]:
    pairs = example_pairs(result, df, k=8)
    hist = {k.split("/", 1)[1]: int(v) for k, v in result.stats.items() if k.startswith("cluster_size/")}
    md = "### Cluster sizes\n" + md_table(hist or {"none": 0}, ("size", "clusters"))
    md += "\n\n### Example duplicate pairs\n" + md_table(
        [(a, b, f"{j:.3f}") for a, b, j in pairs], ("kept", "dropped", "Jaccard")
    )
    return md, {
        "clusters": int(result.stats.get("clusters", 0)),
        "cluster_size_histogram": dg.MetadataValue.json(hist),
        "example_pairs": dg.MetadataValue.json(
            [{"a": a, "b": b, "jaccard": round(j, 4)} for a, b, j in pairs]
        ),
    }


@dg.asset(partitions_def=SNAPSHOTS, group_name=GROUP, deps=[url_deduped], kinds={"python", "parquet"})
def minhash_deduped(
    context: dg.AssetExecutionContext,
    config: MinHashRun,
    mlflow: MlflowResource,
    dvc: DvcResource,
    redis: RedisResource,
):
    """Document-level near-duplicate removal: MinHash signatures over word n-gram shingles, LSH candidate
    pairs (datasketch ``MinHashLSH``; Redis storage when ``redis.mode`` is local/external so several workers
    share the index), connected components, one kept document per cluster."""
    with redis.connection() as hostport:
        overrides = {}
        if hostport is not None:
            overrides = {"lsh_storage": "redis", "redis_host": hostport[0], "redis_port": hostport[1]}
        cfg = resolve_config(MinHashConfig, config)
        if overrides:
            cfg = cfg.replace(**overrides)
        src, df = _docs("url_deduped", context)
        with stage_run(context, mlflow, dvc, cfg, inputs={"url_deduped": src}) as run:
            result = minhash_dedup(df, cfg)
            with atomic_dir(run.out_dir) as tmp:
                _write_step(tmp, result)
            md, meta = _minhash_extra(result, df)
            return _finish(run, result.summary(), title="MinHash dedup", extra_md=md, metadata=meta)


LineRun = dagster_config_for(LineDedupConfig)


@dg.asset(partitions_def=SNAPSHOTS, group_name=GROUP, deps=[minhash_deduped], kinds={"python", "dask"})
def line_deduped(
    context: dg.AssetExecutionContext,
    config: LineRun,
    mlflow: MlflowResource,
    dvc: DvcResource,
    dask: DaskResource,
):
    """ccNet-style line dedup (paper: drop lines seen more than 6 times in each bucket of 30M documents);
    each shard is a bucket, counted through 8-byte line hashes so memory stays bounded."""
    cfg = resolve_config(LineDedupConfig, config)
    return _sharded_step(
        context, cfg, "minhash_deduped", line_dedup, mlflow, dvc, dask, "Line dedup", cfg=cfg
    )


FilterRun = dagster_config_for(FilterConfig)


@dg.asset(partitions_def=SNAPSHOTS, group_name=GROUP, deps=[line_deduped], kinds={"python", "parquet"})
def filtered_docs(
    context: dg.AssetExecutionContext, config: FilterRun, mlflow: MlflowResource, dvc: DvcResource
):
    """Heuristic filters: duplicated n-gram coverage, dirty-word ratio (per-language lists shipped with the
    project), token-distribution KL outliers against the corpus, length, symbol and alpha ratios."""
    return _global_step(
        context, config, FilterConfig, "line_deduped", heuristic_filter, mlflow, dvc, "Heuristic filters"
    )


QualityRun = dagster_config_for(QualityConfig)


@dg.asset(partitions_def=SNAPSHOTS, group_name=GROUP, deps=[filtered_docs], kinds={"python", "sklearn"})
def quality_classifier(
    context: dg.AssetExecutionContext, config: QualityRun, mlflow: MlflowResource, dvc: DvcResource
):
    """Train the model-based quality classifier (a fastText-style hashed n-gram linear model).

    Teacher (honest and offline): see ``ml.curate.quality`` — the perplexity of each document under a
    reference n-gram language model trained on curated reference text that ships with Python; the
    lowest-perplexity documents are labelled positive, the highest negative. Reports held-out
    precision / recall / AUC against the teacher."""
    cfg = resolve_config(QualityConfig, config)
    src, df = _docs("filtered_docs", context)
    with stage_run(context, mlflow, dvc, cfg, inputs={"filtered_docs": src}) as run:
        model, report = train_quality_classifier(df, cfg)
        with atomic_dir(run.out_dir) as tmp:
            model.save(tmp / "model")
            atomic_write_text(tmp / "report.json", json.dumps(report, indent=2, default=float))
        metrics = flat_metrics(report)
        run.log_metrics(metrics)
        run.log.log_artifact(run.out_dir / "report.json")
        student, held = report["student"], report["student"]["held_out"]
        headline = {k: held[k] for k in ("precision", "recall", "f1", "roc_auc", "accuracy")}
        headline["teacher_student_spearman_unseen"] = report["agreement"]["spearman_unseen"]
        summary = (
            f"**Quality classifier** trained on {student['train_docs']} teacher-labelled docs; held-out "
            f"{student['held_out_docs']} docs vs the teacher:\n\n"
            + md_table(headline, ("metric", "value"))
            + "\n\nTeacher: "
            + TEACHER_DESCRIPTION.strip().splitlines()[0]
        )
        return run.result(
            num_records=int(student["train_docs"] + student["held_out_docs"]),
            summary=summary,
            metadata={f"heldout_{k}": float(v) for k, v in headline.items()},
        )


@dg.asset(
    partitions_def=SNAPSHOTS,
    group_name=GROUP,
    deps=[filtered_docs, quality_classifier],
    kinds={"python", "dask"},
)
def quality_scored(
    context: dg.AssetExecutionContext,
    config: QualityRun,
    mlflow: MlflowResource,
    dvc: DvcResource,
    dask: DaskResource,
):
    """Score every document with the quality classifier; keep or down-weight by score (``mode``)."""
    cfg = resolve_config(QualityConfig, config)
    model_dir = upstream_dir("quality_classifier", context)
    model = QualityModel.load(model_dir / "model")
    return _sharded_step(
        context,
        cfg,
        "filtered_docs",
        score_quality,
        mlflow,
        dvc,
        dask,
        "Quality scoring",
        inputs={"quality_classifier": model_dir},
        model=model,
        cfg=cfg,
    )


DomainRun = dagster_config_for(DomainConfig)


@dg.asset(partitions_def=SNAPSHOTS, group_name=GROUP, deps=[quality_scored], kinds={"python", "sklearn"})
def domain_classified(
    context: dg.AssetExecutionContext, config: DomainRun, mlflow: MlflowResource, dvc: DvcResource
):
    """Domain classes general / code / math_reasoning / multilingual by a trained classifier (teacher rules
    in ``ml.curate.domain``), with held-out accuracy, per-class precision/recall and the confusion matrix."""
    cfg = resolve_config(DomainConfig, config)
    src, df = _docs("quality_scored", context)
    with stage_run(context, mlflow, dvc, cfg, inputs={"quality_scored": src}) as run:
        model, report = train_domain_classifier(df, cfg)
        result = classify_domain(df, model, cfg)
        with atomic_dir(run.out_dir) as tmp:
            _write_step(tmp, result)
            model.save(tmp / "model")
            atomic_write_text(tmp / "report.json", json.dumps(report, indent=2, default=float))
        run.log_metrics(flat_metrics(report))
        run.log.log_artifact(run.out_dir / "report.json")
        held = report["student"]["held_out"]
        counts = result.kept["domain"].value_counts()
        per_class = [
            (c, f"{m['precision']:.3f}", f"{m['recall']:.3f}", m["support"])
            for c, m in held.get("per_class", {}).items()
        ]
        md = (
            f"Held-out accuracy **{held['accuracy']:.3f}** on {report['student']['held_out_docs']} docs "
            f"(teacher classes untrainable here: {report['teacher']['classes_untrainable'] or 'none'}).\n\n"
            + md_table(per_class, ("class", "precision", "recall", "support"))
            + "\n\n### Documents per class\n"
            + md_table(list(counts.items()), ("class", "docs"))
        )
        return _finish(
            run,
            result.summary(),
            title="Domain classification",
            extra_md=md,
            metadata={
                "heldout_accuracy": float(held["accuracy"]),
                "docs_per_class": dg.MetadataValue.json({k: int(v) for k, v in counts.items()}),
                "confusion_matrix": dg.MetadataValue.json(held.get("confusion", {})),
            },
        )


MixRun = dagster_config_for(MixConfig)


@dg.asset(partitions_def=SNAPSHOTS, group_name=GROUP, deps=[domain_classified], kinds={"python", "parquet"})
def curated_corpus(
    context: dg.AssetExecutionContext, config: MixRun, mlflow: MlflowResource, dvc: DvcResource
):
    """The data mix: per-class up/down-sampling to the target proportions (paper: 50% general, 25% math &
    reasoning, 17% code, 8% multilingual); the realized mix is measured and plotted."""
    cfg = resolve_config(MixConfig, config)
    src, df = _docs("domain_classified", context)
    with stage_run(context, mlflow, dvc, cfg, inputs={"domain_classified": src}) as run:
        mixed, report = realize_mix(df, "domain", cfg)
        png = plot_mix(report)
        with atomic_dir(run.out_dir) as tmp:
            write_shards(mixed, tmp / "docs")
            atomic_write_text(tmp / "mix_report.json", json.dumps(report, indent=2, default=float))
            atomic_write_bytes(tmp / "mix.png", png)
        run.log_png(run.out_dir / "mix.png", "realized mix")
        run.log.log_artifact(run.out_dir / "mix_report.json")
        rows = _mix_rows(report)
        run.log_metrics(
            {f"{c}.{k}": v for c, t, r, w in rows for k, v in (("target", t), ("realized", r), ("weight", w))}
        )
        summary = (
            f"**Data mix**: {len(df)} classified docs → {len(mixed)} rows in the curated corpus.\n\n"
            + md_table(
                [(c, f"{t:.3f}", f"{r:.3f}", f"{w:.2f}") for c, t, r, w in rows],
                ("class", "target", "realized", "weight"),
            )
        )
        return run.result(
            num_records=len(mixed),
            summary=summary,
            metadata={
                "docs_in": len(df),
                "rows_out": len(mixed),
                "mix": dg.MetadataValue.json(report),
            },
        )


def _mix_rows(report: dict) -> list[tuple[str, float, float, float]]:
    classes = report["classes"]
    return [(c, float(v["target"]), float(v["realized"]), float(v["weight"])) for c, v in classes.items()]
