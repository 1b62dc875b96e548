"""Safety evaluation of each post-training round's chat model (Llama 3 paper §5.4), compared with the model
the round started from: round 1 with the base model's evaluation (``safety_evals``, before any safety
tuning), round k with round k-1's. The same gates as the base model's: rates within bounds, VR/FRR no worse
than the round's start by more than the margins, the analysers right."""

import dagster as dg

from assets.posttrain.rounds import ROUND_AUTOMATION, SNAPSHOT_INPUT, one_torch_thread
from assets.safety.evals import SAFETY_GATES, SafetyEvalRun, evaluate_safety
from dagster_project.artifacts import ChatModel, SafetyEvals, SafetyModels, load_handle
from dagster_project.configs import resolve_config
from dagster_project.partitions import ROUNDS, previous_round_partition
from dagster_project.resources import DvcResource, MlflowResource
from dagster_project.stage import stage_asset, stage_run
from ml.safety import evaluate


def start_evaluation(context: dg.AssetExecutionContext, safety_evals: SafetyEvals) -> SafetyEvals:
    """The evaluation of the model this round started from: the base model's in round 1, else round
    k-1's chat evaluation (read by partition key, like the round's starting model)."""
    prev = previous_round_partition(context.partition_key)
    if prev is None:
        return safety_evals
    return load_handle(SafetyEvals, context.instance, "chat_safety_evals", str(prev))


@stage_asset(
    SafetyEvals,
    gates=SAFETY_GATES,
    partitions_def=ROUNDS,
    automation_condition=ROUND_AUTOMATION,
    ins={"safety_classifier": SNAPSHOT_INPUT, "safety_evals": SNAPSHOT_INPUT},
    kinds={"pytorch", "python"},
)
def chat_safety_evals(
    context: dg.AssetExecutionContext,
    config: SafetyEvalRun,
    chat_model: ChatModel,
    safety_classifier: SafetyModels,
    safety_evals: SafetyEvals,
    mlflow: MlflowResource,
    dvc: DvcResource,
) -> dg.MaterializeResult:
    """The round's chat model answers the held-out safety prompts, injection cases and coding tasks (the
    same evaluation as ``safety_evals``): VR/FRR per category, language and variant, injection success,
    insecure-code rate; each compared with the evaluation of the model the round started from, so the
    table shows what the round (its SFT/DPO with ``safety.share`` of safety data) changed."""
    cfg = resolve_config(evaluate.SafetyEvalConfig, config)
    start = start_evaluation(context, safety_evals)
    with stage_run(context, mlflow, dvc, cfg, chat_model, safety_classifier, start) as run:
        with one_torch_thread():
            return evaluate_safety(run, cfg, chat_model, safety_classifier, start.path)
