"""Log-likelihood of continuations under a causal LM, batched: what multiple-choice scoring needs.

The context is encoded with the tokenizer's post-processor (``<|begin_of_text|>`` first), the continuation
without it; tokens of both are concatenated, the context cut from the left so the pair fits ``max_len``.
A pair's score is the sum of log p(continuation token | everything before it) and the continuation's length
in characters (``ml.eval.multiple_choice.score_items`` normalizes by it).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from tokenizers import Tokenizer

from ml.eval.multiple_choice import score_items
from ml.model.llama import Llama


def _encode(
    tok: Tokenizer, pairs: Sequence[tuple[str, str]], max_len: int
) -> list[tuple[list[int], list[int]]]:
    contexts: dict[str, list[int]] = {}  # each item's context is shared by its choices
    out = []
    for context, continuation in pairs:
        if context not in contexts:
            contexts[context] = tok.encode(context).ids
        cont = tok.encode(continuation, add_special_tokens=False).ids[: max_len - 1]
        out.append((contexts[context][-(max_len - len(cont)) :], cont))
    return out


@torch.no_grad()
def continuation_logprobs(
    model: Llama, tok: Tokenizer, pairs: Sequence[tuple[str, str]], *, max_len: int, batch_size: int = 64
) -> list[tuple[float, int]]:
    """``(sum log p(continuation | context), len(continuation))`` for every pair, in order."""
    model.eval()
    encoded = _encode(tok, pairs, max_len)
    scores: list[float] = []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        width = max(len(c) + len(k) for c, k in chunk)
        tokens = torch.zeros((len(chunk), width), dtype=torch.long)
        target_mask = torch.zeros((len(chunk), width - 1), dtype=torch.bool)
        for row, (ctx, cont) in enumerate(chunk):
            tokens[row, : len(ctx) + len(cont)] = torch.tensor(ctx + cont)
            target_mask[row, len(ctx) - 1 : len(ctx) + len(cont) - 1] = True  # positions predicting cont
        h = model.hidden_states(tokens[:, :-1])  # (B, T-1, D); right padding never reaches real positions
        logits = model.lm_head(h[target_mask]).float()  # (N, V): only the positions predicting a continuation
        logp = torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, 1:][target_mask][:, None]).squeeze(-1)
        rows = target_mask.nonzero()[:, 0]  # (N,) the pair each scored token belongs to
        scores.extend(torch.zeros(len(chunk)).index_add_(0, rows, logp).tolist())
    return [(s, len(cont)) for s, (_, cont) in zip(scores, pairs, strict=True)]


def score_model(items: pd.DataFrame, model: Llama, tok: Tokenizer, *, max_len: int) -> dict[str, float]:
    """``score_items`` of ``items`` under ``model``: accuracy and normalized NLL of the correct answer."""
    pairs = [(item.context, choice) for item in items.itertuples(index=False) for choice in item.choices]
    table = dict(zip(pairs, continuation_logprobs(model, tok, pairs, max_len=max_len), strict=True))
    return score_items(items, lambda context, continuation: table[(context, continuation)])
