"""Domain classification (Llama 3 paper §3.1.2): general, code, math & reasoning, multilingual."""

import json

import dagster as dg

from assets.data.steps import finish_step, write_step
from dagster_project.artifacts import DocShards
from dagster_project.configs import dagster_config_for, resolve_config
from dagster_project.partitions import SNAPSHOTS
from dagster_project.resources import DvcResource, MlflowResource
from dagster_project.stage import md_table, stage_asset, stage_run
from ml.curate.classify import flat_metrics
from ml.curate.domain import DomainConfig, classify_domain, train_domain_classifier
from ml.io import atomic_dir, atomic_write_text

DomainRun = dagster_config_for(DomainConfig)


@stage_asset(DocShards, partitions_def=SNAPSHOTS, kinds={"python", "sklearn"})
def domain_classified(
    context: dg.AssetExecutionContext,
    config: DomainRun,
    quality_scored: DocShards,
    mlflow: MlflowResource,
    dvc: DvcResource,
) -> dg.MaterializeResult:
    """Domain classes general / code / math_reasoning / multilingual by a trained classifier (teacher rules
    in ``ml.curate.domain``), with held-out accuracy, per-class precision/recall and the confusion matrix."""
    cfg = resolve_config(DomainConfig, config)
    df = quality_scored.read()
    with stage_run(context, mlflow, dvc, cfg, quality_scored) as run:
        model, report = train_domain_classifier(df, cfg)
        result = classify_domain(df, model, cfg)
        with atomic_dir(run.out_dir) as tmp:
            write_step(tmp, result)
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
        return finish_step(
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
