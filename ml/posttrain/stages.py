"""The post-training stages of one round (Llama 3 paper §4.1, Figure 7): one config per stage.

A round trains a reward model, rejection-samples the previous round's model, fine-tunes it (SFT), runs DPO
against the SFT model, and averages the DPO runs into the round's chat model; round k starts from round
k-1's chat model, round 1 from the base model. :class:`RoundsConfig` holds how many rounds run (paper: 6).
Training configs are the engine's (ml/train/config.py) with the task set; ``init_from`` is filled in by
whoever launches the stage (the previous model's HF directory).

tiny presets are sized so both rounds of ``make run`` fit in about 4 minutes on a 2-core CPU. Measured with
``lifecycle run --preset tiny`` (in-process torch work on one thread, see assets/posttrain/rounds.py) on the
2-core CPU shared with other jobs (load average 4.2 falling to 1.5), per asset in round 1 / round 2, Dagster
step included: reward model 11.3 / 10.1 s, rejection samples 9.0 / 5.8 s, SFT 23.0 / 14.5 s, DPO (two runs
and the reference log-probs) 19.8 / 14.4 s, chat model (average + evaluation of three models) 6.5 / 4.5 s;
both rounds 123 s (synthetic data 9.1 s once per snapshot, rounds table 1.0 s). Under a load average of 7-8
the same rounds took 241 s.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from ml.config import ConfigError, StageConfig
from ml.infer.generate import SamplingConfig
from ml.safety.tuning import SafetyMixConfig
from ml.train.config import TrainConfig

PAPER_ROUNDS = 6  # Llama 3 paper §4.1


def _tiny_train(task: str, steps: int, batch_size: int, lr: float) -> dict[str, Any]:
    """A short CPU run of ``task`` from the tiny base model (context 1,024), chats packed/padded to 384
    (synthetic chats are at most 256 tokens, a rejection sample adds at most 96)."""
    return dict(
        preset="tiny",
        task=task,
        model=dict(max_seq_len=1024),
        optimizer=dict(lr=lr),
        schedule=dict(warmup_steps=max(1, steps // 10)),
        data=dict(seq_len=384, batch_size=batch_size),
        steps=steps,
        eval_every=steps,
        eval_batches=2,
        ckpt_every=steps,
        keep_last=1,
    )


def _paper_train(preset: str, task: str, lr: float) -> dict[str, Any]:
    return dict(preset=preset, task=task, optimizer=dict(lr=lr), steps=2_000, schedule=dict(warmup_steps=100))


def _presets(task: str, tiny: dict[str, Any], lr: float, safety: bool = False) -> dict[str, dict[str, Any]]:
    """Per preset the stage's training run; with ``safety``, the safety mix of the same preset too."""
    presets = {
        "tiny": dict(train=tiny),
        "small": dict(train=_paper_train("small", task, lr * 10)),
        **{p: dict(train=_paper_train(p, task, lr)) for p in ("8b", "70b", "405b")},
    }
    return {p: v | (dict(safety=p) if safety else {}) for p, v in presets.items()}


def _check_task(cfg: Any, task: str) -> None:
    if cfg.train.task != task:
        raise ConfigError(f"{type(cfg).__name__}.train.task must be {task!r}, got {cfg.train.task!r}")


@dataclasses.dataclass(frozen=True)
class RoundsConfig(StageConfig):
    """rounds: post-training rounds that run (paper 6; tiny 2 to fit the CPU budget)."""

    rounds: int = PAPER_ROUNDS

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(rounds=2),
        **{p: dict(rounds=PAPER_ROUNDS) for p in ("small", "8b", "70b", "405b")},
    }

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ConfigError(f"RoundsConfig.rounds must be >= 1, got {self.rounds}")


@dataclasses.dataclass(frozen=True)
class RewardConfig(StageConfig):
    """The reward model's run (from the base model, scalar head = the reward token's logit)."""

    train: TrainConfig = TrainConfig(task="reward")

    # tiny: 16 steps of 4 pairs, lr 1e-3 (chosen); 11.3 / 10.1 s per round (see the module doc)
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = _presets(
        "reward", _tiny_train("reward", 16, 4, 1e-3), 1e-5
    )

    def __post_init__(self) -> None:
        _check_task(self, "reward")


@dataclasses.dataclass(frozen=True)
class RejectionConfig(StageConfig):
    """k samples per prompt (paper 10-30) for ``n_prompts`` training prompts of each verifiable family."""

    k: int = 10
    n_prompts: int = 64
    max_new_tokens: int = 256
    temperature: float = 0.8  # chosen; the paper does not publish its sampling settings
    top_p: float = 0.95
    seed: int = 0
    sandbox_cpu_seconds: int = 5
    sandbox_wall_seconds: float = 20.0

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(k=4, n_prompts=8, max_new_tokens=96),  # 9.0 / 5.8 s per round
        "small": dict(k=10, n_prompts=2_000),
        **{p: dict(k=30, n_prompts=20_000, max_new_tokens=2048) for p in ("8b", "70b", "405b")},
    }

    def __post_init__(self) -> None:
        if self.k < 1 or self.n_prompts < 1:
            raise ConfigError(f"RejectionConfig: k={self.k} and n_prompts={self.n_prompts} must be >= 1")

    @property
    def sampling(self) -> SamplingConfig:
        return SamplingConfig(self.max_new_tokens, self.temperature, self.top_p, self.seed)


@dataclasses.dataclass(frozen=True)
class SFTConfig(StageConfig):
    """SFT of the previous round's model on the synthetic train split, the round's rejection samples and
    the safety chats (``safety.share`` of the train records; ml/safety/tuning.py)."""

    train: TrainConfig = TrainConfig(task="sft")
    safety: SafetyMixConfig = SafetyMixConfig()

    # tiny: 24 steps of 8 packed rows of 384 tokens, lr 1e-3 (chosen); 23.0 / 14.5 s per round
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = _presets(
        "sft", _tiny_train("sft", 24, 8, 1e-3), 1e-5, safety=True
    )

    def __post_init__(self) -> None:
        _check_task(self, "sft")


@dataclasses.dataclass(frozen=True)
class DPOConfig(StageConfig):
    """DPO runs from the SFT model (also the reference), one per seed, on the synthetic and rejection pairs
    and the safety pairs (``safety.share``); the chat model averages them."""

    train: TrainConfig = TrainConfig(task="dpo")
    seeds: tuple[int, ...] = (1337, 1338)
    safety: SafetyMixConfig = SafetyMixConfig()

    # tiny: 10 steps of 4 pairs, lr 2e-4 (chosen), two seeds; 19.8 / 14.4 s per round (both runs and the
    # reference log-probs)
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = _presets(
        "dpo", _tiny_train("dpo", 10, 4, 2e-4), 1e-6, safety=True
    )

    def __post_init__(self) -> None:
        _check_task(self, "dpo")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"DPOConfig.seeds must be distinct and at least one, got {self.seeds}")


@dataclasses.dataclass(frozen=True)
class ChatEvalConfig(StageConfig):
    """Held-out evaluation of a round: up to ``max_items`` per family, greedy answers of ``max_new_tokens``."""

    max_items: int = 500
    max_new_tokens: int = 256
    sandbox_cpu_seconds: int = 5
    sandbox_wall_seconds: float = 20.0

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(max_items=16, max_new_tokens=96),  # 6.5 / 4.5 s per round
        **{p: dict() for p in ("small", "8b", "70b", "405b")},
    }
