"""Pruning by semantic similarity (Llama 3 paper §4.2.3: semantic deduplication of the SFT data).

Each record is embedded as the L2-normalised hashed bag of its character 3-grams (prompt and response,
lower-cased): a fixed, model-free embedding; records are visited in order and one whose cosine similarity
to an already kept record reaches ``threshold`` is dropped as ``near_duplicate`` with the similarity and the
kept id it matched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _text(record: Mapping[str, Any]) -> str:
    return "\n".join(m["content"] for m in record["messages"]).lower()


def embed(texts: Sequence[str], dim: int = 512) -> np.ndarray:
    """(N, dim) unit rows: counts of hashed character 3-grams."""
    out = np.zeros((len(texts), dim), dtype=np.float64)
    for i, t in enumerate(texts):
        for j in range(max(0, len(t) - 2)):
            h = int.from_bytes(hashlib.blake2b(t[j : j + 3].encode(), digest_size=4).digest(), "big")
            out[i, h % dim] += 1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms == 0, 1.0, norms)


def semantic_dedup(
    records: Sequence[Mapping[str, Any]], threshold: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(kept, dropped): a dropped record carries ``drop_reason`` and ``drop_detail``."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"semantic_dedup: threshold must be in (0, 1], got {threshold}")
    vecs = embed([_text(r) for r in records])
    kept_idx: list[int] = []
    kept, dropped = [], []
    for i, r in enumerate(records):
        if kept_idx:
            sims = vecs[kept_idx] @ vecs[i]
            j = int(np.argmax(sims))
            if sims[j] >= threshold:
                detail = f"cosine {sims[j]:.3f} >= {threshold} with {records[kept_idx[j]]['id']}"
                dropped.append({**r, "drop_reason": "near_duplicate", "drop_detail": detail})
                continue
        kept_idx.append(i)
        kept.append(dict(r))
    return kept, dropped
