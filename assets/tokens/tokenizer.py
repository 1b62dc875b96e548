"""Tokenizer: byte-level BPE with the Llama 3 special tokens (Llama 3 paper §3.2)."""

import json

import dagster as dg

from dagster_project.artifacts import DocShards, Tokenizer
from dagster_project.configs import dagster_config_for, resolve_config
from dagster_project.partitions import SNAPSHOTS
from dagster_project.resources import DvcResource, MlflowResource
from dagster_project.stage import md_table, stage_asset, stage_run
from ml.io import atomic_dir, atomic_write_text
from ml.tokens.shards import heldout_mask
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
    domain_classified: DocShards,
    mlflow: MlflowResource,
    dvc: DvcResource,
) -> dg.MaterializeResult:
    """Byte-level BPE (HF ``tokenizers``) trained on the classified documents (each once, before the mix
    re-weights them, so the mix can be measured in this tokenizer's tokens), with the Llama 3 special tokens
    (``<|begin_of_text|>``, header ids, ``<|eot_id|>``, ``<|eom_id|>``, ``<|python_tag|>``, reserved) at the
    end of the vocabulary. Documents of the validation hash rule are held out: compression (bytes per
    token) is reported on them per language, next to the training text's. Saved as ``tokenizer.json``
    loadable by ``transformers.PreTrainedTokenizerFast``."""
    cfg = resolve_config(TokenizerConfig, config)
    docs = domain_classified.read().drop_duplicates("id")
    held = heldout_mask(docs, cfg.heldout_fraction, cfg.heldout_seed, cfg.heldout_min_docs, cfg.heldout_key)
    train, heldout = docs[~held], docs[held]
    with stage_run(context, mlflow, dvc, cfg, domain_classified) as run:
        tok = train_tokenizer(train["text"].tolist(), cfg)
        stats = {"heldout": compression_stats(tok, heldout), "train": compression_stats(tok, train)}
        with atomic_dir(run.out_dir) as tmp:
            save_tokenizer(tok, tmp)
            atomic_write_text(tmp / "compression.json", json.dumps(stats, indent=2))
        from transformers import PreTrainedTokenizerFast

        hf = PreTrainedTokenizerFast.from_pretrained(str(run.out_dir))  # the contract: transformers loads it
        per_lang = {split: _per_lang(s) for split, s in stats.items()}
        run.log_metrics({f"{split}/{k}": v for split, s in stats.items() for k, v in s.items()})
        return run.result(
            num_records=tok.get_vocab_size(),
            summary=_summary(tok.get_vocab_size(), len(train), len(heldout), type(hf).__name__, per_lang),
            metadata={
                "vocab_size": tok.get_vocab_size(),
                "bytes_per_token_heldout": float(stats["heldout"].get("bytes_per_token", 0.0)),
                "bytes_per_token_train": float(stats["train"].get("bytes_per_token", 0.0)),
                "bytes_per_token_by_lang_heldout": dg.MetadataValue.json(per_lang["heldout"]),
                "training_docs": len(train),
                "heldout_docs": len(heldout),
            },
        )


def _per_lang(stats: dict) -> dict[str, float]:
    return {k.split("/", 1)[1]: v for k, v in stats.items() if k.startswith("bytes_per_token/")}


def _summary(vocab: int, n_train: int, n_heldout: int, hf_class: str, per_lang: dict) -> str:
    langs = sorted(per_lang["heldout"], key=lambda lang: -per_lang["heldout"][lang])
    rows = [(lang, per_lang["heldout"][lang], per_lang["train"].get(lang, float("nan"))) for lang in langs]
    return (
        f"**Tokenizer**: vocab {vocab} trained on {n_train} docs ({n_heldout} held out); loads in "
        f"transformers as `{hf_class}`.\n\n### Bytes per token by language (held-out vs training docs)\n"
        + md_table(rows, ("lang", "held-out bytes/token", "train bytes/token"))
    )
