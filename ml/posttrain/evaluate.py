"""Held-out evaluation of a chat policy (Llama 3 paper §4.1 rounds, judged by verifiers).

* ``pass_rate_<group>``: greedy answers (KV-cache generation, stop at ``<|eot_id|>``) to held-out prompts
  that their verifier accepts — math: every step and the answer checked; code: the unit tests pass in the
  sandbox; qa: the answer span.
* ``answer_loglik_<group>``: mean log-likelihood per token of the verified reference response after its
  prompt (content tokens only): the signal that moves while a tiny model passes nothing.
* ``pref_accuracy``: share of held-out preference pairs where the policy gives the chosen response a
  higher log-probability than the rejected one (summed over content tokens).
* :func:`win_rate`: the reward model prefers one policy's greedy answers over another's (ties count half).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

import torch
from tokenizers import Tokenizer

from ml.infer.generate import SamplingConfig, generate
from ml.model.llama import Llama
from ml.posttrain.code_synth import check_candidate
from ml.posttrain.math_synth import verify_solution
from ml.posttrain.preferences import code_source, code_task_of
from ml.posttrain.qa import verify_answer
from ml.posttrain.rejection import score_replies
from ml.posttrain.sandbox import SandboxLimits
from ml.tokens.chat import ChatFormatError, encode_chat_masked, parse_reply
from ml.tokens.tokenizer import EOM, EOT, PAD, special_token_id
from ml.train.tasks.chat_data import pad_right, shifted_labels
from ml.train.tasks.dpo import token_logps

GROUPS = ("math", "code", "qa")


def group_of(record: Mapping[str, Any]) -> str:
    if "tests" in record:
        return "code"
    return "qa" if record.get("family") == "qa" else "math"


def passes(record: Mapping[str, Any], reply: str, limits: SandboxLimits) -> bool:
    """The record's verifier accepts ``reply``."""
    group = group_of(record)
    if group == "code":
        return check_candidate(code_task_of(record), code_source(reply), limits).ok
    if group == "qa":
        return verify_answer(reply, record["answer"])
    return verify_solution(reply, Fraction(record["answer"])).ok


def greedy_replies(
    model: Llama, tok: Tokenizer, prompts: Sequence[Sequence[Mapping[str, Any]]], max_new_tokens: int
) -> list[str]:
    """Each prompt's greedy assistant reply (the text, also when cut at ``max_new_tokens``)."""
    if not prompts:
        return []
    ids = [encode_chat_masked(list(p), tok, add_generation_prompt=True).ids for p in prompts]
    stops = [special_token_id(tok, EOT), special_token_id(tok, EOM)]
    out = generate(model, ids, stops, SamplingConfig(max_new_tokens, 0.0), special_token_id(tok, PAD))
    replies = []
    for row in out.tokens:
        try:
            replies.append(parse_reply(row, tok)["content"])
        except ChatFormatError:
            replies.append(tok.decode(row, skip_special_tokens=True))
    return replies


@torch.no_grad()
def response_logps(
    model: Llama,
    tok: Tokenizer,
    prompts: Sequence[Sequence[Mapping]],
    responses: Sequence[str],
    batch: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of log p over each response's content tokens, number of those tokens), each (N,)."""
    sums, counts = [], []
    pad = special_token_id(tok, PAD)
    model.eval()
    for start in range(0, len(responses), batch):
        rows = [
            shifted_labels(*_ids_and_mask(tok, prompts[i], responses[i]))
            for i in range(start, min(start + batch, len(responses)))
        ]
        logits = model(pad_right([r[0] for r in rows], pad))
        logp, mask = token_logps(logits, pad_right([r[1] for r in rows], -100))
        sums.append(logp.sum(-1)), counts.append(mask.sum(-1))
    if not sums:
        return torch.zeros(0), torch.zeros(0)
    return torch.cat(sums), torch.cat(counts)


def _ids_and_mask(tok: Tokenizer, prompt: Sequence[Mapping], response: str) -> tuple[list[int], list[bool]]:
    enc = encode_chat_masked([*prompt, {"role": "assistant", "content": response}], tok)
    return enc.ids, enc.content


def evaluate_policy(
    model: Llama,
    tok: Tokenizer,
    heldout: Sequence[Mapping[str, Any]],
    pairs: Sequence[Mapping[str, Any]],
    max_new_tokens: int,
    limits: SandboxLimits,
) -> tuple[dict[str, float], list[str]]:
    """(metrics, greedy replies in ``heldout`` order) of ``model`` on held-out SFT records and pairs."""
    prompts = [r["messages"][:-1] for r in heldout]
    replies = greedy_replies(model, tok, prompts, max_new_tokens)
    ok = [passes(r, reply, limits) for r, reply in zip(heldout, replies, strict=True)]
    logp, n = response_logps(model, tok, prompts, [r["messages"][-1]["content"] for r in heldout])
    metrics: dict[str, float] = {}
    for g in GROUPS:
        idx = [i for i, r in enumerate(heldout) if group_of(r) == g]
        if idx:
            metrics[f"pass_rate_{g}"] = sum(ok[i] for i in idx) / len(idx)
            metrics[f"answer_loglik_{g}"] = float(logp[idx].sum() / n[idx].sum())
            metrics[f"items_{g}"] = len(idx)
    if pairs:
        chosen, _ = response_logps(model, tok, [p["prompt"] for p in pairs], [p["chosen"] for p in pairs])
        rejected, _ = response_logps(model, tok, [p["prompt"] for p in pairs], [p["rejected"] for p in pairs])
        metrics["pref_accuracy"] = float((chosen > rejected).float().mean())
        metrics["pref_pairs"] = len(pairs)
    return metrics, replies


def win_rate(
    reward_model: Llama,
    tok: Tokenizer,
    prompts: Sequence[Sequence[Mapping[str, Any]]],
    ours: Sequence[str],
    theirs: Sequence[str],
) -> float:
    """Share of prompts where the reward model scores ``ours`` above ``theirs`` (a tie counts half)."""
    if not prompts:
        return float("nan")
    wins = 0.0
    for prompt, a, b in zip(prompts, ours, theirs, strict=True):
        ra, rb = score_replies(reward_model, tok, prompt, [_reply(a), _reply(b)])
        wins += 1.0 if ra > rb else 0.5 if ra == rb else 0.0
    return wins / len(prompts)


def _reply(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text if text.strip() else " "}


def reward_accuracy(
    reward_model: Llama, tok: Tokenizer, pairs: Sequence[Mapping[str, Any]]
) -> tuple[float, float]:
    """(share of pairs where the reward model scores chosen above rejected, mean reward gap)."""
    if not pairs:
        return float("nan"), float("nan")
    gaps = []
    for p in pairs:
        rc, rr = score_replies(reward_model, tok, p["prompt"], [_reply(p["chosen"]), _reply(p["rejected"])])
        gaps.append(rc - rr)
    return sum(g > 0 for g in gaps) / len(gaps), sum(gaps) / len(gaps)
