"""The FP8 model (Llama 3 paper §6.2): row-wise dynamic e4m3 FFNs, gated on quality against bf16."""

import json
import shutil

import dagster as dg

from assets.models import evaluated_model_in
from dagster_project.artifacts import FP8Checkpoint, HFCheckpoint, TokenShards, hf_tokenizer_files
from dagster_project.configs import dagster_config_for, resolve_config
from dagster_project.partitions import SNAPSHOTS
from dagster_project.registry import Registered
from dagster_project.resources import DvcResource, MlflowResource
from dagster_project.stage import md_table, stage_asset, stage_run
from ml.eval.val_loglik import val_documents
from ml.infer.fp8 import fp8_layer_indices, fp8_summary
from ml.infer.fp8_model import FP8ModelConfig, evaluate_fp8, quantized_copy, read_fp8_config, save_fp8
from ml.io import atomic_dir, atomic_write_text
from ml.model.hf import load_hf

FP8ModelRun = dagster_config_for(FP8ModelConfig)


def fp8_model_quality(fp8_model: FP8Checkpoint) -> dg.AssetCheckResult:
    """Perplexity on held-out validation tokens at most ``max_ppl_increase`` (relative) above bf16, and the
    per-document score distribution (nats/token; no reward model yet) within ``max_score_ks`` (KS) of bf16."""
    q = fp8_model.quality
    over = [
        f"{k} {q[k]:.4f} > {q[bound]}"
        for k, bound in (("ppl_increase", "max_ppl_increase"), ("score_ks", "max_score_ks"))
        if q[k] > q[bound]
    ]
    return dg.AssetCheckResult(
        passed=not over,
        description="; ".join(over) or "within the bounds",
        metadata={k: float(v) for k, v in q.items() if isinstance(v, int | float)},
    )


def fp8_model_layers(fp8_model: FP8Checkpoint) -> dg.AssetCheckResult:
    """The saved model runs FP8 FFNs exactly in the recipe's layers; the first and last stay high precision."""
    recipe, rec = read_fp8_config(fp8_model.fp8_dir)
    n_layers = len(rec["fp8_layers"]) + len(rec["high_precision_layers"])
    expected = fp8_layer_indices(n_layers, recipe)
    return dg.AssetCheckResult(
        passed=rec["fp8_layers"] == expected,
        description=f"fp8 layers {rec['fp8_layers']}, expected {expected}; kept {rec['high_precision_layers']}",
    )


@stage_asset(
    FP8Checkpoint,
    gates=[fp8_model_quality, fp8_model_layers],
    registered=Registered("llama-lifecycle-fp8", subdir="fp8", flavor="fp8"),
    partitions_def=SNAPSHOTS,
    ins=evaluated_model_in(),
    kinds={"pytorch"},
)
def fp8_model(
    context: dg.AssetExecutionContext,
    config: FP8ModelRun,
    model: HFCheckpoint,
    token_shards: TokenShards,
    mlflow: MlflowResource,
    dvc: DvcResource,
) -> dg.MaterializeResult:
    """The model (``assets.models.EVALUATED_MODEL``) with the FFNs of every layer but the first and last in
    row-wise dynamic FP8 (e4m3, activation scale bound 1200), the rest in bf16. Quality against the bf16
    model on held-out validation documents of ``token_shards``: perplexity and the per-document
    log-likelihood distribution (standing in for the paper's reward-model score distribution). On CPU the
    FP8 matmul is the exact quantize-dequantize reference of ``torch._scaled_mm``."""
    cfg = resolve_config(FP8ModelConfig, config)
    with stage_run(context, mlflow, dvc, cfg, model, token_shards) as run:
        reference = load_hf(model.hf_dir).eval()
        fp8 = quantized_copy(reference, cfg.fp8)
        docs = val_documents(
            token_shards.path, cfg.eval_docs, min(cfg.eval_tokens_per_doc, reference.cfg.max_seq_len)
        )
        quality, scores = evaluate_fp8(reference, fp8, docs, cfg.batch_size)
        quality |= {"max_ppl_increase": cfg.max_ppl_increase, "max_score_ks": cfg.max_score_ks}
        layers = {k: v for k, v in fp8_summary(fp8).items() if k != "fp8_modules"}
        with atomic_dir(run.out_dir) as tmp:
            save_fp8(fp8, cfg.fp8, tmp / "fp8")
            for f in hf_tokenizer_files(model.hf_dir):  # a self-contained model directory to register
                shutil.copy2(f, tmp / "fp8" / f.name)
            scores.to_parquet(tmp / "doc_scores.parquet")
            atomic_write_text(tmp / "quality.json", json.dumps(quality | {"layers": layers}, indent=2))
        run.log_metrics(quality)
        summary = (
            f"**FP8 model**: FFNs of layers {layers['fp8_layers']} in e4m3 (kept: {layers['high_precision_layers']}); "
            f"quality against bf16 on {int(quality['docs'])} held-out documents ({int(quality['tokens'])} tokens), "
            "score = per-document nats/token (no reward model yet):\n\n"
            + md_table(quality, ("metric", "value"))
        )
        return run.result(num_records=int(quality["docs"]), summary=summary, metadata=quality)
