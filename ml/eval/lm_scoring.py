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


def _encode(tok: Tokenizer, pairs: Sequence[tuple[str, str]], max_len: int) -> list[tuple[list[int], list[int]]]:
    out = []
    for context, continuation in pairs:
        cont = tok.encode(continuation, add_special_tokens=False).ids[: max_len - 1]
        ctx = tok.encode(context).ids[-(max_len - len(cont)) :]
        out.append((ctx, cont))
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
        logits = model(tokens[:, :-1]).float()  # (B, T-1, V); right padding never reaches real positions
        logp = torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, 1:, None]).squeeze(-1)  # (B, T-1)
        scores.extend((logp * target_mask).sum(dim=1).tolist())
    return [(s, len(cont)) for s, (_, cont) in zip(scores, pairs, strict=True)]


def score_model(items: pd.DataFrame, model: Llama, tok: Tokenizer, *, max_len: int) -> dict[str, float]:
    """``score_items`` of ``items`` under ``model``: accuracy and normalized NLL of the correct answer."""
    pairs = [(item.context, choice) for item in items.itertuples(index=False) for choice in item.choices]
    table = dict(zip(pairs, continuation_logprobs(model, tok, pairs, max_len=max_len), strict=True))
    return score_items(items, lambda context, continuation: table[(context, continuation)])
