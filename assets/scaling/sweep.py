"""The IsoFLOP sweep: one partition per (crawl snapshot, sweep cell), each a model trained for exactly
its budget (Llama 3 paper §3.2.1)."""

import contextlib
import json
import shutil

import dagster as dg
import torch

from assets.scaling.mc_items import McItems
from dagster_project.artifacts import Artifact, Tokenizer, TokenShards
from dagster_project.configs import dagster_config_for, resolve_config
from dagster_project.partitions import SNAPSHOT_OF_CELL, SWEEP
from dagster_project.resources import DvcResource, MlflowResource
from dagster_project.stage import md_table, stage_asset, stage_run
from ml.io import atomic_dir, atomic_write_bytes, atomic_write_text
from ml.scaling.plan import SweepCell, SweepConfig, plan_sweep
from ml.scaling.sweep import run_cell, score_cell
from ml.train.report import loss_curve_png, read_metrics

SweepRun = dagster_config_for(SweepConfig)
SNAPSHOT_INPUT = dg.AssetIn(partition_mapping=SNAPSHOT_OF_CELL)


class SweepCellRun(Artifact):
    """One trained cell: ``cell.json`` (plan, final validation loss, wall time, MC scores), the loss curve
    ``metrics.jsonl`` / ``loss.png`` and the model in ``hf/``."""

    @property
    def record(self) -> dict:
        return json.loads((self.path / "cell.json").read_text())


def planned_cell(cfg: SweepConfig, cell: str, vocab_size: int) -> SweepCell:
    """The cell of the plan named ``cell``; an error naming it and the plan's cells when it is not there."""
    cells = {c.key: c for c in plan_sweep(cfg, vocab_size)}
    if cell not in cells:
        raise dg.Failure(f"sweep cell {cell} is not in this config's plan ({', '.join(cells)})")
    return cells[cell]


@contextlib.contextmanager
def torch_threads(n: int):
    """``n`` intra-op threads for this cell (0 = leave torch's default), restored afterwards."""
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@stage_asset(
    SweepCellRun,
    partitions_def=SWEEP,
    ins={"token_shards": SNAPSHOT_INPUT, "tokenizer": SNAPSHOT_INPUT, "mc_eval_items": SNAPSHOT_INPUT},
    kinds={"pytorch"},
)
def scaling_sweep(
    context: dg.AssetExecutionContext,
    config: SweepRun,
    token_shards: TokenShards,
    tokenizer: Tokenizer,
    mc_eval_items: McItems,
    mlflow: MlflowResource,
    dvc: DvcResource,
) -> dg.MaterializeResult:
    """One IsoFLOP cell: a model of the cell's size trained for D = C / FLOPs-per-token tokens (attention and
    LM head counted) with AdamW, linear warmup and cosine to 0.1x of the size's peak LR; records the final
    validation loss on a fixed validation budget, parameters, tokens, FLOPs, wall time, the loss curve,
    and the multiple-choice scores the downstream forecast fits."""
    cfg = resolve_config(SweepConfig, config)
    cell = planned_cell(cfg, context.partition_key.keys_by_dimension["sweep_cell"], token_shards.vocab_size)
    with stage_run(context, mlflow, dvc, cfg, token_shards, tokenizer, mc_eval_items) as run:
        run.log.set_tags({"sweep_cell": cell.key, "budget": f"{cell.budget:g}", "size": cell.size})
        with atomic_dir(run.out_dir) as tmp, torch_threads(cfg.torch_threads):
            record = run_cell(cfg, cell, token_shards.path, tmp)
            record.update(score_cell(tmp / "hf", tokenizer.path, mc_eval_items.read(), cfg.seq_len))
            shutil.rmtree(tmp / "checkpoints", ignore_errors=True)
            for f in tokenizer.hf_files():
                shutil.copy2(f, tmp / "hf" / f.name)
            atomic_write_text(tmp / "cell.json", json.dumps(record, indent=2))
            curve = read_metrics(tmp / "metrics.jsonl")
            atomic_write_bytes(tmp / "loss.png", loss_curve_png(curve))
        run.log.log_metric_series([(m["step"], {"train_loss": m["loss"], "lr": m["lr"]}) for m in curve])
        run.log_png(run.out_dir / "loss.png", "loss curve")
        numbers = {k: v for k, v in record.items() if isinstance(v, int | float) and k != "steps"}
        run.log_metrics(numbers)
        summary = f"**Sweep cell {cell.key}**\n\n" + md_table(numbers, ("quantity", "value"))
        return run.result(num_records=cell.tokens, summary=summary, metadata={**numbers, "steps": cell.steps})
