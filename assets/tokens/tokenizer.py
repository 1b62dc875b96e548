"""Tokenizer: byte-level BPE with the Llama 3 special tokens (Llama 3 paper §3.2)."""

import json

import dagster as dg

from dagster_project.artifacts import DocShards, Tokenizer
from dagster_project.configs import dagster_config_for, resolve_config
from dagster_project.partitions import SNAPSHOTS
from dagster_project.resources import DvcResource, MlflowResource
from dagster_project.stage import md_table, stage_asset, stage_run
from ml.io import atomic_dir, atomic_write_text
from ml.tokens.tokenizer import (
    NAMED_SPECIAL_OFFSETS,
    TokenizerConfig,
    compression_stats,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
)

TokenizerRun = dagster_config_for(TokenizerConfig)


def tokenizer_special_tokens(tokenizer: Tokenizer) -> dg.AssetCheckResult:
    """Every named Llama 3 special token (chat tokens included) encodes to a single id."""
    tok = load_tokenizer(tokenizer.path)
    specials = list(NAMED_SPECIAL_OFFSETS)  # begin/end of text, pad, headers, eom, eot, python_tag
    ids = {s: tok.encode(s, add_special_tokens=False).ids for s in specials}
    bad = {s: i for s, i in ids.items() if len(i) != 1}
    return dg.AssetCheckResult(passed=not bad, metadata={"ids": dg.MetadataValue.json(ids)})


@stage_asset(
    Tokenizer, gates=[tokenizer_special_tokens], partitions_def=SNAPSHOTS, kinds={"python", "huggingface"}
)
def tokenizer(
    context: dg.AssetExecutionContext,
    config: TokenizerRun,
    curated_corpus: DocShards,
    mlflow: MlflowResource,
    dvc: DvcResource,
) -> dg.MaterializeResult:
    """Byte-level BPE (HF ``tokenizers``) trained on the curated corpus, with the Llama 3 special tokens
    (``<|begin_of_text|>``, header ids, ``<|eot_id|>``, ``<|eom_id|>``, ``<|python_tag|>``, reserved) at the
    end of the vocabulary. Saved as ``tokenizer.json`` loadable by ``transformers.PreTrainedTokenizerFast``."""
    cfg = resolve_config(TokenizerConfig, config)
    unique = curated_corpus.read().drop_duplicates(
        "id"
    )  # the mix repeats up-sampled docs; train on each once
    with stage_run(context, mlflow, dvc, cfg, curated_corpus) as run:
        tok = train_tokenizer(unique["text"].tolist(), cfg)
        with atomic_dir(run.out_dir) as tmp:
            save_tokenizer(tok, tmp)
            stats = compression_stats(tok, unique, "text", "lang")
            atomic_write_text(tmp / "compression.json", json.dumps(stats, indent=2))
        from transformers import PreTrainedTokenizerFast

        hf = PreTrainedTokenizerFast.from_pretrained(str(run.out_dir))  # the contract: transformers loads it
        per_lang = {k.split("/", 1)[1]: v for k, v in stats.items() if k.startswith("bytes_per_token/")}
        run.log_metrics({"vocab_size": tok.get_vocab_size(), **stats})
        summary = (
            f"**Tokenizer**: vocab {tok.get_vocab_size()} trained on {len(unique)} docs; "
            f"loads in transformers as `{type(hf).__name__}`.\n\n### Bytes per token by language\n"
            + md_table(sorted(per_lang.items(), key=lambda kv: -kv[1]), ("lang", "bytes/token"))
        )
        return run.result(
            num_records=tok.get_vocab_size(),
            summary=summary,
            metadata={
                "vocab_size": tok.get_vocab_size(),
                "bytes_per_token": float(stats.get("bytes_per_token", 0.0)),
                "bytes_per_token_by_lang": dg.MetadataValue.json(per_lang),
                "training_docs": len(unique),
            },
        )
