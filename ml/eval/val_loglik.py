"""Per-document log-likelihood and perplexity on the held-out (``val``) token shards.

Each validation document (the document index of every ``val`` shard) is scored on its first
``max_tokens`` tokens (at most the model's context): the sum of ``log p(token | earlier tokens)`` over
every token after the first. Documents are batched right-padded (causal attention: padding after a
document never changes its scores). ``max_docs`` documents are taken spread evenly over the split, so a
budget covers the whole split rather than its first shard.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

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


@torch.no_grad()
def doc_logliks(model: torch.nn.Module, docs: list[np.ndarray], batch_size: int = 8) -> pd.DataFrame:
    """``doc, tokens, loglik, nats_per_token`` per document (``tokens`` = predicted tokens, len - 1)."""
    device = next(model.parameters()).device
    rows = []
    for start in range(0, len(docs), batch_size):
        batch = docs[start : start + batch_size]
        width = max(len(d) for d in batch)
        tokens = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        for i, d in enumerate(batch):
            tokens[i, : len(d)] = torch.from_numpy(d)
            labels[i, : len(d) - 1] = torch.from_numpy(d[1:])
        logits = model(tokens.to(device)).float()  # (B, T, V)
        nll = F.cross_entropy(logits.flatten(0, 1), labels.to(device).flatten(), reduction="none")
        per_doc = nll.view(len(batch), width).sum(dim=1).cpu()  # (B,): ignored labels add 0
        for i, d in enumerate(batch):
            rows.append((start + i, len(d) - 1, -float(per_doc[i])))
    df = pd.DataFrame(rows, columns=["doc", "tokens", "loglik"])
    df["nats_per_token"] = -df["loglik"] / df["tokens"]
    return df


def perplexity(logliks: pd.DataFrame) -> float:
    """exp(total negative log-likelihood / total predicted tokens) over every document."""
    return math.exp(-logliks["loglik"].sum() / logliks["tokens"].sum())
