"""Held-out loss of a causal LM, per document and per group, and log-probabilities of continuations.

Everything here takes ``forward(tokens) -> logits``: a (B, T) int64 tensor in, (B, T, V) logits out, so the
same code scores our Llama (:func:`llama_forward`) and ``transformers``' ``LlamaForCausalLM``
(:func:`hf_forward`); equal numbers from both are the proof that the exported model is ours.

Held-out loss: each document (``<|begin_of_text|> tokens <|end_of_text|>``, as in the token shards) is cut
into windows of at most ``seq_len + 1`` tokens with stride ``seq_len``; every window is scored on its own
(no context carried over), so a document's loss is the sum of its windows' next-token NLLs over all its
tokens but the first. Grouping sums NLLs and tokens per group, so a group's loss is per token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

Forward = Callable[[torch.Tensor], torch.Tensor]  # (B, T) int64 -> (B, T, V) logits


def llama_forward(hf_dir: str | Path) -> Forward:
    """Our Llama loaded from an HF-format directory, in eval mode on the CPU, as ``forward``."""
    from ml.model.hf import load_hf

    with torch.random.fork_rng(devices=[]):
        model = load_hf(hf_dir).eval()

    @torch.no_grad()
    def forward(tokens: torch.Tensor) -> torch.Tensor:
        return model(tokens)

    forward.max_seq_len = model.cfg.max_seq_len  # type: ignore[attr-defined]
    return forward


def hf_forward(hf_dir: str | Path) -> Forward:
    """``transformers.LlamaForCausalLM.from_pretrained(hf_dir)`` (fp32, eager attention) as ``forward``."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(str(hf_dir), torch_dtype=torch.float32).eval()

    @torch.no_grad()
    def forward(tokens: torch.Tensor) -> torch.Tensor:
        return model(input_ids=tokens).logits

    forward.max_seq_len = model.config.max_position_embeddings  # type: ignore[attr-defined]
    return forward


def _windows(ids: np.ndarray, seq_len: int) -> list[np.ndarray]:
    """Windows of up to ``seq_len + 1`` tokens, stride ``seq_len``: every token but the first is a target once."""
    return [ids[s : s + seq_len + 1] for s in range(0, max(1, len(ids) - 1), seq_len) if len(ids[s:]) > 1]


@torch.no_grad()
def document_nll(
    forward: Forward, docs: Sequence[np.ndarray], seq_len: int, batch_size: int = 8
) -> pd.DataFrame:
    """``nll`` (summed nats) and ``tokens`` (targets scored) of every document, in order."""
    jobs = [(d, w) for d, ids in enumerate(docs) for w in _windows(np.asarray(ids, dtype=np.int64), seq_len)]
    jobs.sort(key=lambda j: len(j[1]))  # similar lengths batch together with little padding
    nll = np.zeros(len(docs))
    tokens = np.zeros(len(docs), dtype=np.int64)
    for i in range(0, len(jobs), batch_size):
        chunk = jobs[i : i + batch_size]
        width = max(len(w) for _, w in chunk)
        batch = torch.zeros((len(chunk), width), dtype=torch.int64)
        targets = torch.full((len(chunk), width - 1), -100, dtype=torch.int64)
        for row, (_, w) in enumerate(chunk):
            batch[row, : len(w)] = torch.from_numpy(w)
            targets[row, : len(w) - 1] = torch.from_numpy(w[1:])
        logits = forward(batch[:, :-1]).float()  # (B, T, V)
        losses = F.cross_entropy(
            logits.transpose(1, 2), targets, ignore_index=-100, reduction="none"
        )  # (B, T)
        for row, (d, w) in enumerate(chunk):
            nll[d] += float(losses[row, : len(w) - 1].double().sum())
            tokens[d] += len(w) - 1
    return pd.DataFrame({"nll": nll, "tokens": tokens})


def loss_by(docs: pd.DataFrame, scores: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Per-token loss per value of each of ``columns`` (long format: column, group, loss, tokens, docs)."""
    joined = docs.reset_index(drop=True).join(scores)
    rows = [{"column": "all", "group": "all", **_summary(joined)}]
    for col in columns:
        if col in joined.columns:
            for value, part in joined.groupby(joined[col].fillna("unknown").astype(str)):
                rows.append({"column": col, "group": value, **_summary(part)})
    return pd.DataFrame(rows)


def _summary(part: pd.DataFrame) -> dict[str, float]:
    tokens = int(part["tokens"].sum())
    return {
        "loss": float(part["nll"].sum() / tokens) if tokens else float("nan"),
        "tokens": tokens,
        "docs": len(part),
    }


def mean_loss(scores: pd.DataFrame) -> float:
    """Per-token loss over every scored document."""
    return float(scores["nll"].sum() / scores["tokens"].sum())


@torch.no_grad()
def choice_logprobs(
    forward: Forward, context: list[int], choices: list[list[int]], max_len: int
) -> list[float]:
    """Summed log-probability of each choice after ``context``, in one batch (the context's start is cut so
    that context + choice fits ``max_len`` tokens)."""
    rows = [(context + c)[-max_len:] for c in choices]
    width = max(len(r) for r in rows)
    batch = torch.zeros((len(rows), width), dtype=torch.int64)
    for i, r in enumerate(rows):
        batch[i, : len(r)] = torch.tensor(r)
    logp = torch.log_softmax(forward(batch).float(), dim=-1)  # (B, T, V)
    out = []
    for i, (r, c) in enumerate(zip(rows, choices, strict=True)):
        pos = torch.arange(len(r) - len(c), len(r))  # the choice's tokens, predicted from the position before
        out.append(float(logp[i, pos - 1, torch.tensor(c)].sum()))
    return out
