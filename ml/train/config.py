"""Training configs: one ``TrainConfig`` nesting typed model, optimizer, schedule and data configs.

Presets ``tiny`` (CPU, CI), ``small`` (~125M on one GPU) and ``8b`` / ``70b`` / ``405b`` (Llama 3 paper
§3.4.1 recipe at the Table 3 shapes). ``data.batch_size`` is the *global* number of sequences per
micro-batch (split evenly over ranks), so one config trains the same model at any world size; tokens per
optimizer step are ``data.batch_size * data.grad_accum * data.seq_len`` unless ``schedule.batch_ramp`` sets
them. Nested configs are written in YAML as mappings or preset names (ml/config.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from ml.config import ConfigError, StageConfig
from ml.model.llama import ModelConfig
from ml.train.dist import COMPILE_SCOPES
from ml.train.schedule import PAPER_405B_RAMP, LRSchedule, batch_schedule

TASKS = ("pretrain", "sft", "reward", "dpo")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig(StageConfig):
    """AdamW with decoupled weight decay on matrices only, and global gradient-norm clipping."""

    lr: float = 1e-3  # chosen for tiny models; the paper's peaks are per size (presets)
    betas: tuple[float, float] = (0.9, 0.95)  # chosen: Llama 2's AdamW betas (Llama 3 does not restate them)
    eps: float = 1e-8  # chosen: PyTorch default (not published)
    weight_decay: float = 0.1  # Llama 3 paper §3.2.1 sweep: weight decay 0.1 (decoupled)
    grad_clip: float = 1.0  # chosen: Llama 2's clipping (not restated for Llama 3); 0 = off
    fused: str = "auto"  # auto (fused AdamW on GPU) | on | off

    def __post_init__(self) -> None:
        if len(self.betas) != 2:
            raise ConfigError(f"OptimizerConfig.betas must hold two numbers, got {self.betas!r}")
        if self.fused not in ("auto", "on", "off"):
            raise ConfigError(f"OptimizerConfig.fused must be auto | on | off, got {self.fused!r}")


@dataclasses.dataclass(frozen=True)
class ScheduleConfig(StageConfig):
    """Linear warmup then ``decay`` to ``min_lr_ratio`` x peak; optional batch/sequence-length ramp."""

    warmup_steps: int = 10
    decay: str = "cosine"  # cosine (pre-training) | linear (annealing: to 0) | constant
    decay_steps: int = 0  # length of the LR schedule; 0 = the run's ``steps``
    min_lr_ratio: float = 0.1  # Llama 3 paper §3.2.1 sweep: decay to 0.1x peak; 405B: 8e-7 / 8e-5 = 0.01
    # (from_tokens, batch_tokens, seq_len) stages; () = fixed batch. 405B: PAPER_405B_RAMP (§3.4.1)
    batch_ramp: tuple[tuple[int, int, int], ...] = ()

    def __post_init__(self) -> None:
        if self.decay not in ("cosine", "linear", "constant"):
            raise ConfigError(f"ScheduleConfig.decay must be cosine | linear | constant, got {self.decay!r}")
        if self.batch_ramp:
            try:
                batch_schedule(0, self.batch_ramp)
            except ValueError as exc:
                raise ConfigError(f"ScheduleConfig.batch_ramp: {exc}") from exc


@dataclasses.dataclass(frozen=True)
class DataConfig(StageConfig):
    """What one micro-batch holds."""

    seq_len: int = 128
    batch_size: int = 8  # chosen: global sequences per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    doc_mask: bool = True  # attention stays inside documents (Llama 3 paper §3.4.1)

    def __post_init__(self) -> None:
        for f in ("seq_len", "batch_size", "grad_accum"):
            if getattr(self, f) < 1:
                raise ConfigError(f"DataConfig.{f} must be >= 1, got {getattr(self, f)}")


def _tiny_model() -> ModelConfig:
    return ModelConfig.from_preset("tiny")


# 8B/70B/405B (Llama 3 paper §3.4.1): 1.2M steps, 8,000 warmup, cosine to 1% of peak.
_LLAMA3_RUN: dict[str, Any] = dict(
    steps=1_200_000,
    eval_every=1000,
    eval_batches=50,
    precision="bf16",
    compile=True,
    meta_init=True,
)
_LLAMA3_SCHEDULE: dict[str, Any] = dict(warmup_steps=8000, min_lr_ratio=0.01)
# 8B/70B: fixed 64 x 8 x 8,192 = 4M tokens per step
_LLAMA3_8K_DATA: dict[str, Any] = dict(batch_size=64, grad_accum=8, seq_len=8192)


@dataclasses.dataclass(frozen=True)
class TrainConfig(StageConfig):
    """One training run. Defaults are the ``tiny`` CPU pre-training run; presets below."""

    task: str = "pretrain"  # the objective (ml/train/tasks/)
    init_from: str = ""  # weights to start from: an HF-format dir or another run's checkpoint ("" = fresh)
    model: ModelConfig = dataclasses.field(default_factory=_tiny_model)
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    data: DataConfig = DataConfig()
    steps: int = 50  # optimizer steps of this run
    eval_every: int = 25  # steps between validation metrics (and at the last step); 0 = only at the end
    eval_batches: int = 4  # micro-batches per validation
    ckpt_every: int = 25  # steps between checkpoints (and at the last step); 0 = only at the end
    keep_last: int = 2  # checkpoints kept
    seed: int = 1337
    deterministic: bool = False  # torch.use_deterministic_algorithms (bitwise-reproducible runs and resumes)
    precision: str = "fp32"  # fp32 | bf16 (bf16 autocast / FSDP2 mixed precision on GPU only)
    compile: bool = False  # torch.compile (GPU only)
    # auto (model in one process, blocks under FSDP2) | blocks | model; whole-model compile is the faster
    # one on one GPU (benchmarks/NOTES.md)
    compile_scope: str = "auto"
    device: str = "auto"  # auto | cpu | cuda
    meta_init: bool = False  # build on the meta device, shard, then initialise (models too big for one host)
    log_every: int = 1
    peak_flops: float = 0.0  # per-device peak for MFU; 0 = by device (H100 bf16 989e12) or cpu_peak_flops
    cpu_peak_flops: float = 1e11  # chosen: nominal 100 GFLOP/s per CPU process; MFU on CPU is against this
    dist_timeout_s: int = 600  # a dead rank becomes an error after this long instead of a hang

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # chosen: ~1M tokens, long enough for the 1.8M-parameter CPU model to learn well past token
        # frequencies (~1.9 nats below the unigram baseline) in a few minutes; validation over 32K tokens
        "tiny": dict(
            model="tiny",
            optimizer=dict(lr=2e-3),
            schedule=dict(warmup_steps=50),
            steps=1000,
            eval_every=250,
            eval_batches=32,
            ckpt_every=250,
        ),
        # chosen: ~125M model on one H100; 0.5M tokens per step (nanoGPT/GPT-3 small scale)
        "small": dict(
            model="small",
            optimizer=dict(lr=6e-4),
            schedule=dict(warmup_steps=500),
            data=dict(batch_size=32, grad_accum=16, seq_len=1024),
            steps=10_000,
            eval_every=250,
            eval_batches=20,
            ckpt_every=1000,
            precision="bf16",
            compile=True,
        ),
        # Table 3 peak LRs; 4M tokens per step at seq 8,192; warmup/decay length: 405B's (not published for 8B/70B)
        "8b": dict(
            model="8b",
            optimizer=dict(lr=3e-4),
            schedule=_LLAMA3_SCHEDULE,
            data=_LLAMA3_8K_DATA,
            ckpt_every=1000,
            **_LLAMA3_RUN,
        ),
        "70b": dict(
            model="70b",
            optimizer=dict(lr=1.5e-4),
            schedule=_LLAMA3_SCHEDULE,
            data=_LLAMA3_8K_DATA,
            ckpt_every=1000,
            **_LLAMA3_RUN,
        ),
        # Llama 3 paper §3.4.1: peak 8e-5, 8,000 warmup, cosine to 8e-7 over 1.2M steps, batch/seq ramp
        "405b": dict(
            model="405b",
            optimizer=dict(lr=8e-5),
            schedule=dict(decay_steps=1_200_000, batch_ramp=PAPER_405B_RAMP, **_LLAMA3_SCHEDULE),
            data=dict(batch_size=128, seq_len=4096),
            ckpt_every=500,
            **_LLAMA3_RUN,
        ),
    }

    def __post_init__(self) -> None:
        name = type(self).__name__
        if self.task not in TASKS:
            raise ConfigError(f"{name}.task must be {' | '.join(TASKS)}, got {self.task!r}")
        for f in ("steps", "eval_batches", "keep_last", "log_every"):
            if getattr(self, f) < 1:
                raise ConfigError(f"{name}.{f} must be >= 1, got {getattr(self, f)}")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"{name}.precision must be fp32 | bf16, got {self.precision!r}")
        if self.compile_scope not in COMPILE_SCOPES:
            raise ConfigError(
                f"{name}.compile_scope must be {' | '.join(COMPILE_SCOPES)}, got {self.compile_scope!r}"
            )
        if self.schedule.warmup_steps > self.schedule_steps:
            raise ConfigError(
                f"{name}.schedule.warmup_steps={self.schedule.warmup_steps} exceeds the schedule "
                f"({self.schedule_steps})"
            )

    @property
    def schedule_steps(self) -> int:
        return self.schedule.decay_steps or self.steps

    @property
    def lr_schedule(self) -> LRSchedule:
        return LRSchedule(
            peak_lr=self.optimizer.lr,
            warmup_steps=self.schedule.warmup_steps,
            total_steps=self.schedule_steps,
            min_lr_ratio=self.schedule.min_lr_ratio,
            decay=self.schedule.decay,  # type: ignore[arg-type]
        )

    def replace_model(self, **fields: Any) -> TrainConfig:
        """This config with ``fields`` of the model changed (e.g. ``vocab_size`` from the tokenizer)."""
        return dataclasses.replace(self, model=dataclasses.replace(self.model, **fields))
