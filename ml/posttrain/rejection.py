"""Rejection sampling (Llama 3 paper §4.2.2): K samples per prompt from the latest policy, the best by the RM.

Each prompt (chat messages ending with a user or ipython turn) is sampled K times in one batch with the KV
cache (ml/infer/generate.py). A sample counts when it ends as an assistant message (``<|eot_id|>``, or a
tool call ending in ``<|eom_id|>``) — a sample cut at ``max_new_tokens`` is discarded unless
``require_stop=False``. Each kept sample is scored by the reward model on the full chat (prompt + the
sample as an assistant turn), read at its last token (ml/train/tasks/reward.py), and the highest-scoring
one is kept with every score, so later rounds can see the spread.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tokenizers import Tokenizer

from ml.infer.generate import SamplingConfig, generate
from ml.model.llama import Llama
from ml.tokens.chat import ChatFormatError, encode_chat_masked, parse_reply
from ml.tokens.tokenizer import EOM, EOT, PAD, special_token_id
from ml.train.tasks.chat_data import pad_right
from ml.train.tasks.reward import REWARD_TOKEN, sequence_rewards


@dataclasses.dataclass(frozen=True)
class RejectionSample:
    """best: the highest-reward assistant message (None when no sample counted); samples: every sample's
    message (None when discarded) with its reward (None when discarded)."""

    prompt_id: str
    best: dict[str, Any] | None
    best_reward: float | None
    samples: list[dict[str, Any] | None]
    rewards: list[float | None]


def _reply(ids: list[int], tok: Tokenizer, require_stop: bool) -> dict[str, Any] | None:
    try:
        return parse_reply(ids, tok)
    except ChatFormatError:
        if require_stop:
            return None
        return {"role": "assistant", "content": tok.decode(ids, skip_special_tokens=True)}


@torch.no_grad()
def score_replies(
    reward_model: Llama,
    tok: Tokenizer,
    prompt: Sequence[Mapping[str, Any]],
    replies: Sequence[Mapping[str, Any]],
) -> list[float]:
    """The RM's reward of each reply after ``prompt`` (the reward token's logit at the reply's last token)."""
    if not replies:
        return []
    seqs = [encode_chat_masked([*prompt, dict(r)], tok).ids for r in replies]
    device = reward_model.embed_tokens.weight.device
    inputs = pad_right(seqs, special_token_id(tok, PAD)).to(device)
    last = torch.tensor([len(s) - 1 for s in seqs], device=device)
    return sequence_rewards(reward_model, inputs, last, special_token_id(tok, REWARD_TOKEN)).tolist()


def rejection_sample(
    policy: Llama,
    reward_model: Llama,
    tok: Tokenizer,
    prompts: Sequence[tuple[str, Sequence[Mapping[str, Any]]]],
    k: int,
    sampling: SamplingConfig,
    require_stop: bool = True,
) -> list[RejectionSample]:
    """For each ``(prompt_id, messages)``: ``k`` samples from ``policy``, the best by ``reward_model``."""
    if k < 1:
        raise ValueError(f"rejection_sample: k must be >= 1, got {k}")
    was_training = reward_model.training
    reward_model.eval()
    encoded = [encode_chat_masked(list(m), tok, add_generation_prompt=True).ids for _, m in prompts]
    stops = [special_token_id(tok, EOT), special_token_id(tok, EOM)]
    out = generate(
        policy, [ids for ids in encoded for _ in range(k)], stops, sampling, special_token_id(tok, PAD)
    )
    results = []
    for n, (prompt_id, messages) in enumerate(prompts):
        samples = [_reply(ids, tok, require_stop) for ids in out.tokens[n * k : (n + 1) * k]]
        kept = [s for s in samples if s is not None]
        scores = iter(score_replies(reward_model, tok, messages, kept))
        rewards = [next(scores) if s is not None else None for s in samples]
        valid = [(r, i) for i, r in enumerate(rewards) if r is not None]
        best_reward, best_i = (
            max(valid, key=lambda t: (t[0], -t[1])) if valid else (None, None)
        )  # first of ties
        best = samples[best_i] if best_i is not None else None
        results.append(RejectionSample(prompt_id, best, best_reward, samples, rewards))
    reward_model.train(was_training)
    return results
