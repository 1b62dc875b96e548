"""The unigram baseline: what a model that learned only token frequencies scores on the validation split.

Cross-entropy (nats per token) of every validation token under the training split's unigram distribution
with add-one smoothing over the vocabulary. A language model whose validation loss is not clearly below
this number has learned token frequencies and nothing else.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ml.tokens.shards import open_shard, read_manifest


def _counts(directory: Path, files: list[str], vocab_size: int, dtype: str) -> np.ndarray:
    counts = np.zeros(vocab_size, dtype=np.int64)
    for name in files:
        tokens = open_shard(directory / name, dtype)
        if tokens.size and int(tokens.max()) >= vocab_size:
            raise ValueError(f"{directory / name}: token id {int(tokens.max())} >= vocab_size {vocab_size}")
        counts += np.bincount(tokens, minlength=vocab_size)
    return counts


def unigram_baseline(shards_dir: Path | str) -> dict[str, float]:
    """``unigram_nats`` of the val split under the train split's add-one-smoothed unigram distribution."""
    directory = Path(shards_dir)
    manifest = read_manifest(directory, verify_sha256=False)
    files = {split: [s.file for s in manifest.shards.get(split, [])] for split in ("train", "val")}
    if not files["val"]:
        raise ValueError(f"{directory}: no validation shards to score the unigram baseline on")
    train = _counts(directory, files["train"], manifest.vocab_size, manifest.dtype)
    val = _counts(directory, files["val"], manifest.vocab_size, manifest.dtype)
    log_p = np.log(train + 1.0) - np.log(train.sum() + manifest.vocab_size)
    return {
        "unigram_nats": float(-(val * log_p).sum() / val.sum()),
        "train_tokens": float(train.sum()),
        "val_tokens": float(val.sum()),
    }


def unigram_log_probs(shards_dir: Path | str) -> np.ndarray:
    """Log-probability of every token id under the train split's add-one-smoothed unigram distribution."""
    directory = Path(shards_dir)
    manifest = read_manifest(directory, verify_sha256=False)
    train = _counts(
        directory, [s.file for s in manifest.shards.get("train", [])], manifest.vocab_size, manifest.dtype
    )
    return np.log(train + 1.0) - np.log(train.sum() + manifest.vocab_size)


def unigram_nats_on(docs: list[np.ndarray], log_p: np.ndarray) -> float:
    """The unigram model's loss on the tokens a document scorer predicts (each document's tokens but its first)."""
    targets = np.concatenate([np.asarray(d[1:], dtype=np.int64) for d in docs])
    return float(-log_p[targets].mean())
