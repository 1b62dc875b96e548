"""The training engine: one ``Trainer`` for every objective, split along torchtitan's seams.

``Trainer(cfg, task, out_dir, info)`` holds a plain Llama and applies to it, in order: compile
(``apply_compile``), FSDP2 (``apply_fsdp``, when world size > 1), meta-device initialisation, the AdamW
optimizer. Then ``restore`` (this run's newest intact checkpoint in ``out_dir/checkpoints``, saved at any
world size; corrupt newer ones are skipped and kept aside) or ``init_from`` (weights of another stage:
ml/train/weights.py), and ``train_step`` / ``evaluate`` / ``checkpoint`` until ``cfg.steps``, and
``export`` (HF Llama format, ``out_dir/hf``).
What is trained on, the loss and the evaluation metrics belong to the task (ml/train/tasks/base.py).

:func:`train` runs it all in one process or under torchrun (FSDP2 when world size > 1); rank 0 reports
per-step metrics through ``on_metrics(step, dict)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from ml.config import ConfigError
from ml.model.llama import Llama
from ml.train import checkpoint as ckpt
from ml.train.config import TrainConfig
from ml.train.cpu_memory import keep_freed_memory
from ml.train.dist import (
    DistInfo,
    all_reduce_count,
    all_reduce_mean,
    apply_compile,
    apply_fsdp,
    compile_scope,
    destroy_distributed,
    device_mesh,
    init_distributed,
    mixed_precision,
)
from ml.train.schedule import lr_at
from ml.train.tasks import build_task
from ml.train.tasks.base import Batch, Task
from ml.train.weights import export_hf, frozen_model, hf_writer, load_weights

# Dense bf16 tensor-core peak per GPU (vendor datasheets, SXM parts) for MFU.
GPU_PEAK_BF16_FLOPS: dict[str, float] = {"H100": 989e12, "H200": 989e12, "A100": 312e12}

MetricsSink = Callable[[int, dict], None]


@dataclasses.dataclass
class TrainResult:
    final_step: int
    start_step: int  # step this process resumed from (0 for a fresh run)
    losses: list[float]  # train loss of steps start_step+1 .. final_step
    val_losses: list[tuple[int, float]]  # (step, the task's "val_loss")
    checkpoint_dir: Path | None  # newest checkpoint
    hf_dir: Path | None  # HF export (rank 0)
    tokens_seen: int
    wall_time_s: float
    peak_flops: float  # per-device peak MFU was computed against
    peak_flops_source: str  # "config", "gpu:<name>" or "cpu-nominal"
    # corrupt checkpoints restore skipped (newest first), kept aside for inspection
    skipped_checkpoints: list[ckpt.SkippedCheckpoint] = dataclasses.field(default_factory=list)

    def final_metrics(self) -> dict[str, float]:
        """The headline figures of the run (what an asset reports): final step, losses, tokens, time."""
        return final_metrics(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["checkpoint_dir"] = str(self.checkpoint_dir) if self.checkpoint_dir else None
        d["hf_dir"] = str(self.hf_dir) if self.hf_dir else None
        d["skipped_checkpoints"] = [
            {"path": str(s.path), "kept_at": str(s.kept_at), "reason": s.reason}
            for s in self.skipped_checkpoints
        ]
        return d


def final_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The headline figures of a run from its ``TrainResult.to_dict()`` (``train_result.json``)."""
    losses, val = result.get("losses") or [], result.get("val_losses") or []
    return {
        "final_step": int(result["final_step"]),
        "final_loss": float(losses[-1]) if losses else float("nan"),
        "final_val_loss": float(val[-1][1]) if val else float("nan"),
        "tokens_seen": int(result["tokens_seen"]),
        "wall_time_s": float(result["wall_time_s"]),
    }


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices (>= 2-D: linear and embedding weights) only, not on norms.

    Fused on GPU (``OptimizerConfig.fused``), else multi-tensor (``foreach``): torch picks that itself only
    for CUDA tensors, and its per-tensor loop on CPU costs a Python round of ops per parameter per step."""
    opt = cfg.optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    fused = opt.fused == "on" or (opt.fused == "auto" and device.type == "cuda")
    groups = [
        {"params": decay, "weight_decay": opt.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups,
        lr=opt.lr,
        betas=tuple(opt.betas),
        eps=opt.eps,
        fused=fused or None,
        foreach=None if fused else True,
    )


def clip_grad_norm(params: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """Clip the global gradient norm (over all ranks' shards under FSDP2); returns the norm before clipping.

    The norm stays a device tensor: reading it here would stall the host until the backward has run,
    before it could queue the optimizer step (the caller reads it once the step is queued)."""
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.nn.utils.get_total_norm(grads, norm_type=2.0, foreach=None)
    if isinstance(total, DTensor):
        total = total.full_tensor()  # partial norms of the shards -> global norm
    if max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total, foreach=None)
    return total


def autocast_context(device: torch.device, precision: str, fsdp: bool) -> contextlib.AbstractContextManager:
    """bf16 on GPU without FSDP: autocast over fp32 master weights (FSDP2's MixedPrecisionPolicy does it otherwise)."""
    if device.type == "cuda" and precision == "bf16" and not fsdp:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def peak_flops_for(cfg: TrainConfig, device: torch.device) -> tuple[float, str]:
    """Peak FLOP/s of one device for MFU, and where the number comes from."""
    if cfg.peak_flops > 0:
        return cfg.peak_flops, "config"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peak in GPU_PEAK_BF16_FLOPS.items():
            if key in name:
                return peak, f"gpu:{key}"
    return cfg.cpu_peak_flops, "cpu-nominal"


def to_device(batch: Batch, device: torch.device) -> Batch:
    """The batch on ``device``. To a GPU through pinned memory: a copy from pageable memory waits for
    every kernel already queued, so each micro-batch would drain the GPU before its forward is queued."""
    if device.type != "cuda":
        return {k: v.to(device) for k, v in batch.items()}
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    task: Task,
    batches: list[Batch],
    device: torch.device,
    autocast: contextlib.AbstractContextManager,
    eager: bool = False,
) -> dict[str, float]:
    """The task's metrics averaged over ``batches`` and over all ranks.

    ``eager``: call the module's own forward, not its compiled ``__call__`` (single process only: FSDP2's
    hooks run in ``__call__``)."""
    model.eval()
    forward = model.forward if eager else model
    totals: dict[str, torch.Tensor] = {}
    for batch in batches:
        with autocast:
            metrics = task.eval_step(forward, to_device(batch, device))
        for key, value in metrics.items():
            totals[key] = totals.get(key, torch.zeros((), device=device)) + value
    model.train()
    return {key: all_reduce_mean(total / len(batches), device) for key, total in totals.items()}


def _log(msg: str) -> None:
    print(f"[ml.train] {msg}", file=sys.stderr, flush=True)


class Trainer:
    """Model, optimizer and training state of one run of ``task``; checkpoints under ``out_dir``."""

    def __init__(self, cfg: TrainConfig, task: Task, out_dir: Path, info: DistInfo):
        self.cfg, self.task, self.info = cfg, task, info
        self.device, self.rank0, self.fsdp = info.device, info.rank == 0, info.is_distributed
        self.out_dir, self.ckpt_root = Path(out_dir), Path(out_dir) / "checkpoints"
        self.model_config = ckpt.config_dict(cfg.model)
        self.step, self.tokens_seen = 0, 0
        self.skipped_checkpoints: list[ckpt.SkippedCheckpoint] = []  # by restore: corrupt, newest first
        self.peak_flops, self.peak_source = peak_flops_for(cfg, self.device)
        self._t_start = time.perf_counter()
        self._window_t, self._window_tokens = self._t_start, 0

    # ---- build -------------------------------------------------------------------------------------

    def build(self) -> None:
        """Model (compiled, sharded, initialised), optimizer, and the task's frozen models."""
        cfg, device = self.cfg, self.device
        if cfg.deterministic:
            if device.type == "cuda":
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        torch.manual_seed(cfg.seed)  # same seed on every rank: identical initial weights, which FSDP2 shards
        if cfg.meta_init:
            model = Llama.from_config(cfg.model, device="meta")
        else:
            model = Llama.from_config(cfg.model, device="cpu").to(device)
        self.model = self.task.prepare_model(model)
        self._compile()
        self.mesh = device_mesh(self.info) if self.fsdp else None
        self.mp_policy = mixed_precision(device, cfg.precision) if self.fsdp else None
        if self.fsdp:
            apply_fsdp(self.model, self.mesh, self.mp_policy)  # FSDP2 casts params to bf16 itself
        if cfg.meta_init:
            self.model.to_empty(device=device)
            self.model.init_weights()
        self.optimizer = build_optimizer(self.model, cfg, device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.autocast = autocast_context(device, cfg.precision, self.fsdp)
        self.task.bind_frozen({name: self._frozen(path) for name, path in self.task.frozen_models().items()})

    def _compile(self) -> None:
        try:
            scope = compile_scope(self.cfg.compile_scope, self.info.world_size)
        except ValueError as exc:
            raise ConfigError(f"TrainConfig.compile_scope: {exc}") from exc
        compiled = self.cfg.compile and self.device.type == "cuda"
        if compiled:
            apply_compile(self.model, scope)
        # Whole-model compile evaluates eagerly (the blocks' flex attention is still compiled): Inductor's
        # no-grad graph of the whole model fails at run time on H100 with "CUDA error: operation not
        # supported on global/shared address space" (benchmarks/NOTES.md).
        self.eval_eager = compiled and scope == "model"

    def _frozen(self, path: str) -> torch.nn.Module:
        model = frozen_model(path, self.device)
        if self.fsdp:
            apply_fsdp(model, self.mesh, self.mp_policy)
        return model

    # ---- where the weights come from ---------------------------------------------------------------

    def restore(self) -> Path | None:
        """Resume from this run's newest intact checkpoint (any saving world size); None when there is none.

        Newer checkpoints that fail verification are skipped with a warning, kept as ``corrupt-step-*`` and
        listed in ``skipped_checkpoints`` (ml/train/checkpoint.py: newest_intact); a CheckpointError when none
        is intact. An intact checkpoint that does not fit this run is an error, never skipped."""
        found = ckpt.newest_intact(self.ckpt_root)
        if found is None:
            return None
        path, manifest, self.skipped_checkpoints = found
        for skipped in self.skipped_checkpoints if self.rank0 else ():
            warnings.warn(
                f"checkpoint {skipped.path} is corrupt, skipped (kept as {skipped.kept_at}): {skipped.reason}",
                stacklevel=2,
            )
        state = ckpt.load_checkpoint(
            path, self.model, self.optimizer, model_config=self.model_config, verified=manifest
        )
        try:
            step, tokens = int(state["step"]), int(state["tokens_seen"])
            self.task.load_state_dict(state["task"])
            ckpt.set_rng_state(state["rng"])  # rank 0's when the world size changed (ml/train/checkpoint.py)
            saved_world = int(state["world_size"])
        except KeyError as exc:
            raise ckpt.CheckpointError(f"{path}: the training state has no entry {exc.args[0]!r}") from exc
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ckpt.CheckpointError(f"{path}: {exc}") from exc
        self.step, self.tokens_seen = step, tokens
        if self.rank0:
            self._log_resume(path, saved_world)
        return path

    def _log_resume(self, path: Path, saved_world: int) -> None:
        moved = saved_world != self.info.world_size
        skipped = self.skipped_checkpoints
        _log(
            f"resumed from {path} at step {self.step} ({self.tokens_seen:,} tokens)"
            + (f", resharded from {saved_world} to {self.info.world_size} ranks" if moved else "")
            + (f", skipping {len(skipped)} newer corrupt checkpoint(s): " if skipped else "")
            + ", ".join(f"{s.path.name} (kept as {s.kept_at.name})" for s in skipped)
        )

    def init_from(self, path: str | Path) -> Path:
        """Start from the weights at ``path`` (HF dir or another run's checkpoint); optimizer and data fresh."""
        source = load_weights(path, self.model, self.cfg.model)
        if self.rank0:
            _log(f"initialised from {source}")
        return source

    # ---- one step, evaluation, checkpoint, export --------------------------------------------------

    def train_step(self) -> dict[str, float]:
        """One optimizer step over the task's micro-batches; loss, lr, grad norm and tokens of the step."""
        accum = self.task.micro_batches(self.tokens_seen)
        lr = lr_at(self.step, self.cfg.lr_schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        loss_sum, tokens = torch.zeros((), device=self.device), 0
        for micro in range(accum):
            batch = to_device(self.task.next_batch(), self.device)
            if self.fsdp:
                self.model.set_requires_gradient_sync(micro == accum - 1)  # reduce-scatter once per step
            with self.autocast:
                loss, n = self.task.loss(self.model, batch)
            (loss / accum).backward()
            loss_sum += loss.detach()
            tokens += n
        grad_norm = clip_grad_norm(self.params, self.cfg.optimizer.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        step_tokens = all_reduce_count(tokens, self.device)
        self.tokens_seen += step_tokens
        self._window_tokens += step_tokens
        loss_value = all_reduce_mean(loss_sum / accum, self.device)  # the step's one wait for the GPU
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"step {self.step}: training loss is {loss_value}")
        return {
            "loss": loss_value,
            "lr": lr,
            "grad_norm": float(grad_norm.item()),
            "batch_tokens": float(step_tokens),
        }

    def evaluate(self) -> dict[str, float]:
        """The task's evaluation metrics on its fixed evaluation batches."""
        batches = self.task.eval_batches()
        metrics = evaluate(self.model, self.task, batches, self.device, self.autocast, eager=self.eval_eager)
        return {**metrics, **self.task.eval_info()}

    def checkpoint(self) -> Path:
        """Save model, optimizer and training state at this step (collective); returns the directory."""
        state = {
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "rng": ckpt.rng_state(),
            "task": self.task.state_dict(),
            "model_config": self.model_config,
            "train_config": self.cfg.to_dict(),
        }
        return ckpt.save_checkpoint(
            self.ckpt_root,
            self.step,
            self.model,
            self.optimizer,
            state,
            model_config=self.model_config,
            keep_last=self.cfg.keep_last,
            hf_writer=hf_writer(self.cfg.model),
        )

    def export(self, directory: Path | None = None) -> Path:
        """The weights in HF Llama format (collective; rank 0 writes), by default to ``out_dir/hf``."""
        return export_hf(self.model, self.cfg.model, directory or self.out_dir / "hf")

    # ---- the loop ------------------------------------------------------------------------------------

    def throughput(self, step_metrics: dict[str, float]) -> dict[str, float]:
        """The step's metrics with tokens/s and MFU over the steps since the last report."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        tokens_per_s = self._window_tokens / max(now - self._window_t, 1e-9)
        self._window_t, self._window_tokens = now, 0
        return {
            "loss": step_metrics["loss"],
            "lr": step_metrics["lr"],
            "grad_norm": step_metrics["grad_norm"],
            "tokens_per_s": tokens_per_s,
            "mfu": self.task.flops_per_token() * tokens_per_s / (self.peak_flops * self.info.world_size),
            "tokens_seen": float(self.tokens_seen),
            "batch_tokens": step_metrics["batch_tokens"],
        }

    def _due(self, every: int) -> bool:
        return (every > 0 and self.step % every == 0) or self.step == self.cfg.steps

    def fit(self, on_metrics: MetricsSink | None = None, resume: bool = True) -> TrainResult:
        """Restore or ``init_from``, train to ``cfg.steps`` (evaluating, checkpointing), export."""
        cfg = self.cfg
        last_ckpt = self.restore() if resume else None
        if last_ckpt is None and cfg.init_from:
            self.init_from(cfg.init_from)
        start_step, losses, val_losses = self.step, [], []
        self._log_start()
        self._window_t = time.perf_counter()
        while self.step < cfg.steps:
            step_metrics = self.train_step()
            losses.append(step_metrics["loss"])
            due = self.step % cfg.log_every == 0 or self.step == cfg.steps
            metrics = self.throughput(step_metrics) if due else {}
            if self._due(cfg.eval_every):
                metrics.update(self.evaluate())
                if "val_loss" in metrics:
                    val_losses.append((self.step, metrics["val_loss"]))
                self._window_t = time.perf_counter()  # validation time is not training throughput
            if self._due(cfg.ckpt_every):
                last_ckpt = self.checkpoint()
                self._window_t = time.perf_counter()
            if metrics and self.rank0 and on_metrics is not None:
                on_metrics(self.step, metrics)
        hf_dir = self.export()
        return TrainResult(
            final_step=self.step,
            start_step=start_step,
            losses=losses,
            val_losses=val_losses,
            checkpoint_dir=last_ckpt,
            hf_dir=hf_dir if self.rank0 else None,
            tokens_seen=self.tokens_seen,
            wall_time_s=time.perf_counter() - self._t_start,
            peak_flops=self.peak_flops,
            peak_flops_source=self.peak_source,
            skipped_checkpoints=list(self.skipped_checkpoints),
        )

    def _log_start(self) -> None:
        if self.rank0:
            n_params = sum(p.numel() for p in self.model.parameters())
            _log(
                f"{self.cfg.model.n_layers}-layer model, {n_params:,} params on {self.info.world_size} x "
                f"{self.device}; MFU against {self.peak_flops:.3g} FLOP/s per device ({self.peak_source})"
            )


def train(
    cfg: TrainConfig,
    data_dir: Path,
    out_dir: Path,
    *,
    on_metrics: MetricsSink | None = None,
    resume: bool = True,
) -> TrainResult:
    """Train ``cfg.steps`` optimizer steps of ``cfg.task`` on ``data_dir``; checkpoints and export in ``out_dir``."""
    owns_group = not (dist.is_available() and dist.is_initialized())
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    info = init_distributed(cfg.device, cfg.dist_timeout_s)
    if info.device.type == "cpu":
        keep_freed_memory()  # this process's big tensors from the heap, not page-faulted in every step
    try:
        trainer = Trainer(cfg, build_task(cfg, Path(data_dir), info), Path(out_dir), info)
        trainer.build()
        return trainer.fit(on_metrics, resume=resume)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        if owns_group:
            destroy_distributed()
