"""The safety classifier and the refusal detector (Llama 3 paper §5.4), trained on the shipped safety data."""

import dagster as dg

from dagster_project.artifacts import SafetyModels
from dagster_project.configs import dagster_config_for, resolve_config
from dagster_project.partitions import SNAPSHOTS
from dagster_project.resources import DvcResource, MlflowResource
from dagster_project.stage import frame_md, md_table, stage_asset, stage_run
from ml.curate.classify import flat_metrics
from ml.io import atomic_dir, atomic_write_bytes
from ml.safety.classifier import (
    SafetyClassifierConfig,
    save_safety_models,
    train_refusal_detector,
    train_safety_classifier,
)
from ml.safety.data import data_version
from ml.safety.plots import grouped_bars_png

SafetyClassifierRun = dagster_config_for(SafetyClassifierConfig)


def safety_classifier_heldout_quality(safety_classifier: SafetyModels) -> dg.AssetCheckResult:
    """Held-out macro recall and precision over S1..S14 + safe, and the refusal detector's held-out accuracy,
    at least the configured bars (``SafetyClassifierConfig.min_*``; the config says how they were set)."""
    report = safety_classifier.report
    cfg, held = report["config"], report["heldout"]
    measured = {
        "heldout_macro_recall": (held["macro_recall"], cfg["min_heldout_macro_recall"]),
        "heldout_macro_precision": (held["macro_precision"], cfg["min_heldout_macro_precision"]),
        "refusal_heldout_accuracy": (
            report["refusal_detector"]["heldout"]["accuracy"],
            cfg["min_refusal_heldout_accuracy"],
        ),
    }
    short = [f"{k} {v:.3f} < {bar}" for k, (v, bar) in measured.items() if v < bar]
    return dg.AssetCheckResult(
        passed=not short,
        description="; ".join(short) or "every held-out bar met",
        metadata={k: float(v) for k, (v, _) in measured.items()}
        | {f"min_{k}": float(b) for k, (_, b) in measured.items()},
    )


@stage_asset(
    SafetyModels,
    gates=[safety_classifier_heldout_quality],
    partitions_def=SNAPSHOTS,
    kinds={"python", "sklearn"},
)
def safety_classifier(
    context: dg.AssetExecutionContext, config: SafetyClassifierRun, mlflow: MlflowResource, dvc: DvcResource
) -> dg.MaterializeResult:
    """Train the input/output safety classifier (S1..S14 + safe) and the refusal detector on the train split
    of ``ml/resources/safety``; precision and recall per category on the held-out split, written apart from
    the same numbers on training items. Both are hashed n-gram linear classifiers (``ml.safety.classifier``)."""
    cfg = resolve_config(SafetyClassifierConfig, config)
    with stage_run(context, mlflow, dvc, cfg) as run:
        classifier, tables, report = train_safety_classifier(cfg)
        refusal, refusal_report = train_refusal_detector(cfg)
        report |= {"refusal_detector": refusal_report, "data_version": data_version(cfg.data)}
        with atomic_dir(run.out_dir) as tmp:
            save_safety_models(tmp, cfg, classifier, refusal, tables, report)
            png = grouped_bars_png(
                tables["heldout"], ["precision", "recall"], "held-out precision / recall per class"
            )
            atomic_write_bytes(tmp / "per_class_heldout.png", png)
        run.log_metrics(flat_metrics({k: report[k] for k in ("heldout", "train", "refusal_detector")}))
        run.log_png(run.out_dir / "per_class_heldout.png", "held-out per class")
        held, rd = report["heldout"], refusal_report["heldout"]
        headline = {
            "heldout_macro_precision": held["macro_precision"],
            "heldout_macro_recall": held["macro_recall"],
            "heldout_accuracy": held["accuracy"],
            "train_macro_recall": report["train"]["macro_recall"],
            "refusal_heldout_accuracy": rd["accuracy"],
            "refusal_heldout_precision": rd["precision"],
            "refusal_heldout_recall": rd["recall"],
        }
        summary = (
            f"**Safety classifier** trained on {report['train']['items']} items, held-out {held['items']} "
            f"(data {report['data_version'][:8]}):\n\n"
            + md_table(headline, ("metric", "value"))
            + "\n\n### Held-out per class\n"
            + frame_md(tables["heldout"])
            + "\n\n### Training items per class (not a held-out measure)\n"
            + frame_md(tables["train"])
        )
        return run.result(
            num_records=int(report["train"]["items"] + report["heldout"]["items"]),
            summary=summary,
            metadata={k: float(v) for k, v in headline.items()}
            | {
                "per_class_heldout": dg.MetadataValue.md(frame_md(tables["heldout"])),
                "per_class_train": dg.MetadataValue.md(frame_md(tables["train"])),
            },
        )
