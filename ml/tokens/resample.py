"""Stage data mixes: re-weight the curated corpus's documents for one training stage.

Each later pre-training stage trains on the same curated documents with other weights (Llama 3 paper
§3.4.2: long-context training up-samples long documents; §3.4.3: annealing up-samples high-quality
sources; data-value annealing gives one candidate class a fixed share). A weight ``w`` keeps ``floor(w)``
copies of a document plus one more with probability ``w - floor(w)`` (seeded), written as extra rows with a
higher ``repeat`` index, so ml/tokens/shards.py spreads the copies through the stream and keeps one copy
per document in the validation split: every stage is evaluated on the same held-out documents.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd


def doc_tokens(df: pd.DataFrame, chars_per_token: float = 4.0) -> np.ndarray:
    """Approximate tokens per document: ``n_chars`` (or the text's length) / ``chars_per_token``."""
    chars = df["n_chars"] if "n_chars" in df.columns else df["text"].str.len()
    return np.maximum(1.0, pd.to_numeric(chars, errors="coerce").fillna(0).to_numpy() / chars_per_token)


def resample(df: pd.DataFrame, weights: np.ndarray, seed: int = 0) -> pd.DataFrame:
    """``df`` with each row kept ``floor(w) + Bernoulli(w - floor(w))`` times; copies get new ``repeat`` indices.

    Rows kept zero times are dropped. The first copy of a row keeps its own ``repeat`` (0 when absent); the
    k-th extra copy gets ``repeat + k * (max repeat + 1)``, so repeat indices stay distinct per document.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(df),) or not np.all(np.isfinite(w)) or (w < 0).any():
        raise ValueError(f"resample: need one finite weight >= 0 per row ({len(df)}), got shape {w.shape}")
    rng = np.random.default_rng(seed)
    copies = np.floor(w).astype(np.int64) + (rng.random(len(w)) < w - np.floor(w))
    base = df.reset_index(drop=True)
    repeat = (
        base["repeat"].to_numpy(dtype=np.int64) if "repeat" in base.columns else np.zeros(len(base), np.int64)
    )
    period = int(repeat.max(initial=0)) + 1
    parts = []
    for k in range(int(copies.max(initial=0))):
        rows = np.flatnonzero(copies > k)
        parts.append(base.iloc[rows].assign(repeat=repeat[rows] + k * period))
    return pd.concat(parts, ignore_index=True) if parts else base.iloc[:0].assign(repeat=repeat[:0])


def long_doc_weights(
    df: pd.DataFrame, min_tokens: int, factor: float, chars_per_token: float = 4.0
) -> np.ndarray:
    """``factor`` for documents of at least ``min_tokens`` (approximate) tokens, 1 for the rest."""
    return np.where(doc_tokens(df, chars_per_token) >= min_tokens, float(factor), 1.0)


def quality_weights(
    df: pd.DataFrame, top_fraction: float, factor: float, column: str = "quality_score"
) -> np.ndarray:
    """``factor`` for the ``top_fraction`` of documents by ``column`` (ties included), 1 for the rest."""
    if column not in df.columns or top_fraction <= 0:
        return np.ones(len(df))
    scores = pd.to_numeric(df[column], errors="coerce").fillna(-np.inf).to_numpy()
    cut = np.quantile(scores, 1.0 - min(1.0, top_fraction))
    return np.where(scores >= cut, float(factor), 1.0)


def class_weights(df: pd.DataFrame, factors: Mapping[str, float], column: str = "domain") -> np.ndarray:
    """``factors[class]`` for each document's class (1 for a class not named)."""
    classes = (
        df[column].fillna("unknown").astype(str) if column in df.columns else pd.Series("unknown", df.index)
    )
    return classes.map(lambda c: float(factors.get(c, 1.0))).to_numpy()


def share_weights(
    df: pd.DataFrame,
    target: str,
    share: float,
    column: str = "domain",
    chars_per_token: float = 4.0,
    class_tokens: Mapping[str, float] | None = None,
) -> np.ndarray:
    """Weights giving class ``target`` a ``share`` of the tokens and the rest ``1 - share`` in their own mix.

    The other classes keep weight 1; the target class is scaled by ``share / (1 - share) * others / own``
    (Llama 3 paper §3.4.3: 30% of the annealing mix from the candidate data set). ``own`` and ``others``
    are the tokens of ``df`` per class: ``class_tokens`` when given (the tokenizer's real counts, e.g. a token
    shards manifest's ``tokens_per_class``), else ``n_chars / chars_per_token``. A ValueError when the
    corpus has no document (or no token) of ``target``."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"share_weights: share must lie in (0, 1), got {share}")
    is_target = (
        (df[column].astype(str) == target).to_numpy() if column in df.columns else np.zeros(len(df), bool)
    )
    if class_tokens is not None:
        own = float(class_tokens.get(target, 0))
        others = float(sum(v for k, v in class_tokens.items() if k != target))
    else:
        tokens = doc_tokens(df, chars_per_token)
        own, others = tokens[is_target].sum(), tokens[~is_target].sum()
    if own == 0 or not is_target.any():
        raise ValueError(f"share_weights: no document of {column}={target!r} to give a {share:.0%} share")
    return np.where(is_target, share / (1.0 - share) * others / own, 1.0)


def class_token_sample(
    df: pd.DataFrame,
    targets: Mapping[str, float],
    class_tokens: Mapping[str, float],
    keep: np.ndarray | None = None,
    column: str = "domain",
    seed: int = 0,
) -> np.ndarray:
    """Whole-number weights so each class ``c`` holds about ``targets[c]`` tokens outside ``keep``.

    ``class_tokens[c]``: the tokens of ``c`` outside ``keep`` at weight 1 (e.g. a token shards manifest's
    train split); a document's tokens are estimated as its characters times its class's tokens per
    character. Every document of ``c`` gets ``floor(targets[c] / class_tokens[c])`` copies, then one more
    in a seeded random order while that brings the class closer to its target, so each class lands within
    one document of its target (a Bernoulli draw per document, as ``resample`` does for fractional weights,
    leaves a small sample's shares far off). Rows in ``keep`` (the validation split) get weight 1, so a
    stage trained on the sample is still scored on the same documents; classes not in ``targets`` get 0."""
    kept = np.zeros(len(df), bool) if keep is None else np.asarray(keep, bool)
    chars = doc_tokens(df, 1.0)
    labels = df[column].fillna("unknown").astype(str).to_numpy()
    weights = np.where(kept, 1.0, 0.0)
    order = np.random.default_rng(seed).permutation(len(df))
    for c, target in targets.items():
        rows = np.flatnonzero((labels == c) & ~kept)
        if not len(rows) or not class_tokens.get(c):
            raise ValueError(f"class_token_sample: no training document or token of {column}={c!r}")
        per_doc = chars[rows] * (float(class_tokens[c]) / chars[rows].sum())
        whole = np.floor(target / float(class_tokens[c]))
        weights[rows] = whole
        left = target - whole * float(class_tokens[c])
        pos = {r: i for i, r in enumerate(rows)}
        for r in (r for r in order if r in pos):
            if left <= 0 or abs(left - per_doc[pos[r]]) >= left:
                continue
            weights[r] += 1
            left -= per_doc[pos[r]]
    return weights


def realized_shares(
    df: pd.DataFrame, column: str = "domain", chars_per_token: float = 4.0
) -> dict[str, float]:
    """Token share of each class in ``df`` (copies counted), sorted by class."""
    tokens = pd.Series(doc_tokens(df, chars_per_token), index=df.index)
    per = tokens.groupby(df[column].fillna("unknown").astype(str)).sum()
    return {str(k): float(v / per.sum()) for k, v in sorted(per.items())}
