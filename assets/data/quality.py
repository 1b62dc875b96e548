"""Model-based quality filtering (Llama 3 paper §3.1.1): train the classifier, then score every document."""

import json

import dagster as dg

from assets.data.steps import sharded_step
from dagster_project.artifacts import DocShards, QualityClassifier
from dagster_project.configs import dagster_config_for, resolve_config
from dagster_project.partitions import SNAPSHOTS
from dagster_project.resources import DaskResource, DvcResource, MlflowResource
from dagster_project.stage import md_table, stage_asset, stage_run
from ml.curate.classify import flat_metrics
from ml.curate.quality import (
    QualityConfig,
    QualityModel,
    score_quality,
    train_quality_classifier,
)
from ml.io import atomic_dir, atomic_write_text

QualityRun = dagster_config_for(QualityConfig)


@stage_asset(QualityClassifier, partitions_def=SNAPSHOTS, kinds={"python", "sklearn"})
def quality_classifier(
    context: dg.AssetExecutionContext,
    config: QualityRun,
    filtered_docs: DocShards,
    mlflow: MlflowResource,
    dvc: DvcResource,
) -> dg.MaterializeResult:
    """Train the model-based quality classifier (a fastText-style hashed n-gram linear model).

    Teacher (honest and offline): see ``ml.curate.quality`` — by default a logistic regression over
    reference-LM fluency, legal-vocabulary density, length and prose-line fraction, fitted to people's
    good/bad labels (dev split of ``ml/resources/quality_annotations``); the best-scoring documents are
    labelled positive, the worst negative. Reports held-out precision / recall / AUC against the teacher,
    and teacher and student agreement with people on the annotated test split (MLflow ``annotated/...``)."""
    cfg = resolve_config(QualityConfig, config)
    df = filtered_docs.read()
    with stage_run(context, mlflow, dvc, cfg, filtered_docs) as run:
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
        people = annotated_headline(report.get("annotated"))
        summary = (
            f"**Quality classifier** trained on {student['train_docs']} teacher-labelled docs; held-out "
            f"{student['held_out_docs']} docs vs the teacher:\n\n"
            + md_table(headline, ("metric", "value"))
            + "\n\nTeacher: "
            + report["teacher"]["description"]
        )
        if people:
            summary += "\n\nAgreement with people (annotated test split):\n\n" + md_table(
                people, ("metric", "value")
            )
        return run.result(
            num_records=int(student["train_docs"] + student["held_out_docs"]),
            summary=summary,
            metadata={f"heldout_{k}": float(v) for k, v in headline.items()} | people,
        )


def annotated_headline(annotated: dict | None) -> dict[str, float | int]:
    """Student AUC/precision/recall and teacher AUC on the annotated test split, and its size."""
    if not annotated:
        return {}
    student = annotated["student"]
    return {f"annotated_student_{k}": float(student[k]) for k in ("roc_auc", "precision", "recall")} | {
        "annotated_teacher_roc_auc": float(annotated["teacher"]["roc_auc"]),
        "annotated_n": int(student["n"]),
    }


@stage_asset(DocShards, partitions_def=SNAPSHOTS, kinds={"python", "dask"})
def quality_scored(
    context: dg.AssetExecutionContext,
    config: QualityRun,
    filtered_docs: DocShards,
    quality_classifier: QualityClassifier,
    mlflow: MlflowResource,
    dvc: DvcResource,
    dask: DaskResource,
) -> dg.MaterializeResult:
    """Score every document with the quality classifier; keep or down-weight by score (``mode``)."""
    cfg = resolve_config(QualityConfig, config)
    return sharded_step(
        context,
        cfg,
        filtered_docs,
        score_quality,
        mlflow,
        dvc,
        dask,
        "Quality scoring",
        also_read=(quality_classifier,),
        model=QualityModel.load(quality_classifier.model_dir),
        cfg=cfg,
    )
