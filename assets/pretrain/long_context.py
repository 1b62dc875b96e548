"""Long-context pre-training: the context grown stage by stage, each stage gated."""

import json
import shutil

import dagster as dg
import pandas as pd

from assets.pretrain.training import (
    EvalSuite,
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
from ml.eval.niah import accuracy_at, heatmap_png
from ml.io import atomic_dir, atomic_write_bytes, atomic_write_text
from ml.train.report import loss_curve_png, read_metrics
from ml.train.stages import LongContextConfig, long_context_mix

LongContextRun = dagster_config_for(LongContextConfig)


def _stages(handle: HFCheckpoint) -> tuple[list[dict], list[int]]:
    record = json.loads((handle.path / "stages.json").read_text())
    return record["stages"], record["planned_seq_lens"]


def _gate(handle: HFCheckpoint, key: str, what: str) -> dg.AssetCheckResult:
    stages, planned = _stages(handle)
    ran = [s["seq_len"] for s in stages]
    failed = [s["seq_len"] for s in stages if not s[key]]
    return dg.AssetCheckResult(
        passed=ran == planned and not failed,
        description=f"{what}: stages run {ran} of {planned}; failed at {failed or 'none'}",
        metadata={
            f"{s['seq_len']}.{k}": float(s[k])
            for s in stages
            for k in (
                "short_loss_before",
                "short_loss",
                "max_short_loss_increase",
                "niah_accuracy",
                "min_niah_accuracy",
            )
        },
    )


def long_context_recovers_short_loss(pretrain_long_context: HFCheckpoint) -> dg.AssetCheckResult:
    """Every stage ran, and after each its short-context held-out loss is within the configured bound of
    the loss before the stage (Llama 3 paper §3.4.2: short-context performance has recovered)."""
    return _gate(pretrain_long_context, "recovered", "short-context loss recovered")


def long_context_solves_niah(pretrain_long_context: HFCheckpoint) -> dg.AssetCheckResult:
    """Every stage ran, and after each the needle-in-a-haystack accuracy at its new length reaches the
    configured bar (Llama 3 paper §3.4.2: the model solves NIAH at that length)."""
    return _gate(pretrain_long_context, "niah_solved", "NIAH at each new length")


@training_asset(long_context_recovers_short_loss, long_context_solves_niah)
def pretrain_long_context(
    context: dg.AssetExecutionContext,
    config: LongContextRun,
    pretrain_initial: HFCheckpoint,
    curated_corpus: CuratedCorpus,
    token_shards: TokenShards,
    tokenizer: Tokenizer,
    mlflow: MlflowResource,
    dvc: DvcResource,
    torchrun: TorchrunResource,
) -> dg.MaterializeResult:
    """Long-context pre-training (Llama 3 paper §3.4.2): the context grows stage by stage (``seq_lens``) at
    the configured RoPE θ on a mix that up-samples long documents. After each stage the short-context
    held-out loss and needle-in-a-haystack retrieval at the new length are measured; a stage that misses
    either bound stops the climb, and the gates fail the version."""
    cfg = resolve_train_config(LongContextConfig, config, token_shards)
    with stage_run(
        context, mlflow, dvc, cfg, pretrain_initial, curated_corpus, token_shards, tokenizer
    ) as run:
        mix_dir, mix = stage_mix(run, cfg, long_context_mix, curated_corpus, tokenizer, token_shards)
        suite = EvalSuite.build(
            curated_corpus,
            token_shards,
            tokenizer,
            cfg.max_doc_tokens,
            cfg.short_seq_len,
            niah=cfg.niah.replace(lengths=cfg.seq_lens),
        )
        before = suite.evaluate(pretrain_initial.hf_dir, niah=False)["heldout_loss"]
        stages, works, model = [], [mix_dir], pretrain_initial.hf_dir
        for seq_len in cfg.seq_lens:
            stage_cfg = cfg.stage_train(seq_len, str(model))
            trained = train_stage(context, run, torchrun, stage_cfg, mix_dir / "shards", f"stage-{seq_len}")
            works.append(trained.work)
            model = trained.work / "hf"
            ev = suite.evaluate(model, niah_lengths=(seq_len,))
            stages.append(_stage_record(cfg, seq_len, before, ev, trained))
            before = ev["heldout_loss"]
            if not (stages[-1]["recovered"] and stages[-1]["niah_solved"]):
                break  # the next stage starts only from a model that passed this one
        _write(run.out_dir, model, tokenizer, cfg, stages, mix, works[1:])
        prune_work(run, works)
        run.log_png(run.out_dir / "niah.png", "NIAH heat map")
        run.log_png(run.out_dir / "loss.png", "loss curve")
        flat = {f"{s['seq_len']}.{k}": v for s in stages for k, v in s.items() if isinstance(v, int | float)}
        run.log_metrics(flat)
        table = [
            (s["seq_len"], s["short_loss_before"], s["short_loss"], s["niah_accuracy"], s["tokens"])
            for s in stages
        ]
        summary = "**Long-context stages**\n\n" + md_table(
            table, ("seq_len", "short loss before", "short loss after", "NIAH accuracy", "tokens")
        )
        return run.result(
            num_records=int(sum(s["tokens"] for s in stages)),
            summary=summary,
            metadata={**flat, "stages_run": len(stages), "stages_planned": len(cfg.seq_lens)},
        )


def _write(
    out_dir, model, tokenizer: Tokenizer, cfg: LongContextConfig, stages: list[dict], mix: dict, works
) -> None:
    """The last stage's model, each stage's record and curve, the NIAH table and heat map."""
    niah = pd.concat([pd.DataFrame(s.pop("niah_table")) for s in stages], ignore_index=True)
    with atomic_dir(out_dir) as tmp:
        copy_hf(model, tmp / "hf", tokenizer.hf_files())
        record = {"planned_seq_lens": list(cfg.seq_lens), "stages": stages, "mix": mix}
        atomic_write_text(tmp / "stages.json", json.dumps(record, indent=2))
        niah.to_parquet(tmp / "niah.parquet", index=False)
        atomic_write_bytes(tmp / "niah.png", heatmap_png(niah, "NIAH after each long-context stage"))
        metrics = []
        for work, s in zip(works, stages, strict=False):
            shutil.copy2(work / "metrics.jsonl", tmp / f"metrics-{s['seq_len']}.jsonl")
            metrics += read_metrics(work / "metrics.jsonl")
        atomic_write_bytes(tmp / "loss.png", loss_curve_png(metrics))


def _stage_record(cfg: LongContextConfig, seq_len: int, before: float, ev: dict, trained) -> dict:
    """The stage's measured numbers next to its bounds, and whether it met them."""
    niah_acc = accuracy_at(ev["niah"], seq_len)
    table = ev["niah"].to_dict(orient="list")
    return {
        "seq_len": seq_len,
        "short_loss_before": before,
        "short_loss": ev["heldout_loss"],
        "max_short_loss_increase": cfg.max_short_loss_increase,
        "recovered": ev["heldout_loss"] <= before + cfg.max_short_loss_increase,
        "niah_accuracy": niah_acc,
        "min_niah_accuracy": cfg.min_niah_accuracy,
        "niah_chance": float(ev["niah"]["chance"].iloc[0]),
        "niah_solved": niah_acc >= cfg.min_niah_accuracy,
        "niah_table": table,
        "tokens": int(trained.final.get("tokens_seen", 0)),
        "final_val_loss": float(trained.final.get("final_val_loss", float("nan"))),
        **trained.launches,
    }
