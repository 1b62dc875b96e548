"""A round's reward model: the base model with a scalar head, trained on ranked preference pairs."""

import json

import dagster as dg
import torch

from assets.posttrain.rounds import (
    ROUND_AUTOMATION,
    SNAPSHOT_INPUT,
    one_torch_thread,
    round_of,
    round_train_config,
    write_hf,
)
from assets.pretrain.training import TRAIN_RETRY, prune_work, train_stage, work_dir
from dagster_project.artifacts import HFCheckpoint, RejectionSamples, SyntheticData, load_handle
from dagster_project.configs import dagster_config_for, resolve_config
from dagster_project.partitions import ROUNDS, previous_round_partition
from dagster_project.resources import DvcResource, MlflowResource, TorchrunResource
from dagster_project.stage import md_table, stage_asset, stage_run
from ml.io import atomic_dir, atomic_write_text
from ml.posttrain.evaluate import reward_accuracy
from ml.posttrain.round_data import write_round_set
from ml.posttrain.stages import RewardConfig
from ml.tokens.tokenizer import load_tokenizer
from ml.train.weights import frozen_model

RewardRun = dagster_config_for(RewardConfig)


def previous_pairs(context: dg.AssetExecutionContext) -> tuple[list[dict], list[RejectionSamples]]:
    """Round k-1's verified rejection pairs (none in round 1): each round's reward model sees the pairs
    the latest model produced (Llama 3 paper §4.2.1)."""
    prev = previous_round_partition(context.partition_key)
    if prev is None:
        return [], []
    handle = load_handle(RejectionSamples, context.instance, "rejection_samples", str(prev))
    return handle.records("pairs"), [handle]


@stage_asset(
    HFCheckpoint,
    partitions_def=ROUNDS,
    automation_condition=ROUND_AUTOMATION,
    ins={"base_model": SNAPSHOT_INPUT, "synthetic_data": SNAPSHOT_INPUT},
    kinds={"pytorch"},
    retry_policy=TRAIN_RETRY,
)
def reward_model(
    context: dg.AssetExecutionContext,
    config: RewardRun,
    base_model: HFCheckpoint,
    synthetic_data: SyntheticData,
    mlflow: MlflowResource,
    dvc: DvcResource,
    torchrun: TorchrunResource,
) -> dg.MaterializeResult:
    """The reward model (Llama 3 paper §4.1): the base model with a scalar head (the logit of a reserved
    token at the response's last token), trained with the pairwise loss without margin on the synthetic
    preference pairs and the previous round's verified rejection pairs. Metadata: held-out pair accuracy
    and reward gap, before (base model) and after training."""
    cfg = resolve_config(RewardConfig, config)
    extra, prev = previous_pairs(context)
    with stage_run(context, mlflow, dvc, cfg, base_model, synthetic_data, *prev) as run:
        train_cfg = round_train_config(cfg.train, base_model, config.train)
        data = work_dir(run, cfg, "data")
        sizes = write_round_set(
            synthetic_data.prefs_dir, extra, data, synthetic_data.path / "tokenizer.json", True
        )
        trained = train_stage(context, run, torchrun, train_cfg, data)
        tok = load_tokenizer(synthetic_data.path)
        heldout = synthetic_data.records("heldout", prefs=True)
        with torch.no_grad(), one_torch_thread():
            before = reward_accuracy(frozen_model(base_model.hf_dir, torch.device("cpu")), tok, heldout)
            after = reward_accuracy(frozen_model(trained.work / "hf", torch.device("cpu")), tok, heldout)
        evals = {
            "heldout_pair_accuracy": after[0],
            "heldout_reward_gap": after[1],
            "base_heldout_pair_accuracy": before[0],
            "heldout_pairs": len(heldout),
            "train_pairs": sizes["train"],
            "previous_round_pairs": len(extra),
            "round": round_of(context),
            **trained.final,
        }
        with atomic_dir(run.out_dir) as tmp:
            write_hf(trained.work / "hf", tmp / "hf", base_model.hf_dir)
            (tmp / "metrics.jsonl").write_bytes((trained.work / "metrics.jsonl").read_bytes())
            atomic_write_text(tmp / "evals.json", json.dumps(evals, indent=2))
        prune_work(run, [trained.work, data])
        run.log_metrics(evals)
        summary = "**Reward model** (pairwise loss, no margin)\n\n" + md_table(evals, ("metric", "value"))
        return run.result(num_records=sizes["train"], summary=summary, metadata=evals)
