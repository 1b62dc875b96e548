"""Learning-rate and batch-size schedules as pure functions of the step / tokens seen.

LR: linear warmup, then cosine (pre-training), linear (annealing: to 0) or constant. The 405B recipe
(Llama 3 paper §3.4.1): peak 8e-5, 8,000 warmup steps, cosine to 8e-7 (``min_lr_ratio`` 0.01) over 1.2M
steps; the scaling-law sweep decays to 0.1x peak (§3.2.1); annealing decays linearly to 0 (§3.4.3).

Batch ramp (405B, §3.4.1): 4M tokens at seq 4,096, 8M tokens at seq 8,192 after 252M tokens, 16M
tokens after 2.87T tokens.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal, Protocol

Decay = Literal["cosine", "linear", "constant"]


class ScheduleLike(Protocol):
    peak_lr: float
    warmup_steps: int
    total_steps: int
    min_lr_ratio: float
    decay: str


@dataclasses.dataclass(frozen=True)
class LRSchedule:
    """``lr_at(step)``: the LR of the update that follows ``step`` completed updates (0-based)."""

    peak_lr: float
    warmup_steps: int
    total_steps: int
    min_lr_ratio: float = 0.1  # scaling sweep: decay to 0.1x peak (Llama 3 paper §3.2.1)
    decay: Decay = "cosine"

    def __post_init__(self) -> None:
        if self.decay not in ("cosine", "linear", "constant"):
            raise ValueError(f"LRSchedule.decay: {self.decay!r} is not cosine | linear | constant")
        if self.warmup_steps < 0 or self.total_steps < 1:
            raise ValueError(f"LRSchedule: need warmup_steps >= 0 and total_steps >= 1, got {self}")
        if self.warmup_steps > self.total_steps:
            raise ValueError(f"LRSchedule: warmup_steps {self.warmup_steps} > total_steps {self.total_steps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"LRSchedule.min_lr_ratio: {self.min_lr_ratio} is not in [0, 1]")


def lr_at(step: int, sched: ScheduleLike) -> float:
    """LR for 0-based ``step``.

    Warmup: ``peak * (step + 1) / warmup`` for ``step < warmup`` (reaches peak on the last warmup step).
    Then with progress ``p = (step - warmup) / (total - warmup)`` clipped to [0, 1]:
    cosine ``min + (peak - min) * (1 + cos(pi p)) / 2``, linear ``peak + (min - peak) * p``, constant ``peak``;
    ``min = min_lr_ratio * peak``. So ``lr_at(total) == min`` and the LR stays there afterwards.
    """
    if step < 0:
        raise ValueError(f"lr_at: step must be >= 0, got {step}")
    peak, warmup, total = sched.peak_lr, sched.warmup_steps, sched.total_steps
    if step < warmup:
        return peak * (step + 1) / warmup
    if sched.decay == "constant":
        return peak
    min_lr = sched.min_lr_ratio * peak
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    if sched.decay == "cosine":
        return min_lr + (peak - min_lr) * 0.5 * (1.0 + math.cos(math.pi * p))
    if sched.decay == "linear":
        return peak + (min_lr - peak) * p
    raise ValueError(f"lr_at: unknown decay {sched.decay!r}")


# ---- batch / sequence ramp ------------------------------------------------------------------------

# "4M tokens" read as 2**22 = 1,024 sequences of 4,096 (chosen: whole sequences per batch); 8M = 1,024 x 8,192;
# 16M = 2,048 x 8,192. The thresholds (252M, 2.87T tokens) are the paper's decimal figures.
PAPER_405B_RAMP: tuple[tuple[int, int, int], ...] = (
    (0, 4 * 2**20, 4096),
    (252_000_000, 8 * 2**20, 8192),
    (2_870_000_000_000, 16 * 2**20, 8192),
)


def batch_schedule(
    tokens_seen: int, ramp: tuple[tuple[int, int, int], ...] = PAPER_405B_RAMP
) -> tuple[int, int]:
    """``(batch_tokens, seq_len)`` once ``tokens_seen`` tokens were trained on.

    ``ramp`` is a tuple of ``(from_tokens, batch_tokens, seq_len)`` stages sorted by ``from_tokens`` with
    the first at 0; a stage applies from the step at which ``tokens_seen >= from_tokens``.
    """
    if not ramp or ramp[0][0] != 0:
        raise ValueError(f"batch_schedule: ramp must start at 0 tokens, got {ramp!r}")
    if any(a[0] >= b[0] for a, b in zip(ramp, ramp[1:], strict=False)):
        raise ValueError(f"batch_schedule: ramp thresholds must increase, got {ramp!r}")
    if tokens_seen < 0:
        raise ValueError(f"batch_schedule: tokens_seen must be >= 0, got {tokens_seen}")
    batch_tokens, seq_len = ramp[0][1], ramp[0][2]
    for start, bt, sl in ramp:
        if tokens_seen >= start:
            batch_tokens, seq_len = bt, sl
    return batch_tokens, seq_len
