"""A round's rejection samples: K samples per prompt from the model the round starts from, the best kept."""

import json
import random

import dagster as dg
import torch

from assets.posttrain.rounds import (
    ROUND_AUTOMATION,
    SNAPSHOT_INPUT,
    one_torch_thread,
    round_of,
    starting_model,
)
from dagster_project.artifacts import HFCheckpoint, RejectionSamples, SyntheticData
from dagster_project.configs import dagster_config_for, resolve_config
from dagster_project.partitions import ROUNDS
from dagster_project.resources import DvcResource, MlflowResource
from dagster_project.stage import md_table, stage_asset, stage_run
from ml.io import atomic_dir, atomic_write_text
from ml.posttrain.evaluate import GROUPS, group_of
from ml.posttrain.records import write_jsonl
from ml.posttrain.rejection import rejection_sample
from ml.posttrain.round_data import select_samples
from ml.posttrain.sandbox import SandboxLimits
from ml.posttrain.stages import RejectionConfig
from ml.tokens.tokenizer import load_tokenizer
from ml.train.weights import frozen_model

RejectionRun = dagster_config_for(RejectionConfig)


def sample_prompts(records: list[dict], cfg: RejectionConfig) -> list[dict]:
    """Up to ``n_prompts`` training records of each group (math, code, qa), a seeded choice."""
    rng = random.Random(cfg.seed)
    out = []
    for g in GROUPS:
        group = [r for r in records if group_of(r) == g]
        out += rng.sample(group, min(cfg.n_prompts, len(group)))
    return out


@stage_asset(
    RejectionSamples,
    partitions_def=ROUNDS,
    automation_condition=ROUND_AUTOMATION,
    ins={"base_model": SNAPSHOT_INPUT, "synthetic_data": SNAPSHOT_INPUT},
    kinds={"pytorch"},
)
def rejection_samples(
    context: dg.AssetExecutionContext,
    config: RejectionRun,
    base_model: HFCheckpoint,
    synthetic_data: SyntheticData,
    reward_model: HFCheckpoint,
    mlflow: MlflowResource,
    dvc: DvcResource,
) -> dg.MaterializeResult:
    """Rejection sampling (Llama 3 paper §4.2.2): ``k`` samples (temperature, top-p, KV cache) per training
    prompt from the model this round starts from (round 1: the base model; round k: round k-1's chat
    model). The best sample is the passing one (verifier: math steps and answer, code unit tests in the
    sandbox, QA span) the round's reward model scores highest; a prompt with a passing and a failing
    sample also gives a preference pair. Counts of samples, passing samples and kept records in metadata."""
    cfg = resolve_config(RejectionConfig, config)
    policy_handle = starting_model(context, base_model)
    with stage_run(context, mlflow, dvc, cfg, policy_handle, synthetic_data, reward_model) as run:
        tok = load_tokenizer(synthetic_data.path)
        prompts = sample_prompts(synthetic_data.records("train"), cfg)
        cpu = torch.device("cpu")
        policy, rm = frozen_model(policy_handle.hf_dir, cpu), frozen_model(reward_model.hf_dir, cpu)
        with one_torch_thread():
            results = rejection_sample(
                policy, rm, tok, [(r["id"], r["messages"][:-1]) for r in prompts], cfg.k, cfg.sampling
            )
        limits = SandboxLimits(cpu_seconds=cfg.sandbox_cpu_seconds, wall_seconds=cfg.sandbox_wall_seconds)
        sft, pairs, counts = select_samples(prompts, results, limits)
        with atomic_dir(run.out_dir) as tmp:
            write_jsonl(
                [
                    {
                        "id": r.prompt_id,
                        "samples": r.samples,
                        "rewards": r.rewards,
                        "best_reward": r.best_reward,
                    }
                    for r in results
                ],
                tmp / "samples.jsonl",
            )
            write_jsonl(sft, tmp / "sft.jsonl")
            write_jsonl(pairs, tmp / "pairs.jsonl")
            report = {"prompts": len(prompts), "k": cfg.k, "round": round_of(context), **counts}
            atomic_write_text(tmp / "report.json", json.dumps(report, indent=2))
        report["pass_rate"] = counts["samples_passing"] / max(1, counts["samples"])
        run.log_metrics(report)
        summary = f"**Rejection sampling** from `{policy_handle.asset}`\n\n" + md_table(
            report, ("count", "value")
        )
        return run.result(
            num_records=len(sft), summary=summary, metadata={**report, "sampled_from": policy_handle.asset}
        )
