"""Per-document log-likelihood and perplexity on the held-out (``val``) token shards.

Each validation document (the document index of every ``val`` shard) is scored on its first
``max_tokens`` tokens (at most the model's context): the sum of ``log p(token | earlier tokens)`` over
every token after the first, by ``ml.eval.perplexity.document_nll`` (the one NLL code path, whole documents
in one window, right-padded batches). ``max_docs`` documents are taken spread evenly over the split, so a
budget covers the whole split rather than its first shard.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ml.eval.perplexity import document_nll
from ml.tokens.shards import open_index, open_shard, read_manifest


def val_documents(shards_dir: Path | str, max_docs: int, max_tokens: int) -> list[np.ndarray]:
    """Token arrays (each cut to ``max_tokens``, at least 2 tokens) of ``max_docs`` val documents spread
    evenly over the split (0 = all)."""
    manifest = read_manifest(shards_dir, verify_sha256=False)
    docs: list[np.ndarray] = []
    for info in manifest.shards.get("val", []):
        tokens = open_shard(manifest.directory / info.file, manifest.dtype)
        starts = np.asarray(open_index(manifest.directory / info.index_file), dtype=np.int64)
        ends = np.append(starts[1:], len(tokens))
        docs += [
            np.asarray(tokens[s : min(e, s + max_tokens)], dtype=np.int64)
            for s, e in zip(starts, ends, strict=True)
        ]
    docs = [d for d in docs if len(d) >= 2]
    if not docs:
        raise ValueError(f"{shards_dir}: no validation document with at least 2 tokens")
    if max_docs and len(docs) > max_docs:
        docs = [docs[i] for i in np.linspace(0, len(docs) - 1, max_docs).round().astype(int)]
    return docs


def doc_logliks(model: torch.nn.Module, docs: list[np.ndarray], batch_size: int = 8) -> pd.DataFrame:
    """``doc, tokens, loglik, nats_per_token`` per document (``tokens`` = predicted tokens, len - 1): each
    document scored whole, in one window (:func:`ml.eval.perplexity.document_nll`)."""
    width = max(len(d) for d in docs)
    scores = document_nll(model, docs, seq_len=width, batch_size=batch_size)
    df = pd.DataFrame({"doc": range(len(docs)), "tokens": scores["tokens"], "loglik": -scores["nll"]})
    df["nats_per_token"] = -df["loglik"] / df["tokens"]
    return df


def perplexity(logliks: pd.DataFrame) -> float:
    """exp(total negative log-likelihood / total predicted tokens) over every document."""
    return math.exp(-logliks["loglik"].sum() / logliks["tokens"].sum())
