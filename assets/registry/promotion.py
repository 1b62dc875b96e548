"""Champion promotion (the model registry's ``champion`` alias, dagster_project/registry.py).

A model asset's new current version is registered and aliased ``candidate`` as it is made. ``champion``
moves here, and only when ``ml.eval.promotion.decide`` finds every required evaluation of exactly that
version passed: for the base model its evaluations, its safety evaluation and its FP8 conversion, and
the scaling forecast; for a round's chat model its safety evaluation. A promotion that finds a
requirement unmet fails its blocking check and moves nothing; the table says which requirement and why.
"""

import json

import dagster as dg

from assets.posttrain.rounds import ROUND_AUTOMATION
from assets.scaling.flagship import FlagshipRun
from dagster_project.artifacts import ChatModel, EvalTables, FP8Checkpoint, HFCheckpoint, SafetyEvals
from dagster_project.configs import dagster_config_for, resolve_config
from dagster_project.partitions import ROUNDS, SNAPSHOTS
from dagster_project.registry import CHAMPION, set_alias, version_for
from dagster_project.resources import DvcResource, MlflowResource
from dagster_project.stage import StageRun, frame_md, stage_asset, stage_run
from dagster_project.versions import VersionStore
from ml.eval.promotion import ChatPromotionConfig, PromotionConfig, decide
from ml.io import atomic_dir, atomic_write_text

PromotionRun = dagster_config_for(PromotionConfig)
ChatPromotionRun = dagster_config_for(ChatPromotionConfig)


def promotion_requirements_met(promotion: EvalTables) -> dg.AssetCheckResult:
    """Every requirement of the promotion holds (each evaluation of this model version passed its checks)."""
    rows = promotion.evals["requirements"]
    unmet = [f"{r['asset']}: {r['reason']}" for r in rows if not r["ok"]]
    return dg.AssetCheckResult(
        passed=not unmet, description="; ".join(unmet) or f"{len(rows)} requirement(s) met"
    )


def _promote(
    run: StageRun,
    cfg: PromotionConfig,
    models: dict[str, tuple[str, HFCheckpoint | FP8Checkpoint]],
    main: str,
) -> dg.MaterializeResult:
    """Decide on ``models[main]`` (asset -> (registered name, handle)), write the decision, and when it
    passes move ``champion`` of every model in ``models`` to its registered version."""
    name, model = models[main]
    assets = (*cfg.evaluations, *cfg.passing)
    records = {a: VersionStore(a, run.partition).records() for a in assets}
    table = decide(cfg, model.asset, model.md5, records)
    versions = {a: version_for(run.mlflow_uri, n, h.md5) for a, (n, h) in models.items()}
    for a, v in versions.items():
        if v is None:
            table.loc[len(table)] = ["registered", a, models[a][1].version or "", "", False, "not registered"]
    decision = {
        "model": {"asset": model.asset, "version": model.version, "md5": model.md5},
        "registered": {a: {"name": models[a][0], "version": v} for a, v in versions.items()},
        "requirements": table.to_dict("records"),
        "promote": bool(table["ok"].all()),
    }
    with atomic_dir(run.out_dir) as tmp:
        table.to_parquet(tmp / "requirements.parquet")
        atomic_write_text(tmp / "evals.json", json.dumps(decision, indent=2, default=str))
    run.log_metrics({"requirements_met": int(table["ok"].sum()), "requirements": len(table)})
    verdict = "promoted to **champion**" if decision["promote"] else "**not promoted**"
    summary = f"`{name}` version {versions[main]} ({model.asset} {model.version}): {verdict}\n\n" + frame_md(
        table.set_index("asset")
    )
    result = run.result(num_records=len(table), summary=summary, metadata={"promote": decision["promote"]})
    if decision["promote"] and result.metadata["version_status"] == "current":
        for a, (n, _) in models.items():
            set_alias(run.mlflow_uri, n, CHAMPION, versions[a])
    return result


def promotion_asset(**kwargs):
    """``stage_asset`` of a promotion: its decision as ``EvalTables``, its gate the requirements."""
    return stage_asset(EvalTables, gates=[promotion_requirements_met], kinds={"mlflow"}, **kwargs)


@promotion_asset(partitions_def=SNAPSHOTS)
def model_promotion(
    context: dg.AssetExecutionContext,
    config: PromotionRun,
    base_model: HFCheckpoint,
    fp8_model: FP8Checkpoint,
    base_model_evals: EvalTables,
    safety_evals: SafetyEvals,
    scaling_flagship: FlagshipRun,
    mlflow: MlflowResource,
    dvc: DvcResource,
) -> dg.MaterializeResult:
    """Moves ``champion`` of ``llama-lifecycle-base`` (and of its FP8 conversion, ``llama-lifecycle-fp8``)
    to the base model's current version when its evaluations, safety evaluation and FP8 quality check all
    evaluated this version and passed, and the scaling forecast's newest check passed."""
    cfg = resolve_config(PromotionConfig, config)
    inputs = (base_model, fp8_model, base_model_evals, safety_evals, scaling_flagship)
    with stage_run(context, mlflow, dvc, cfg, *inputs) as run:
        models = {
            "base_model": ("llama-lifecycle-base", base_model),
            "fp8_model": ("llama-lifecycle-fp8", fp8_model),
        }
        return _promote(run, cfg, models, "base_model")


@promotion_asset(partitions_def=ROUNDS, automation_condition=ROUND_AUTOMATION)
def chat_promotion(
    context: dg.AssetExecutionContext,
    config: ChatPromotionRun,
    chat_model: ChatModel,
    chat_safety_evals: SafetyEvals,
    mlflow: MlflowResource,
    dvc: DvcResource,
) -> dg.MaterializeResult:
    """Moves ``champion`` of ``llama-lifecycle-chat`` to this round's chat model when its safety evaluation
    evaluated exactly this version and passed (VR/FRR within bounds and no worse than the round's start)."""
    cfg = resolve_config(ChatPromotionConfig, config)
    with stage_run(context, mlflow, dvc, cfg, chat_model, chat_safety_evals) as run:
        return _promote(run, cfg, {"chat_model": ("llama-lifecycle-chat", chat_model)}, "chat_model")
