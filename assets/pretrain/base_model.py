"""The base model: the Polyak average of the annealing checkpoints."""

import json

import dagster as dg

from assets.pretrain.training import EvalSuite
from dagster_project.artifacts import CuratedCorpus, HFCheckpoint, Tokenizer, TokenShards
from dagster_project.configs import dagster_config_for, resolve_config
from dagster_project.partitions import SNAPSHOTS
from dagster_project.registry import Registered
from dagster_project.resources import DvcResource, MlflowResource
from dagster_project.stage import md_table, stage_asset, stage_run
from ml.eval.perplexity import document_nll, hf_forward, mean_loss
from ml.eval.unigram import unigram_log_probs, unigram_nats_on
from ml.io import atomic_dir, atomic_write_text
from ml.train.average import average_checkpoints
from ml.train.stages import AverageConfig

AverageRun = dagster_config_for(AverageConfig)


def _evals(handle: HFCheckpoint) -> dict:
    return json.loads((handle.path / "evals.json").read_text())


def base_model_beats_unigram(base_model: HFCheckpoint) -> dg.AssetCheckResult:
    """Held-out loss at least ``min_nats_below_unigram`` nats (config) below the unigram baseline on the
    same held-out tokens (DESIGN: the tiny base model must really learn)."""
    ev = _evals(base_model)
    return dg.AssetCheckResult(
        passed=bool(ev["nats_below_unigram"] >= ev["min_nats_below_unigram"]),
        metadata={
            k: ev[k] for k in ("average_loss", "unigram_nats", "nats_below_unigram", "min_nats_below_unigram")
        },
    )


def base_model_matches_transformers(base_model: HFCheckpoint) -> dg.AssetCheckResult:
    """``transformers.LlamaForCausalLM.from_pretrained`` loads the artifact and its held-out loss equals ours."""
    ev = _evals(base_model)
    diff = abs(ev["transformers_loss"] - ev["average_loss"])
    return dg.AssetCheckResult(
        passed=diff <= ev["max_hf_loss_diff"],
        metadata={"ours": ev["average_loss"], "transformers": ev["transformers_loss"], "abs_diff": diff},
    )


@stage_asset(
    HFCheckpoint,
    gates=[base_model_beats_unigram, base_model_matches_transformers],
    registered=Registered("llama-lifecycle-base"),
    partitions_def=SNAPSHOTS,
    kinds={"pytorch"},
)
def base_model(
    context: dg.AssetExecutionContext,
    config: AverageRun,
    pretrain_annealed: HFCheckpoint,
    pretrain_long_context: HFCheckpoint,
    curated_corpus: CuratedCorpus,
    token_shards: TokenShards,
    tokenizer: Tokenizer,
    mlflow: MlflowResource,
    dvc: DvcResource,
) -> dg.MaterializeResult:
    """The base model (Llama 3 paper §3.4.3): the tensor-wise mean of the last ``count`` annealing checkpoints
    (``spacing`` apart), in HF format. Metadata compares the held-out loss of the average with the best
    single annealing checkpoint and with the model before annealing, next to the unigram baseline on the
    same tokens, and with the loss ``transformers`` computes from the exported files."""
    cfg = resolve_config(AverageConfig, config)
    with stage_run(
        context,
        mlflow,
        dvc,
        cfg,
        pretrain_annealed,
        pretrain_long_context,
        curated_corpus,
        token_shards,
        tokenizer,
    ) as run:
        ckpts = {
            int(p.name.split("-")[-1]): p for p in (pretrain_annealed.path / "checkpoints").glob("step-*")
        }
        picked = cfg.pick(list(ckpts))
        suite = EvalSuite.build(
            curated_corpus, token_shards, tokenizer, cfg.max_doc_tokens, cfg.heldout_seq_len
        )
        with atomic_dir(run.out_dir) as tmp:
            average_checkpoints([ckpts[s] for s in picked], tmp / "hf")
            for f in tokenizer.hf_files():
                (tmp / "hf" / f.name).write_bytes(f.read_bytes())
            evals = _compare(suite, tmp / "hf", ckpts, pretrain_long_context, token_shards, cfg)
            evals["averaged_steps"] = picked
            atomic_write_text(tmp / "evals.json", json.dumps(evals, indent=2))
        numbers = {k: v for k, v in evals.items() if isinstance(v, int | float)}
        run.log_metrics(numbers)
        summary = "**Base model** = mean of annealing steps " + ", ".join(map(str, picked)) + "\n\n"
        summary += md_table(numbers, ("metric", "value"))
        return run.result(
            num_records=len(picked), summary=summary, metadata={**numbers, "averaged_steps": str(picked)}
        )


def _compare(suite: EvalSuite, average, ckpts: dict, before: HFCheckpoint, shards: TokenShards, cfg) -> dict:
    """Held-out loss of the average, of each annealing checkpoint and of the model before annealing; the
    unigram baseline and transformers' loss of the average on the same tokens."""
    loss = lambda hf: suite.evaluate(hf, niah=False, mc=False)["heldout_loss"]  # noqa: E731
    singles = {step: loss(path) for step, path in sorted(ckpts.items())}
    best = min(singles, key=singles.get)
    ours = loss(average)
    hf = mean_loss(document_nll(hf_forward(average), suite.ids, suite.seq_len))
    unigram = unigram_nats_on(suite.ids, unigram_log_probs(shards.path))
    return {
        "average_loss": ours,
        "best_checkpoint_loss": singles[best],
        "best_checkpoint_step": best,
        "last_checkpoint_loss": singles[max(singles)],
        "before_annealing_loss": loss(before.hf_dir),
        "average_minus_best": ours - singles[best],
        "transformers_loss": hf,
        "max_hf_loss_diff": cfg.max_hf_loss_diff,
        "unigram_nats": unigram,
        "nats_below_unigram": unigram - ours,
        "min_nats_below_unigram": cfg.min_nats_below_unigram,
        "checkpoint_losses": {str(k): v for k, v in singles.items()},
    }
