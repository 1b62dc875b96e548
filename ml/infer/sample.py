"""A minimal sampler for evaluations: greedy or temperature sampling, batched, no KV cache.

Every step runs the whole (left-padded) batch through the model and reads the logits of the last position
only, so a step costs one forward over ``prompt + generated`` tokens. That is slow for long generations
and large models, and enough for the evaluations of small models (safety, injection, insecure code), where
answers are a few dozen tokens.

Batching without a padding mask: each row is ``[pad ... pad | prompt | generated]`` and the padding is a
document of its own (``doc_ids`` 0, the text 1), so the model's document-masked attention keeps the text
from attending to the padding and, with RoPE positions restarting per document, the prompt starts at
position 0 exactly as it would alone. A prompt longer than the context window keeps its last tokens
(``left-truncated``), leaving room for ``max_new_tokens``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from tokenizers import Tokenizer

from ml.config import ConfigError, StageConfig
from ml.tokens.tokenizer import EOM, EOS, EOT, PAD, encode_chat, special_token_id


@dataclasses.dataclass(frozen=True)
class SampleConfig(StageConfig):
    """How answers are sampled: length, temperature (0 = greedy), top-k, batch size, seed."""

    max_new_tokens: int = 64
    temperature: float = 0.0  # chosen: greedy, so an evaluation is reproducible and compares versions
    top_k: int = 0  # 0 = the whole vocabulary
    batch_size: int = 16
    seed: int = 0
    max_prompt_tokens: int = 0  # keep at most the last N prompt tokens (0: whatever the context leaves)

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # chosen: a near-random 1.8M model without a KV cache: every step re-reads the prompt, so prompts
        # keep their last 96 tokens (long-context ones lose their start, counted as truncated)
        "tiny": dict(max_new_tokens=16, max_prompt_tokens=96),
        "small": dict(max_new_tokens=128),
        "8b": dict(max_new_tokens=256),
        "70b": dict(max_new_tokens=256),
        "405b": dict(max_new_tokens=256),
    }

    def __post_init__(self) -> None:
        if self.max_prompt_tokens < 0:
            raise ConfigError(f"SampleConfig.max_prompt_tokens must be >= 0, got {self.max_prompt_tokens}")
        for name in ("max_new_tokens", "batch_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"SampleConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.temperature < 0 or self.top_k < 0:
            raise ConfigError(
                f"SampleConfig: temperature and top_k must be >= 0, got {self.temperature}, {self.top_k}"
            )


def prompt_window(max_seq_len: int, cfg: SampleConfig) -> int:
    """Prompt tokens kept: what the context leaves after the answer, capped by ``max_prompt_tokens``."""
    window = max_seq_len - cfg.max_new_tokens
    return min(window, cfg.max_prompt_tokens) if cfg.max_prompt_tokens else window


def _next_token(logits: torch.Tensor, cfg: SampleConfig, gen: torch.Generator) -> torch.Tensor:
    """(B, V) logits -> (B,) token ids: argmax, or a draw from softmax(logits / T) over the top k."""
    if cfg.temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / cfg.temperature
    if cfg.top_k:
        kth = logits.topk(min(cfg.top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=gen).squeeze(-1)


def _left_padded(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) tokens and (B, L) doc_ids: padding is document 0, the prompt document 1."""
    width = max(len(p) for p in prompts)
    tokens = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    doc_ids = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        if p:
            tokens[i, width - len(p) :] = torch.tensor(list(p), dtype=torch.long)
            doc_ids[i, width - len(p) :] = 1
    return tokens, doc_ids


@torch.no_grad()
def sample_batch(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    cfg: SampleConfig,
    stop_ids: Sequence[int] = (),
    pad_id: int = 0,
    gen: torch.Generator | None = None,
) -> list[list[int]]:
    """New token ids for each prompt (without the prompt), cut before the first stop token."""
    window = prompt_window(model.cfg.max_seq_len, cfg)
    if window <= 0:
        raise ValueError(
            f"max_new_tokens={cfg.max_new_tokens} leaves no room in max_seq_len={model.cfg.max_seq_len}"
        )
    prompts = [list(p)[-window:] for p in prompts]
    if any(not p for p in prompts):
        raise ValueError("every prompt needs at least one token")
    gen = gen or torch.Generator().manual_seed(cfg.seed)
    device = next(model.parameters()).device
    tokens, doc_ids = (t.to(device) for t in _left_padded(prompts, pad_id))
    out = torch.empty((len(prompts), 0), dtype=torch.long, device=device)
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    stops = torch.tensor(list(stop_ids), dtype=torch.long, device=device)
    for _ in range(cfg.max_new_tokens):
        h = model.hidden_states(tokens, doc_ids)[:, -1]  # (B, D): the last position only
        nxt = _next_token(model.lm_head(h).float().cpu(), cfg, gen).to(device)  # (B,); draws on the CPU
        out = torch.cat([out, nxt[:, None]], dim=1)
        done |= torch.isin(nxt, stops)
        if bool(done.all()):
            break
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        doc_ids = torch.cat([doc_ids, doc_ids[:, -1:]], dim=1)
    return [_cut(row.tolist(), set(stop_ids)) for row in out.cpu()]


def _cut(ids: list[int], stops: set[int]) -> list[int]:
    return next((ids[:i] for i, t in enumerate(ids) if t in stops), ids)


def sample(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    cfg: SampleConfig,
    stop_ids: Sequence[int] = (),
    pad_id: int = 0,
) -> list[list[int]]:
    """:func:`sample_batch` over ``cfg.batch_size`` prompts at a time, prompts of similar length together
    (less padding); results in the input order. One generator seeded by ``cfg.seed`` drives every draw."""
    gen = torch.Generator().manual_seed(cfg.seed)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(order), cfg.batch_size):
        rows = order[start : start + cfg.batch_size]
        answers = sample_batch(model, [prompts[i] for i in rows], cfg, stop_ids, pad_id, gen)
        for i, ids in zip(rows, answers, strict=True):
            results[i] = ids
    return results


@dataclasses.dataclass(frozen=True)
class ChatAnswers:
    texts: list[str]  # the next assistant turn of each chat, special tokens removed
    truncated: int  # chats whose first tokens did not fit the context window


def answer_chats(
    model: torch.nn.Module, tok: Tokenizer, chats: Sequence[Sequence[dict[str, str]]], cfg: SampleConfig
) -> ChatAnswers:
    """The model's next assistant turn for each chat (Llama 3 chat format); generation stops at
    ``<|eot_id|>``, ``<|eom_id|>`` or ``<|end_of_text|>``."""
    prompts = [encode_chat(chat, tok, add_generation_prompt=True) for chat in chats]
    stops = [special_token_id(tok, t) for t in (EOT, EOM, EOS)]
    ids = sample(model, prompts, cfg, stop_ids=stops, pad_id=special_token_id(tok, PAD))
    window = prompt_window(model.cfg.max_seq_len, cfg)
    return ChatAnswers(
        texts=[tok.decode(row, skip_special_tokens=True) for row in ids],
        truncated=sum(len(p) > window for p in prompts),
    )
