"""A round's chat model: the average of its DPO runs, evaluated on held-out items against the round's
start and its SFT model."""

import json
import shutil

import dagster as dg
import torch

from assets.posttrain.rounds import (
    ROUND_AUTOMATION,
    SNAPSHOT_INPUT,
    one_torch_thread,
    round_of,
    starting_model,
)
from dagster_project.artifacts import ChatModel, DPORuns, HFCheckpoint, SyntheticData, hf_tokenizer_files
from dagster_project.configs import dagster_config_for, resolve_config
from dagster_project.partitions import ROUNDS
from dagster_project.registry import Registered
from dagster_project.resources import DvcResource, MlflowResource
from dagster_project.stage import md_table, stage_asset, stage_run
from ml.io import atomic_dir, atomic_write_text
from ml.posttrain.evaluate import GROUPS, evaluate_policy, group_of, win_rate
from ml.posttrain.hf_parity import greedy_parity
from ml.posttrain.sandbox import SandboxLimits
from ml.posttrain.stages import ChatEvalConfig
from ml.tokens.tokenizer import load_tokenizer
from ml.train.average import average_checkpoints
from ml.train.weights import frozen_model

ChatEvalRun = dagster_config_for(ChatEvalConfig)
PARITY_PROMPT = [{"role": "user", "content": "Solve for x: 3x + 4 = 10."}]


def chat_model_matches_transformers(chat_model: ChatModel) -> dg.AssetCheckResult:
    """``transformers`` loads the chat model with its chat template: the same prompt ids and the same
    greedy tokens as our generation on a fixed chat."""
    parity = chat_model.evals["transformers_parity"]
    return dg.AssetCheckResult(
        passed=bool(parity["equal"]),
        metadata={"prompt_equal": parity["prompt_equal"], "tokens": len(parity["ours"])},
    )


def heldout_items(synthetic_data: SyntheticData, max_items: int) -> list[dict]:
    """The first ``max_items`` held-out SFT records of each group (math, code, qa)."""
    held = synthetic_data.records("heldout")
    return [r for g in GROUPS for r in [x for x in held if group_of(x) == g][:max_items]]


def evaluate_models(models: dict, synthetic_data: SyntheticData, cfg: ChatEvalConfig) -> tuple[dict, dict]:
    """(metrics per model label, greedy replies per label) on the same held-out items and pairs."""
    tok = load_tokenizer(synthetic_data.path)
    items = heldout_items(synthetic_data, cfg.max_items)
    pairs = synthetic_data.records("heldout", prefs=True)
    limits = SandboxLimits(cpu_seconds=cfg.sandbox_cpu_seconds, wall_seconds=cfg.sandbox_wall_seconds)
    metrics, replies = {}, {}
    for label, hf in models.items():
        model = frozen_model(hf, torch.device("cpu"))
        metrics[label], replies[label] = evaluate_policy(model, tok, items, pairs, cfg.max_new_tokens, limits)
    return metrics, {"items": items, **replies}


@stage_asset(
    ChatModel,
    gates=[chat_model_matches_transformers],
    registered=Registered("llama-lifecycle-chat"),
    partitions_def=ROUNDS,
    automation_condition=ROUND_AUTOMATION,
    ins={"base_model": SNAPSHOT_INPUT, "synthetic_data": SNAPSHOT_INPUT},
    kinds={"pytorch"},
)
def chat_model(
    context: dg.AssetExecutionContext,
    config: ChatEvalRun,
    dpo_model: DPORuns,
    sft_model: HFCheckpoint,
    reward_model: HFCheckpoint,
    base_model: HFCheckpoint,
    synthetic_data: SyntheticData,
    mlflow: MlflowResource,
    dvc: DvcResource,
) -> dg.MaterializeResult:
    """The round's chat model (Llama 3 paper §4.1: models from runs with different data or hyperparameters
    are averaged): the tensor-wise mean of the round's DPO runs, with the tokenizer and its chat template.
    Evaluated on held-out items no stage trained on, beside the model the round started from and the
    SFT model: verifier pass rate per group (math, code, qa), log-likelihood per token of the verified
    answers, preference accuracy of the policy on held-out pairs, and the round's reward model's win rate
    of the chat model's greedy answers over the starting model's."""
    cfg = resolve_config(ChatEvalConfig, config)
    start = starting_model(context, base_model)
    with stage_run(
        context, mlflow, dvc, cfg, dpo_model, sft_model, reward_model, start, synthetic_data
    ) as run:
        with atomic_dir(run.out_dir) as tmp, one_torch_thread():
            average_checkpoints(dpo_model.run_dirs(), tmp / "hf")
            for f in hf_tokenizer_files(sft_model.hf_dir):
                shutil.copy2(f, tmp / "hf" / f.name)
            models = {"start": start.hf_dir, "sft": sft_model.hf_dir, "chat": tmp / "hf"}
            metrics, replies = evaluate_models(models, synthetic_data, cfg)
            tok = load_tokenizer(synthetic_data.path)
            prompts = [r["messages"][:-1] for r in replies["items"]]
            rm = frozen_model(reward_model.hf_dir, torch.device("cpu"))
            evals = {
                "round": round_of(context),
                "started_from": start.asset,
                "models": metrics,
                "win_rate_vs_start": win_rate(rm, tok, prompts, replies["chat"], replies["start"]),
                "averaged_runs": len(dpo_model.run_dirs()),
                "transformers_parity": greedy_parity(tmp / "hf", PARITY_PROMPT, 16),
            }
            atomic_write_text(tmp / "evals.json", json.dumps(evals, indent=2))
            atomic_write_text(tmp / "replies.json", json.dumps(replies, indent=2))
        flat = {f"{label}.{k}": v for label, m in metrics.items() for k, v in m.items()}
        flat["win_rate_vs_start"] = evals["win_rate_vs_start"]
        flat["transformers_parity"] = float(evals["transformers_parity"]["equal"])
        run.log_metrics(flat)
        table = [(k, *(metrics[m].get(k, "") for m in models)) for k in sorted(metrics["chat"])]
        summary = (
            f"**Chat model, round {evals['round']}** (mean of {evals['averaged_runs']} DPO runs; started from "
            f"`{start.asset}`)\n\n" + md_table(table, ("metric", *models)) + "\n\n"
            f"Reward-model win rate of chat over start: {evals['win_rate_vs_start']:.3f}"
        )
        return run.result(num_records=len(replies["items"]), summary=summary, metadata=flat)
