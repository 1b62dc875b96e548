"""Tokenizer (byte-level BPE with the Llama 3 special tokens) and token shards (uint32 memmaps)."""

import json

import dagster as dg

from assets.data.curate import curated_corpus
from dagster_project.configs import dagster_config_for, resolve_config
from dagster_project.partitions import SNAPSHOTS
from dagster_project.resources import DvcResource, MlflowResource
from dagster_project.stage import md_table, stage_run, upstream_dir
from ml.io import atomic_dir, atomic_write_text, read_shards
from ml.tokens.shards import ShardConfig, write_token_shards
from ml.tokens.tokenizer import (
    TokenizerConfig,
    compression_stats,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
)

TokenizerRun = dagster_config_for(TokenizerConfig)
ShardRun = dagster_config_for(ShardConfig)


@dg.asset(
    partitions_def=SNAPSHOTS, group_name="tokenizer", deps=[curated_corpus], kinds={"python", "huggingface"}
)
def tokenizer(
    context: dg.AssetExecutionContext, config: TokenizerRun, mlflow: MlflowResource, dvc: DvcResource
):
    """Byte-level BPE (HF ``tokenizers``) trained on the curated corpus, with the Llama 3 special tokens
    (``<|begin_of_text|>``, header ids, ``<|eot_id|>``, ``<|eom_id|>``, ``<|python_tag|>``, reserved) at the
    end of the vocabulary. Saved as ``tokenizer.json`` loadable by ``transformers.PreTrainedTokenizerFast``."""
    cfg = resolve_config(TokenizerConfig, config)
    src = upstream_dir("curated_corpus", context)
    df = read_shards(src / "docs")
    unique = df.drop_duplicates("id")  # the mix repeats up-sampled docs; the tokenizer sees each once
    with stage_run(context, mlflow, dvc, cfg, inputs={"curated_corpus": src}) as run:
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


@dg.asset(
    partitions_def=SNAPSHOTS,
    group_name="tokenizer",
    deps=[curated_corpus, tokenizer],
    kinds={"python", "numpy"},
)
def token_shards(
    context: dg.AssetExecutionContext, config: ShardRun, mlflow: MlflowResource, dvc: DvcResource
):
    """Documents → flat ``uint32`` shards (numpy memmap) with a doc-boundary index, a held-out validation
    split by document, and a manifest of token counts per source / class / language and mix weights."""
    cfg = resolve_config(ShardConfig, config)
    corpus = upstream_dir("curated_corpus", context)
    tok_dir = upstream_dir("tokenizer", context)
    df = read_shards(corpus / "docs")
    tok = load_tokenizer(tok_dir)
    with stage_run(context, mlflow, dvc, cfg, inputs={"curated_corpus": corpus, "tokenizer": tok_dir}) as run:
        # replaces the dir atomically
        manifest = write_token_shards(df, tok, run.out_dir, cfg, class_col="domain")
        stats = manifest.to_stats()
        run.log_metrics(stats)
        run.log.log_artifact(run.out_dir / "manifest.json")
        by_class = {k.split("/", 1)[1]: v for k, v in stats.items() if k.startswith("tokens_by_class/")}
        summary = (
            f"**{stats.get('train_tokens', 0):,} train / {stats.get('val_tokens', 0):,} val tokens** in "
            f"{stats.get('shards', 0)} shards.\n\n### Tokens by class\n"
            + md_table(by_class or {"-": 0}, ("class", "tokens"))
        )
        return run.result(
            num_records=int(stats.get("train_tokens", 0) + stats.get("val_tokens", 0)),
            summary=summary,
            metadata={k.replace("/", "."): v for k, v in stats.items()},
        )
