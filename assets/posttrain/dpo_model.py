"""A round's DPO runs: from the SFT model against itself as the frozen reference, one run per seed."""

import json
import shutil

import dagster as dg
import torch

from assets.posttrain.rounds import (
    ROUND_AUTOMATION,
    SNAPSHOT_INPUT,
    one_torch_thread,
    records_digest,
    round_of,
    round_train_config,
    with_safety,
    write_hf,
)
from assets.pretrain.training import TRAIN_RETRY, prune_work, train_stage, work_dir
from dagster_project.artifacts import DPORuns, HFCheckpoint, RejectionSamples, SyntheticData
from dagster_project.configs import dagster_config_for, resolve_config
from dagster_project.partitions import ROUNDS
from dagster_project.resources import DvcResource, MlflowResource, TorchrunResource
from dagster_project.stage import md_table, stage_asset, stage_run
from ml.io import atomic_dir, atomic_write_text
from ml.posttrain.round_data import write_round_set
from ml.posttrain.stages import DPOConfig
from ml.train.dist import DistInfo
from ml.train.tasks.dpo import REFERENCE_LOGPS, DPOTask, save_reference_logps
from ml.train.weights import frozen_model

DPORun = dagster_config_for(DPOConfig)


def cache_reference_logps(train_cfg, data) -> int:
    """Score every pair of ``data`` once with the reference (``train_cfg.init_from``) and write
    ``reference_logps.json`` there, so every DPO run reads them instead of building the reference."""
    cpu = torch.device("cpu")
    task = DPOTask(train_cfg, data, DistInfo(rank=0, world_size=1, local_rank=0, device=cpu))
    if not task.ref:
        task.bind_frozen({"reference": frozen_model(train_cfg.init_from, cpu)})
        save_reference_logps(task, data / REFERENCE_LOGPS)
    return sum(len(r) for r in task.ref.values())


def last_eval(metrics: list[dict]) -> dict:
    """The DPO evaluation metrics of the last evaluated step (val loss, reward accuracy and margin)."""
    rows = [m for m in metrics if "val_loss" in m]
    keys = ("val_loss", "dpo_loss", "nll_chosen", "reward_accuracy", "reward_margin")
    return {f"val_{k}".replace("val_val_", "val_"): rows[-1][k] for k in keys if rows and k in rows[-1]}


@stage_asset(
    DPORuns,
    partitions_def=ROUNDS,
    automation_condition=ROUND_AUTOMATION,
    ins={"synthetic_data": SNAPSHOT_INPUT},
    kinds={"pytorch"},
    retry_policy=TRAIN_RETRY,
)
def dpo_model(
    context: dg.AssetExecutionContext,
    config: DPORun,
    sft_model: HFCheckpoint,
    synthetic_data: SyntheticData,
    rejection_samples: RejectionSamples,
    mlflow: MlflowResource,
    dvc: DvcResource,
    torchrun: TorchrunResource,
) -> dg.MaterializeResult:
    """Direct preference optimization (Llama 3 paper §4.1): β = 0.1, formatting tokens masked out of
    chosen and rejected, NLL on chosen with coefficient 0.2, from the round's SFT model, which is also the
    frozen reference. The reference's log-probs of every pair are computed once and cached (an artifact
    file every run reads). One run per seed (config); the chat model averages them. Pairs: the synthetic
    preference pairs, the round's verified rejection pairs and the safety pairs (refusal over a compliance
    opener for adversarial prompts, answer over refusal for borderline ones; ``safety.share``)."""
    cfg = resolve_config(DPOConfig, config)
    with stage_run(context, mlflow, dvc, cfg, sft_model, synthetic_data, rejection_samples) as run:
        rejection = rejection_samples.records("pairs")
        extra, safety = with_safety(cfg.safety, synthetic_data, rejection, True, cfg.train.data.seq_len)
        data = work_dir(run, cfg, f"data@{records_digest(extra)}")
        sizes = write_round_set(
            synthetic_data.prefs_dir, extra, data, synthetic_data.path / "tokenizer.json", True
        )
        base_cfg = round_train_config(cfg.train, sft_model, config.train)
        with one_torch_thread():
            scored = cache_reference_logps(base_cfg, data)
        runs = {
            s: train_stage(context, run, torchrun, base_cfg.replace(seed=s), data, f"seed-{s}")
            for s in cfg.seeds
        }
        report = {
            "round": round_of(context),
            "pairs_train": sizes["train"],
            "rejection_pairs": len(rejection),
            **safety,
            "reference_scored_pairs": scored,
        }
        for s, t in runs.items():
            report.update({f"seed-{s}/{k}": v for k, v in {**t.final, **last_eval(t.metrics)}.items()})
        with atomic_dir(run.out_dir) as tmp:
            shutil.copy2(data / REFERENCE_LOGPS, tmp / REFERENCE_LOGPS)
            for s, t in runs.items():
                write_hf(t.work / "hf", tmp / "runs" / f"seed-{s}" / "hf", sft_model.hf_dir)
                shutil.copy2(t.work / "metrics.jsonl", tmp / "runs" / f"seed-{s}" / "metrics.jsonl")
            atomic_write_text(tmp / "report.json", json.dumps(report, indent=2))
        prune_work(run, [data, *(t.work for t in runs.values())])
        run.log_metrics(report)
        summary = "**DPO** from the SFT model (β = 0.1, NLL 0.2)\n\n" + md_table(report, ("metric", "value"))
        return run.result(num_records=sizes["train"], summary=summary, metadata=report)
