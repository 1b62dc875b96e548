"""The data mix (Llama 3 paper §3.1.2): up/down-sample each domain class to its target share."""

import json

import dagster as dg

from dagster_project.artifacts import CuratedCorpus, DocShards
from dagster_project.configs import dagster_config_for, resolve_config
from dagster_project.partitions import SNAPSHOTS
from dagster_project.resources import DvcResource, MlflowResource
from dagster_project.stage import md_table, stage_run
from ml.curate.mix import MixConfig, plot_mix, realize_mix
from ml.io import atomic_dir, atomic_write_bytes, atomic_write_text, write_shards

MixRun = dagster_config_for(MixConfig)


@dg.asset(partitions_def=SNAPSHOTS, kinds={"python", "parquet"})
def curated_corpus(
    context: dg.AssetExecutionContext,
    config: MixRun,
    domain_classified: DocShards,
    mlflow: MlflowResource,
    dvc: DvcResource,
) -> dg.Output[CuratedCorpus]:
    """The data mix: per-class up/down-sampling to the target proportions (Llama 3 paper §3.1.2: 50%
    general, 25% math & reasoning, 17% code, 8% multilingual); the realized mix is measured and plotted."""
    cfg = resolve_config(MixConfig, config)
    df = domain_classified.read()
    with stage_run(context, mlflow, dvc, cfg, domain_classified) as run:
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


@dg.asset_check(asset=curated_corpus, blocking=True, partitions_def=SNAPSHOTS)
def mix_hits_target(curated_corpus: CuratedCorpus) -> dg.AssetCheckResult:
    """The realized mix is within 0.05 of the (re-normalized) target for every class in the mix."""
    report = curated_corpus.mix_report
    left_out = set(report.get("insufficient_classes", [])) | set(report.get("empty_classes", []))
    gaps = {c: abs(v["realized"] - v["target"]) for c, v in report["classes"].items() if c not in left_out}
    worst = max(gaps.values()) if gaps else 0.0
    return dg.AssetCheckResult(
        passed=bool(gaps) and worst <= 0.05,
        metadata={
            "max_abs_gap": float(worst),
            "gaps": dg.MetadataValue.json(gaps),
            "classes_left_out": dg.MetadataValue.json(sorted(left_out)),
        },
    )
