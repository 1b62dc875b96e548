"""Training one IsoFLOP sweep cell with the engine (``ml.train``), the paper's recipe shape (§3.2.1).

A cell (``ml.scaling.plan.SweepCell``) becomes a plain ``TrainConfig``: the cell's model, AdamW at the
cell's peak LR with decoupled weight decay, linear warmup over ``warmup_frac`` of the steps, cosine to
``min_lr_ratio`` x peak, ``batch_tokens`` per step at ``seq_len``, exactly ``cell.steps`` steps. The final
validation loss is measured once, at the last step, on the first ``eval_tokens`` tokens of the validation
split (the same tokens for every cell, so losses compare across the grid).

``run_cell`` writes ``metrics.jsonl`` (the training loss curve), ``cell.json`` (what the fit reads) and the
final model in HF format under ``out_dir``; ``score_cell`` adds the downstream multiple-choice scores.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from ml.eval.lm_scoring import score_model
from ml.io import atomic_write_text
from ml.model.hf import load_hf
from ml.model.llama import ModelConfig
from ml.scaling.plan import SweepCell, SweepConfig, warmup_steps
from ml.tokens.tokenizer import load_tokenizer
from ml.train.config import DataConfig, OptimizerConfig, ScheduleConfig, TrainConfig
from ml.train.engine import train


def cell_train_config(cfg: SweepConfig, cell: SweepCell) -> TrainConfig:
    """The engine config that trains ``cell`` for exactly its planned steps."""
    return TrainConfig(
        model=ModelConfig(**cell.model),
        optimizer=OptimizerConfig(lr=cell.lr, weight_decay=cfg.weight_decay),
        schedule=ScheduleConfig(
            warmup_steps=warmup_steps(cfg, cell.steps), decay="cosine", min_lr_ratio=cfg.min_lr_ratio
        ),
        data=DataConfig(seq_len=cfg.seq_len, batch_size=cfg.batch_tokens // cfg.seq_len),
        steps=cell.steps,
        eval_every=0,  # validation once, after the last step
        eval_batches=max(1, cfg.eval_tokens // cfg.batch_tokens),
        ckpt_every=0,
        keep_last=1,
        seed=cfg.seed,
        device="cpu" if cfg.device == "cpu" else "auto",
        precision=cfg.precision,
        compile=cfg.compile,
    )


def run_cell(
    cfg: SweepConfig,
    cell: SweepCell,
    data_dir: Path,
    out_dir: Path,
    on_metrics: Callable[[int, dict], None] | None = None,
) -> dict[str, Any]:
    """Train ``cell`` on the token shards in ``data_dir``; returns (and writes ``cell.json``) its record."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    curve = out_dir / "metrics.jsonl"
    curve.unlink(missing_ok=True)
    with open(curve, "a") as sink:

        def record(step: int, metrics: dict) -> None:
            sink.write(json.dumps({"step": step, **metrics}) + "\n")
            if on_metrics is not None:
                on_metrics(step, metrics)

        t0, cpu0 = time.perf_counter(), time.process_time()
        result = train(cell_train_config(cfg, cell), data_dir, out_dir, on_metrics=record, resume=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    if result.final_step != cell.steps or not result.val_losses:
        raise RuntimeError(f"sweep cell {cell.key}: trained {result.final_step}/{cell.steps} steps")
    record_ = {
        **dataclasses.asdict(cell),
        "key": cell.key,
        "final_val_loss": float(result.val_losses[-1][1]),
        "final_train_loss": float(result.losses[-1]),
        "tokens_seen": int(result.tokens_seen),
        "wall_time_s": wall,
        "cpu_time_s": cpu,  # this process's CPU time, all threads (wall time depends on what else runs)
        "eval_tokens": max(1, cfg.eval_tokens // cfg.batch_tokens) * cfg.batch_tokens,
    }
    atomic_write_text(out_dir / "cell.json", json.dumps(record_, indent=2))
    return record_


def score_cell(hf_dir: Path, tokenizer_dir: Path, items: pd.DataFrame, max_len: int) -> dict[str, float]:
    """The trained model's multiple-choice accuracy and normalized NLL of the correct answer (``mc_*``)."""
    model = load_hf(hf_dir)
    scores = score_model(items, model, load_tokenizer(tokenizer_dir), max_len=max_len)
    return {f"mc_{k}": v for k, v in scores.items()}
