"""One model's pre-training evaluations: held-out loss (overall and per group), multiple choice and NIAH.

The pieces live in ml/eval/perplexity.py, multiple_choice.py and niah.py; this module scores one HF-format
model on items built once per stage asset, so every stage's model is measured on the same items.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml.eval.multiple_choice import ChoicesLogProb, score_items_batched
from ml.eval.niah import ChoiceScorer, score_niah
from ml.eval.perplexity import Forward, choice_logprobs, document_nll, llama_forward, loss_by, mean_loss
from ml.plots import agg_subplots, figure_png

Encode = Callable[[str], list[int]]


def text_choices_scorer(forward: Forward, encode: Encode, max_len: int) -> ChoicesLogProb:
    """Multiple-choice scoring on text: summed log-probability and characters of each continuation."""

    def score(context: str, choices: list[str]) -> list[tuple[float, int]]:
        lps = choice_logprobs(forward, encode(context), [encode(c) for c in choices], max_len)
        return [(lp, len(c)) for lp, c in zip(lps, choices, strict=True)]

    return score


def token_choices_scorer(forward: Forward, max_len: int) -> ChoiceScorer:
    return lambda context, choices: choice_logprobs(forward, context, choices, max_len)


def evaluate_model(
    hf_dir: str | Path,
    *,
    docs: pd.DataFrame,
    doc_ids: Sequence[np.ndarray],
    seq_len: int,
    group_by: Sequence[str] = (),
    encode: Encode | None = None,
    mc_items: pd.DataFrame | None = None,
    niah_items: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """``heldout_loss`` (per token over ``doc_ids``), ``groups`` (loss per value of each ``group_by`` column of
    ``docs``), ``mc`` (multiple-choice metrics) and ``niah`` (accuracy per length x depth) where asked for.
    Items longer than the model's context are cut from the left (MC) or skipped (NIAH lengths)."""
    forward = llama_forward(hf_dir)
    max_len = int(forward.max_seq_len)  # type: ignore[attr-defined]
    scores = document_nll(forward, doc_ids, min(seq_len, max_len))
    out: dict[str, Any] = {"heldout_loss": mean_loss(scores), "heldout_tokens": int(scores["tokens"].sum())}
    if group_by:
        out["groups"] = loss_by(docs, scores, group_by)
    if mc_items is not None and encode is not None:
        out["mc"] = score_items_batched(mc_items, text_choices_scorer(forward, encode, max_len))
    if niah_items is not None:
        fits = niah_items[niah_items["length"] <= max_len]
        out["niah"] = score_niah(fits, token_choices_scorer(forward, max_len)) if len(fits) else None
    return out


def stage_comparison_png(table: pd.DataFrame, metrics: Sequence[str]) -> bytes:
    """One panel per metric, one point per stage in order (``table``: a ``stage`` column and the metrics)."""
    fig, axes = agg_subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.2), dpi=100)
    for ax, metric in zip(np.atleast_1d(axes), metrics, strict=True):
        ax.plot(range(len(table)), table[metric], "o-")
        ax.set_xticks(range(len(table)), table["stage"], rotation=30, fontsize=7)
        ax.set_title(metric, fontsize=9)
        ax.grid(alpha=0.3)
    return figure_png(fig)
