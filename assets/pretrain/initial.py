"""Initial pre-training: the training engine (``ml.train``) launched under torchrun through Dagster Pipes."""

import json
import shutil

import dagster as dg

from assets.pretrain.training import copy_hf, prune_work, resolve_train_config, train_stage, training_asset
from dagster_project.artifacts import HFCheckpoint, Tokenizer, TokenShards
from dagster_project.configs import dagster_config_for
from dagster_project.resources import DvcResource, MlflowResource, TorchrunResource
from dagster_project.stage import md_table, stage_run
from ml.eval.unigram import unigram_baseline
from ml.io import atomic_dir, atomic_write_bytes, atomic_write_text
from ml.model.flops import num_params
from ml.train.report import loss_curve_png
from ml.train.stages import InitialConfig

InitialRun = dagster_config_for(InitialConfig)


def pretrain_initial_beats_unigram(pretrain_initial: HFCheckpoint) -> dg.AssetCheckResult:
    """Held-out validation loss at least ``min_nats_below_unigram`` nats (config) below a model of token
    frequencies alone, measured on the same validation split (``evals.json``)."""
    evals = json.loads((pretrain_initial.path / "evals.json").read_text())
    return dg.AssetCheckResult(
        passed=bool(evals["nats_below_unigram"] >= evals["min_nats_below_unigram"]),
        metadata={k: float(v) for k, v in evals.items()},
    )


@training_asset(pretrain_initial_beats_unigram)
def pretrain_initial(
    context: dg.AssetExecutionContext,
    config: InitialRun,
    token_shards: TokenShards,
    tokenizer: Tokenizer,
    mlflow: MlflowResource,
    dvc: DvcResource,
    torchrun: TorchrunResource,
) -> dg.MaterializeResult:
    """Initial pre-training (Llama 3 paper §3.4.1): AdamW, linear warmup + cosine decay, the batch-size and
    sequence-length ramp, document-masked attention on the curated mix, periodic validation, DCP checkpoints
    (a crash resumes from the newest; Dagster retries the launch). Model size and token budget come from
    the config (``train.model``, ``train.steps``): the scaling fit's forecast is the seam that will set them.
    The artifact: the final model (``hf/``), the mid-run checkpoint for data-value annealing (``mid/``),
    the loss / LR / tokens/s / MFU curves (``metrics.jsonl``) and ``evals.json`` against the unigram baseline."""
    cfg = resolve_train_config(InitialConfig, config, token_shards)
    with stage_run(context, mlflow, dvc, cfg, token_shards, tokenizer) as run:
        trained = train_stage(context, run, torchrun, cfg.train, token_shards.path)
        final = {**trained.final, **trained.launches, "params": num_params(cfg.train.model)}
        evals = _beyond_unigram(token_shards, final, cfg.min_nats_below_unigram)
        final.update({k: evals[k] for k in ("unigram_nats", "nats_below_unigram")})
        mid = _mid_checkpoint(trained.work, cfg)
        with atomic_dir(run.out_dir) as tmp:
            atomic_write_text(tmp / "evals.json", json.dumps(evals, indent=2))
            copy_hf(trained.work / "hf", tmp / "hf", tokenizer.hf_files())
            copy_hf(mid, tmp / "mid", tokenizer.hf_files())
            atomic_write_text(tmp / "mid" / "step.json", json.dumps({"step": int(mid.name.split("-")[-1])}))
            shutil.copy2(trained.work / "metrics.jsonl", tmp / "metrics.jsonl")
            atomic_write_bytes(tmp / "loss.png", loss_curve_png(trained.metrics))
            atomic_write_text(tmp / "pipes_report.json", json.dumps(final, default=str, indent=2))
        prune_work(run, [trained.work])
        run.log_png(run.out_dir / "loss.png", "loss curve")
        run.log_metrics(final)
        summary = "**Initial pre-training** (rank 0 report through Pipes)\n\n" + md_table(
            final, ("metric", "value")
        )
        return run.result(
            num_records=int(final.get("tokens_seen", 0)),
            summary=summary,
            metadata={
                **{k: v for k, v in final.items() if isinstance(v, int | float)},
                "nproc_per_node": torchrun.nproc_per_node,
                "mid_checkpoint_step": int(mid.name.split("-")[-1]),
            },
        )


def _mid_checkpoint(work, cfg: InitialConfig):
    """The kept checkpoint nearest ``mid_fraction`` of the run (its HF weights are written with it)."""
    steps = {int(p.name.split("-")[-1]): p for p in (work / "checkpoints").glob("step-*")}
    if not steps:
        raise dg.Failure(f"{work / 'checkpoints'}: the run kept no checkpoint for data-value annealing")
    target = cfg.mid_fraction * cfg.train.steps
    return steps[min(steps, key=lambda s: (abs(s - target), s))]


def _beyond_unigram(token_shards: TokenShards, final: dict, min_nats: float) -> dict:
    """The validation loss next to the unigram baseline of the same validation split (``evals.json``)."""
    base = unigram_baseline(token_shards.path)
    val_loss = float(final.get("final_val_loss", float("nan")))
    return {
        **base,
        "val_loss": val_loss,
        "nats_below_unigram": base["unigram_nats"] - val_loss,
        "min_nats_below_unigram": min_nats,
    }
