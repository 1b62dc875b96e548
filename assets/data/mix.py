"""The data mix (Llama 3 paper §3.1.2): up/down-sample each domain class to its target share."""

import json

import dagster as dg

from dagster_project.artifacts import CuratedCorpus, DocShards, Tokenizer
from dagster_project.configs import dagster_config_for, resolve_config
from dagster_project.partitions import SNAPSHOTS
from dagster_project.resources import DvcResource, MlflowResource
from dagster_project.stage import md_table, stage_asset, stage_run
from ml.curate.mix import MixConfig, mix_gate, plot_mix, realize_mix
from ml.io import atomic_dir, atomic_write_bytes, atomic_write_text, write_shards
from ml.tokens.tokenizer import count_tokens, load_tokenizer

MixRun = dagster_config_for(MixConfig)


def mix_hits_target(curated_corpus: CuratedCorpus) -> dg.AssetCheckResult:
    """The realized mix against the *configured* targets (Llama 3 paper §3.1.2): a gap beyond the tolerance
    fails; a class the corpus cannot fill is a warning (``unfillable: warn``) or a failure (``fail``)."""
    gate = mix_gate(curated_corpus.mix_report)
    return dg.AssetCheckResult(
        passed=bool(gate["passed"]),
        severity=dg.AssetCheckSeverity.WARN if gate["severity"] == "warn" else dg.AssetCheckSeverity.ERROR,
        description=gate["summary"],
        metadata={
            "max_abs_gap": float(gate["max_abs_gap"]),
            "gaps": dg.MetadataValue.json({c: float(g) for c, g in gate["gaps"].items()}),
            "unfilled_classes": dg.MetadataValue.json(gate["unfilled_classes"]),
        },
    )


@stage_asset(CuratedCorpus, gates=[mix_hits_target], partitions_def=SNAPSHOTS, kinds={"python", "parquet"})
def curated_corpus(
    context: dg.AssetExecutionContext,
    config: MixRun,
    domain_classified: DocShards,
    tokenizer: Tokenizer,
    mlflow: MlflowResource,
    dvc: DvcResource,
) -> dg.MaterializeResult:
    """The data mix: per-class up/down-sampling to the target proportions (Llama 3 paper §3.1.2: 50%
    general, 25% math & reasoning, 17% code, 8% multilingual) in tokens of the trained tokenizer (column
    ``n_tokens``, which the curated documents keep); the realized mix is measured and plotted."""
    cfg = resolve_config(MixConfig, config)
    df = domain_classified.read()
    df["n_tokens"] = count_tokens(load_tokenizer(tokenizer.path), df["text"].tolist())
    with stage_run(context, mlflow, dvc, cfg, domain_classified, tokenizer) as run:
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
            {
                f"{c}.{k}": v
                for c, t, a, r, w in rows
                for k, v in (("target", t), ("applied_target", a), ("realized", r), ("weight", w))
            }
        )
        summary = (
            f"**Data mix** (unit: {report['unit']}, measured by {report['unit_source']}): {len(df)} classified "
            f"docs → {len(mixed)} rows in the curated corpus; "
            f"{mix_gate(report)['summary']}.\n\n"
            + md_table(
                [(c, f"{t:.3f}", f"{a:.3f}", f"{r:.3f}", f"{w:.2f}") for c, t, a, r, w in rows],
                ("class", "configured target", "applied target", "realized", "weight"),
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


def _mix_rows(report: dict) -> list[tuple[str, float, float, float, float]]:
    classes = report["classes"]
    return [
        (
            c,
            float(v["target"]),
            float(v.get("applied_target", v["target"])),
            float(v["realized"]),
            float(v["weight"]),
        )
        for c, v in classes.items()
    ]
