"""Evaluations of every pre-training stage's model, side by side."""

import dataclasses
import json

import dagster as dg
import pandas as pd

from assets.pretrain.training import EvalSuite
from assets.scaling.mc_items import McItems
from dagster_project.artifacts import CuratedCorpus, EvalTables, HFCheckpoint, Tokenizer, TokenShards
from dagster_project.configs import dagster_config_for, resolve_config
from dagster_project.partitions import SNAPSHOTS
from dagster_project.resources import DvcResource, MlflowResource
from dagster_project.stage import md_table, stage_asset, stage_run
from ml.eval.model_evals import stage_comparison_png
from ml.eval.niah import heatmap_png
from ml.io import atomic_dir, atomic_write_bytes, atomic_write_text
from ml.train.stages import BaseEvalConfig

BaseEvalRun = dagster_config_for(BaseEvalConfig)


@stage_asset(EvalTables, partitions_def=SNAPSHOTS, kinds={"pytorch", "pandas"})
def base_model_evals(
    context: dg.AssetExecutionContext,
    config: BaseEvalRun,
    pretrain_initial: HFCheckpoint,
    pretrain_long_context: HFCheckpoint,
    pretrain_annealed: HFCheckpoint,
    base_model: HFCheckpoint,
    curated_corpus: CuratedCorpus,
    token_shards: TokenShards,
    tokenizer: Tokenizer,
    mc_eval_items: McItems,
    mlflow: MlflowResource,
    dvc: DvcResource,
) -> dg.MaterializeResult:
    """Each stage's model (initial → long context → annealed → average) on the same held-out documents:
    perplexity per source, class and language; the multiple-choice items of ``mc_eval_items`` (which
    continuation comes next; the scaling forecast's downstream task); needle in a haystack by depth ×
    length (lengths beyond a model's context are skipped). Tables (Parquet) and plots."""
    cfg = resolve_config(BaseEvalConfig, config)
    models = {
        "initial": pretrain_initial,
        "long_context": pretrain_long_context,
        "annealed": pretrain_annealed,
        "average": base_model,
    }
    inputs = (*models.values(), curated_corpus, token_shards, tokenizer, mc_eval_items)
    with stage_run(context, mlflow, dvc, cfg, *inputs) as run:
        suite = EvalSuite.build(
            curated_corpus,
            token_shards,
            tokenizer,
            cfg.max_doc_tokens,
            cfg.heldout_seq_len,
            niah=cfg.niah,
            group_by=cfg.group_by,
        )
        suite = dataclasses.replace(suite, mc_items=mc_eval_items.read())
        results = {name: suite.evaluate(handle.hf_dir) for name, handle in models.items()}
        headline, groups, niah = _tables(results)
        with atomic_dir(run.out_dir) as tmp:
            groups.to_parquet(tmp / "heldout_by_group.parquet", index=False)
            niah.to_parquet(tmp / "niah.parquet", index=False)
            headline.to_parquet(tmp / "stages.parquet", index=False)
            evals = {"stages": headline.to_dict(orient="records"), "mc_items": int(len(suite.mc_items))}
            atomic_write_text(tmp / "evals.json", json.dumps(evals, indent=2))
            metrics = ["heldout_loss", "mc_accuracy", "niah_accuracy"]
            atomic_write_bytes(tmp / "stages.png", stage_comparison_png(headline, metrics))
            for name in models:
                part = niah[niah["stage"] == name]
                if len(part):
                    atomic_write_bytes(tmp / f"niah-{name}.png", heatmap_png(part, f"NIAH: {name}"))
        run.log_png(run.out_dir / "stages.png", "stages compared")
        for name in models:
            if (run.out_dir / f"niah-{name}.png").exists():
                run.log_png(run.out_dir / f"niah-{name}.png", f"NIAH {name}")
        flat = {
            f"{r['stage']}.{k}": v
            for r in headline.to_dict(orient="records")
            for k, v in r.items()
            if k != "stage"
        }
        run.log_metrics(flat)
        wide = groups.pivot_table(index=["column", "group"], columns="stage", values="loss").reset_index()
        summary = (
            "**Stages compared**\n\n"
            + md_table([tuple(r) for r in headline.itertuples(index=False)], tuple(headline.columns))
            + "\n\n**Held-out loss per group**\n\n"
            + md_table([tuple(r) for r in wide.itertuples(index=False)], tuple(str(c) for c in wide.columns))
        )
        return run.result(num_records=len(models), summary=summary, metadata=flat)


def _tables(results: dict) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Headline per stage; held-out loss per group per stage; NIAH cells per stage."""
    rows, groups, niah = [], [], []
    for name, r in results.items():
        cells = r.get("niah")
        rows.append(
            {
                "stage": name,
                "heldout_loss": r["heldout_loss"],
                "mc_accuracy": r["mc"]["accuracy"],
                "mc_normalized_nll": r["mc"]["normalized_nll"],
                "niah_accuracy": float(cells["accuracy"].mean()) if cells is not None else float("nan"),
            }
        )
        groups.append(r["groups"].assign(stage=name))
        if cells is not None:
            niah.append(cells.assign(stage=name))
    return pd.DataFrame(rows), pd.concat(groups, ignore_index=True), pd.concat(niah, ignore_index=True)
