"""Annealing: the final stretch of pre-training with the LR going linearly to 0, checkpoints kept."""

import json
import shutil

import dagster as dg

from assets.pretrain.training import (
    copy_hf,
    prune_work,
    resolve_train_config,
    stage_mix,
    train_stage,
    training_asset,
)
from dagster_project.artifacts import CuratedCorpus, HFCheckpoint, Tokenizer, TokenShards
from dagster_project.configs import dagster_config_for
from dagster_project.resources import DvcResource, MlflowResource, TorchrunResource
from dagster_project.stage import md_table, stage_run
from ml.io import atomic_dir, atomic_write_bytes, atomic_write_text
from ml.train.report import loss_curve_png
from ml.train.stages import AnnealConfig, anneal_mix

AnnealRun = dagster_config_for(AnnealConfig)


def pretrain_annealed_lr_reaches_zero(pretrain_annealed: HFCheckpoint) -> dg.AssetCheckResult:
    """The LR of the last logged step is exactly 0 (Llama 3 paper §3.4.3: linearly to 0), and annealing
    kept its checkpoints for averaging."""
    rows = [
        json.loads(x)
        for x in (pretrain_annealed.path / "metrics.jsonl").read_text().splitlines()
        if x.strip()
    ]
    kept = sorted(p.name for p in (pretrain_annealed.path / "checkpoints").iterdir())
    return dg.AssetCheckResult(
        passed=rows[-1]["lr"] == 0.0 and bool(kept),
        metadata={"last_step": rows[-1]["step"], "last_lr": rows[-1]["lr"], "checkpoints": len(kept)},
    )


@training_asset(pretrain_annealed_lr_reaches_zero)
def pretrain_annealed(
    context: dg.AssetExecutionContext,
    config: AnnealRun,
    pretrain_long_context: HFCheckpoint,
    curated_corpus: CuratedCorpus,
    token_shards: TokenShards,
    tokenizer: Tokenizer,
    mlflow: MlflowResource,
    dvc: DvcResource,
    torchrun: TorchrunResource,
) -> dg.MaterializeResult:
    """Annealing (Llama 3 paper §3.4.3): from the long-context model, the LR decays linearly from its peak
    to exactly 0 at the last step on a mix that up-samples the highest-quality documents (``quality_score``)
    and the code / math classes (``domain``) of the curated corpus. Every kept checkpoint is part of the
    artifact (``checkpoints/step-*``, HF format): the base model averages them."""
    cfg = resolve_train_config(AnnealConfig, config, token_shards)
    with stage_run(
        context, mlflow, dvc, cfg, pretrain_long_context, curated_corpus, token_shards, tokenizer
    ) as run:
        mix_dir, mix = stage_mix(run, cfg, anneal_mix, curated_corpus, tokenizer, token_shards)
        trained = train_stage(
            context, run, torchrun, cfg.anneal_train(str(pretrain_long_context.hf_dir)), mix_dir / "shards"
        )
        steps = sorted((trained.work / "checkpoints").glob("step-*"))
        with atomic_dir(run.out_dir) as tmp:
            copy_hf(trained.work / "hf", tmp / "hf", tokenizer.hf_files())
            for step in steps:
                copy_hf(step, tmp / "checkpoints" / step.name, [])
            shutil.copy2(trained.work / "metrics.jsonl", tmp / "metrics.jsonl")
            atomic_write_text(tmp / "mix.json", json.dumps(mix, indent=2))
            atomic_write_bytes(tmp / "loss.png", loss_curve_png(trained.metrics))
        prune_work(run, [mix_dir, trained.work])
        run.log_png(run.out_dir / "loss.png", "loss curve")
        final = {**trained.final, **trained.launches, "checkpoints_kept": len(steps)}
        run.log_metrics(final)
        shares = {f"share.{k}": v for k, v in mix["shares"].items()}
        summary = "**Annealing** (LR linearly to 0)\n\n" + md_table({**final, **shares}, ("metric", "value"))
        return run.result(
            num_records=int(final.get("tokens_seen", 0)),
            summary=summary,
            metadata={**{k: v for k, v in final.items() if isinstance(v, int | float)}, **shares},
        )
