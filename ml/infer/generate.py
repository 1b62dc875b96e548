"""Batched sampling from our Llama with a KV cache: temperature, nucleus (top-p), stop tokens.

Prompts of different lengths are left-padded into one (B, P) batch: pads get no attention from real tokens
and every row's RoPE positions start at 0 at its first real token, so a row's logits equal running that
prompt alone (tested). The prompt is run once (prefill), then one token per step reads the cache.
Temperature 0 is greedy decoding. A row stops at its first stop token (``<|eot_id|>`` for chat), which is
kept as the last token of its output; generation ends when every row has stopped or after
``max_new_tokens``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import torch

from ml.model.llama import KVCache, Llama


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """max_new_tokens: tokens generated per row at most; temperature: 0 = greedy, else logits / T;
    top_p: keep the smallest set of most likely tokens whose probability reaches top_p (1 = all);
    seed: of the sampling generator, so a call is reproducible."""

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"SamplingConfig.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"SamplingConfig.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingConfig.top_p must be in (0, 1], got {self.top_p}")


@dataclasses.dataclass(frozen=True)
class GenerationResult:
    """tokens: each row's new tokens (its stop token last when ``stopped``); tokens_per_s: new tokens
    of all rows over the wall time of prefill and decoding."""

    tokens: list[list[int]]
    stopped: list[bool]
    prompt_tokens: int
    new_tokens: int
    seconds: float
    tokens_per_s: float


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Logits (B, V) with -inf outside each row's nucleus: the most likely tokens, in order, while the
    probability before them is < top_p (the top token always stays)."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V)
    probs = sorted_logits.softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs  # probability mass of the tokens ranked above
    drop_sorted = before >= top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Next token of each row (B,) from its last-position logits (B, V)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = top_p_filter(logits.float() / temperature, top_p).softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _left_padded(prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device):
    """(B, P) tokens, real-token mask and RoPE positions of left-padded prompts."""
    P = max(len(p) for p in prompts)
    tokens = torch.full((len(prompts), P), pad_id, dtype=torch.long)
    real = torch.zeros(len(prompts), P, dtype=torch.bool)
    for b, p in enumerate(prompts):
        tokens[b, P - len(p) :] = torch.tensor(list(p), dtype=torch.long)
        real[b, P - len(p) :] = True
    positions = (real.long().cumsum(dim=1) - 1).clamp(min=0)  # 0 at each row's first real token
    return tokens.to(device), real.to(device), positions.to(device)


def _check_prompts(prompts: Sequence[Sequence[int]], max_len: int, vocab: int) -> None:
    if not prompts:
        raise ValueError("generate: no prompts")
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"generate: prompt #{i} is empty")
        if len(p) > max_len:
            raise ValueError(
                f"generate: prompt #{i} has {len(p)} tokens plus max_new_tokens exceeds max_seq_len"
            )
        if min(p) < 0 or max(p) >= vocab:
            raise ValueError(f"generate: prompt #{i} has a token id outside [0, {vocab})")


@torch.no_grad()
def generate(
    model: Llama,
    prompts: Sequence[Sequence[int]],
    stop_ids: Sequence[int],
    cfg: SamplingConfig = SamplingConfig(),
    pad_id: int = 0,
) -> GenerationResult:
    """Sample up to ``cfg.max_new_tokens`` tokens after each prompt (token ids), all rows in one batch."""
    mcfg = model.cfg
    _check_prompts(prompts, mcfg.max_seq_len - cfg.max_new_tokens, mcfg.vocab_size)
    device = model.embed_tokens.weight.device
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    tokens, real, positions = _left_padded(prompts, pad_id, device)
    B, P = tokens.shape
    cache = KVCache.empty(mcfg, B, P + cfg.max_new_tokens, device, model.embed_tokens.weight.dtype)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    stops = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=device)
    logits = model.forward_cached(tokens, positions, real, cache)[:, -1]  # (B, V)
    next_pos = positions[:, -1] + 1  # (B,)
    out = torch.empty(B, 0, dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    lengths = torch.zeros(B, dtype=torch.long, device=device)
    for _ in range(cfg.max_new_tokens):
        nxt = sample_next(logits, cfg.temperature, cfg.top_p, generator)  # (B,)
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        out = torch.cat([out, nxt[:, None]], dim=1)
        lengths += (~done).long()
        done |= torch.isin(nxt, stops)
        if bool(done.all()):
            break
        logits = model.forward_cached(nxt[:, None], next_pos[:, None], torch.ones_like(done)[:, None], cache)[
            :, -1
        ]
        next_pos += 1
    seconds = time.perf_counter() - t0
    model.train(was_training)
    rows = [out[b, : int(lengths[b])].tolist() for b in range(B)]
    stopped = [bool(r) and r[-1] in set(stop_ids) for r in rows]
    new = sum(len(r) for r in rows)
    return GenerationResult(
        rows, stopped, sum(len(p) for p in prompts), new, seconds, new / max(seconds, 1e-9)
    )
