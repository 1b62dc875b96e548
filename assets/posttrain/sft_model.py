"""A round's SFT model: the round's starting model fine-tuned on verified chats, prompt tokens masked."""

import dagster as dg

from assets.posttrain.rounds import (
    ROUND_AUTOMATION,
    SNAPSHOT_INPUT,
    records_digest,
    round_of,
    round_train_config,
    starting_model,
    with_safety,
    write_hf,
)
from assets.pretrain.training import TRAIN_RETRY, prune_work, train_stage, work_dir
from dagster_project.artifacts import HFCheckpoint, RejectionSamples, SyntheticData
from dagster_project.configs import dagster_config_for, resolve_config
from dagster_project.partitions import ROUNDS
from dagster_project.resources import DvcResource, MlflowResource, TorchrunResource
from dagster_project.stage import md_table, stage_asset, stage_run
from ml.io import atomic_dir
from ml.posttrain.round_data import write_round_set
from ml.posttrain.stages import SFTConfig

SFTRun = dagster_config_for(SFTConfig)


@stage_asset(
    HFCheckpoint,
    partitions_def=ROUNDS,
    automation_condition=ROUND_AUTOMATION,
    ins={"base_model": SNAPSHOT_INPUT, "synthetic_data": SNAPSHOT_INPUT},
    kinds={"pytorch"},
    retry_policy=TRAIN_RETRY,
)
def sft_model(
    context: dg.AssetExecutionContext,
    config: SFTRun,
    base_model: HFCheckpoint,
    synthetic_data: SyntheticData,
    rejection_samples: RejectionSamples,
    mlflow: MlflowResource,
    dvc: DvcResource,
    torchrun: TorchrunResource,
) -> dg.MaterializeResult:
    """Supervised fine-tuning (Llama 3 paper §4.1) of the model the round starts from (round 1: the base
    model; round k: round k-1's chat model) on the synthetic train split plus the round's best rejection
    samples and safety chats (refusals of adversarial, answers to borderline train prompts; ``safety.share``
    of the train records, ml/safety/tuning.py): loss on assistant tokens only, chats packed with document masking so they never attend to
    each other. The held-out split is refused by the task if any of its ids shows up in training."""
    cfg = resolve_config(SFTConfig, config)
    start = starting_model(context, base_model)
    with stage_run(context, mlflow, dvc, cfg, start, synthetic_data, rejection_samples) as run:
        rejection = rejection_samples.records("sft")
        extra, safety = with_safety(cfg.safety, synthetic_data, rejection, False, cfg.train.data.seq_len)
        data = work_dir(run, cfg, f"data@{records_digest(extra)}")
        sizes = write_round_set(
            synthetic_data.path, extra, data, synthetic_data.path / "tokenizer.json", False
        )
        trained = train_stage(
            context, run, torchrun, round_train_config(cfg.train, start, config.train), data
        )
        with atomic_dir(run.out_dir) as tmp:
            write_hf(trained.work / "hf", tmp / "hf", start.hf_dir)
            (tmp / "metrics.jsonl").write_bytes((trained.work / "metrics.jsonl").read_bytes())
        prune_work(run, [trained.work, data])
        numbers = {
            **trained.final,
            "train_records": sizes["train"],
            "rejection_records": len(rejection),
            **safety,
            "round": round_of(context),
        }
        run.log_metrics(numbers)
        summary = f"**SFT** from `{start.asset}`\n\n" + md_table(numbers, ("metric", "value"))
        return run.result(
            num_records=sizes["train"], summary=summary, metadata={**numbers, "started_from": start.asset}
        )
