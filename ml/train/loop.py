"""The pre-training loop: one short function over a plain Llama, AdamW, a token loader and checkpoints.

``train(cfg, data_dir, out_dir)`` runs in one process or under torchrun (FSDP2 when world size > 1),
resumes from the newest checkpoint in ``out_dir/checkpoints`` (saved at any world size: same global batch,
same batches from there on), and on rank 0 reports per-step metrics
through ``on_metrics(step, dict)`` and writes the final model in HF Llama format to ``out_dir/hf``.

``batch_size`` is the *global* number of sequences per micro-batch (split evenly over ranks), so one
config trains the same model at any world size; tokens per optimizer step are
``batch_size * grad_accum * seq_len``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from ml.config import ConfigError, StageConfig
from ml.model.flops import flops_per_token
from ml.model.hf import save_hf
from ml.model.llama import Llama, ModelConfig
from ml.train import checkpoint as ckpt
from ml.train.dist import (
    COMPILE_SCOPES,
    DistInfo,
    all_reduce_mean,
    apply_compile,
    apply_fsdp,
    compile_scope,
    destroy_distributed,
    device_mesh,
    init_distributed,
    mixed_precision,
)
from ml.train.schedule import PAPER_405B_RAMP, LRSchedule, batch_schedule, lr_at

# Dense bf16 tensor-core peak per GPU (vendor datasheets, SXM parts) for MFU.
GPU_PEAK_BF16_FLOPS: dict[str, float] = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


# Shared by the 8B/70B/405B presets: 1.2M steps, 8,000 warmup, cosine to 1% of peak (PAPER.md 405B recipe).
_LLAMA3_RECIPE: dict[str, Any] = dict(
    steps=1_200_000,
    warmup_steps=8000,
    min_lr_ratio=0.01,
    eval_every=1000,
    eval_batches=50,
    precision="bf16",
    compile=True,
    meta_init=True,
)
# 8B/70B: fixed 64 x 8 x 8,192 = 4M tokens per step
_LLAMA3_8K_SEQ: dict[str, Any] = dict(
    batch_size=64, grad_accum=8, seq_len=8192, ckpt_every=1000, **_LLAMA3_RECIPE
)


@dataclasses.dataclass(frozen=True)
class TrainConfig(StageConfig):
    """Pre-training hyperparameters. Defaults are the ``tiny`` CPU run; presets below."""

    model: str = "tiny"  # ModelConfig preset (ml/model.py)
    # ModelConfig fields over the preset (e.g. vocab_size to match the tokenizer)
    model_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    batch_size: int = 8  # chosen: global sequences per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    seq_len: int = 128
    steps: int = 50  # optimizer steps of this run
    lr: float = 1e-3  # chosen for tiny models; the paper's peaks are per size (presets)
    warmup_steps: int = 10
    lr_decay: str = "cosine"  # cosine (pre-training) | linear (annealing: to 0) | constant
    decay_steps: int = 0  # length of the LR schedule; 0 = ``steps`` (405B: 1.2M, paper)
    min_lr_ratio: float = 0.1  # scaling sweep: decay to 0.1x peak (paper); 405B: 8e-7 / 8e-5 = 0.01
    # (from_tokens, batch_tokens, seq_len) stages; () = fixed batch. 405B: PAPER_405B_RAMP
    batch_ramp: tuple[tuple[int, int, int], ...] = ()
    weight_decay: float = 0.1  # paper's sweep: "weight decay 0.1x LR" = AdamW decoupled decay 0.1
    betas: tuple[float, float] = (0.9, 0.95)  # chosen: Llama 2's AdamW betas (Llama 3 does not restate them)
    eps: float = 1e-8  # chosen: PyTorch default (not published)
    grad_clip: float = 1.0  # chosen: Llama 2's clipping (not restated for Llama 3)
    eval_every: int = 25  # steps between validation losses (and at the last step)
    eval_batches: int = 4  # micro-batches per validation loss
    ckpt_every: int = 25  # steps between checkpoints (and at the last step); 0 = only at the end
    keep_last: int = 2  # checkpoints kept
    seed: int = 1337
    deterministic: bool = False  # torch.use_deterministic_algorithms (bitwise-reproducible runs and resumes)
    precision: str = "fp32"  # fp32 | bf16 (bf16 autocast / FSDP2 mixed precision on GPU only)
    compile: bool = False  # torch.compile (GPU only)
    # auto (model in one process, blocks under FSDP2) | blocks | model. On one H100 the `small` run goes from
    # ~440K (blocks) to ~500K tokens/s (model), benchmarks/NOTES.md round 5.
    compile_scope: str = "auto"
    fused_adamw: str = "auto"  # auto (fused on GPU) | on | off
    device: str = "auto"  # auto | cpu | cuda
    doc_mask: bool = True  # attention stays inside documents (paper)
    meta_init: bool = False  # build on the meta device, shard, then initialise (models too big for one host)
    log_every: int = 1
    peak_flops: float = 0.0  # per-device peak for MFU; 0 = by device (H100 bf16 989e12) or cpu_peak_flops
    cpu_peak_flops: float = 1e11  # chosen: nominal 100 GFLOP/s per CPU process; MFU on CPU is against this
    dist_timeout_s: int = 600  # a dead rank becomes an error after this long instead of a hang

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(model="tiny", batch_size=8, seq_len=128, steps=50, lr=1e-3, warmup_steps=10),
        # chosen: ~125M model on one H100; 0.5M tokens per step (nanoGPT/GPT-3 small scale)
        "small": dict(
            model="small",
            batch_size=32,
            grad_accum=16,
            seq_len=1024,
            steps=10_000,
            lr=6e-4,
            warmup_steps=500,
            eval_every=250,
            eval_batches=20,
            ckpt_every=1000,
            precision="bf16",
            compile=True,
        ),
        # Table 3 peak LRs; 4M tokens per step at seq 8,192; warmup/decay length: 405B's (not published for 8B/70B)
        "8b": dict(model="8b", lr=3e-4, **_LLAMA3_8K_SEQ),
        "70b": dict(model="70b", lr=1.5e-4, **_LLAMA3_8K_SEQ),
        # PAPER.md 405B recipe: peak 8e-5, 8,000 warmup, cosine to 8e-7 over 1.2M steps, batch/seq ramp
        "405b": dict(
            model="405b",
            batch_size=128,
            seq_len=4096,
            lr=8e-5,
            decay_steps=1_200_000,
            batch_ramp=PAPER_405B_RAMP,
            ckpt_every=500,
            **_LLAMA3_RECIPE,
        ),
    }

    def __post_init__(self) -> None:
        name = type(self).__name__
        for f in ("batch_size", "grad_accum", "seq_len", "steps", "eval_batches", "keep_last", "log_every"):
            if getattr(self, f) < 1:
                raise ConfigError(f"{name}.{f} must be >= 1, got {getattr(self, f)}")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"{name}.precision must be fp32 | bf16, got {self.precision!r}")
        if self.lr_decay not in ("cosine", "linear", "constant"):
            raise ConfigError(f"{name}.lr_decay must be cosine | linear | constant, got {self.lr_decay!r}")
        if self.compile_scope not in COMPILE_SCOPES:
            raise ConfigError(
                f"{name}.compile_scope must be {' | '.join(COMPILE_SCOPES)}, got {self.compile_scope!r}"
            )
        if self.fused_adamw not in ("auto", "on", "off"):
            raise ConfigError(f"{name}.fused_adamw must be auto | on | off, got {self.fused_adamw!r}")
        if self.warmup_steps > self.schedule_steps:
            raise ConfigError(
                f"{name}.warmup_steps={self.warmup_steps} exceeds the schedule ({self.schedule_steps})"
            )
        if len(self.betas) != 2:
            raise ConfigError(f"{name}.betas must hold two numbers, got {self.betas!r}")
        if self.batch_ramp:
            try:
                batch_schedule(0, self.batch_ramp)
            except ValueError as exc:
                raise ConfigError(f"{name}.batch_ramp: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["batch_ramp"] = [list(stage) for stage in self.batch_ramp]  # YAML/JSON have no tuples
        return d

    @property
    def schedule_steps(self) -> int:
        return self.decay_steps or self.steps

    @property
    def lr_schedule(self) -> LRSchedule:
        return LRSchedule(
            peak_lr=self.lr,
            warmup_steps=self.warmup_steps,
            total_steps=self.schedule_steps,
            min_lr_ratio=self.min_lr_ratio,
            decay=self.lr_decay,  # type: ignore[arg-type]
        )

    def model_config(self) -> ModelConfig:
        return ModelConfig.from_preset(self.model, **self.model_overrides)


@dataclasses.dataclass
class TrainResult:
    final_step: int
    start_step: int  # step this process resumed from (0 for a fresh run)
    losses: list[float]  # train loss of steps start_step+1 .. final_step
    val_losses: list[tuple[int, float]]  # (step, validation loss)
    checkpoint_dir: Path | None  # newest checkpoint
    hf_dir: Path | None  # HF export (rank 0)
    tokens_seen: int
    wall_time_s: float
    peak_flops: float  # per-device peak MFU was computed against
    peak_flops_source: str  # "config", "gpu:<name>" or "cpu-nominal"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["checkpoint_dir"] = str(self.checkpoint_dir) if self.checkpoint_dir else None
        d["hf_dir"] = str(self.hf_dir) if self.hf_dir else None
        return d


# ---- building blocks -------------------------------------------------------------------------------


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices (>= 2-D: linear and embedding weights) only, not on norms."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    fused = cfg.fused_adamw == "on" or (cfg.fused_adamw == "auto" and device.type == "cuda")
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=fused or None)


def clip_grad_norm(params: list[torch.nn.Parameter], max_norm: float) -> float:
    """Clip the global gradient norm (over all ranks' shards under FSDP2); returns the norm before clipping."""
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.nn.utils.get_total_norm(grads, norm_type=2.0, foreach=None)
    if isinstance(total, DTensor):
        total = total.full_tensor()  # partial norms of the shards -> global norm
    if max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total, foreach=None)
    return float(total.item())


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


def _make_loader(cfg: TrainConfig, data_dir: Path, split: str, info: DistInfo, seq_len: int, seed: int):
    from ml.train.data import TokenLoader

    return TokenLoader(
        data_dir,
        batch_size=cfg.batch_size // info.world_size,
        seq_len=seq_len,
        split=split,
        rank=info.rank,
        world_size=info.world_size,
        seed=seed,
    )


def _log(msg: str) -> None:
    print(f"[ml.train] {msg}", file=sys.stderr, flush=True)


# ---- the loop --------------------------------------------------------------------------------------


def train(
    cfg: TrainConfig,
    data_dir: Path,
    out_dir: Path,
    *,
    on_metrics: Callable[[int, dict], None] | None = None,
    resume: bool = True,
) -> TrainResult:
    """Train ``cfg.steps`` optimizer steps on the token shards in ``data_dir``; checkpoints and export in ``out_dir``."""
    owns_group = not (dist.is_available() and dist.is_initialized())
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    info = init_distributed(cfg.device, cfg.dist_timeout_s)
    try:
        return _train(cfg, Path(data_dir), Path(out_dir), info, on_metrics, resume)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        if owns_group:
            destroy_distributed()


def _train(
    cfg: TrainConfig,
    data_dir: Path,
    out_dir: Path,
    info: DistInfo,
    on_metrics: Callable[[int, dict], None] | None,
    resume: bool,
) -> TrainResult:
    t_start = time.perf_counter()
    device, rank0 = info.device, info.rank == 0
    if cfg.batch_size % info.world_size:
        raise ConfigError(
            f"TrainConfig.batch_size={cfg.batch_size} is not divisible by world size {info.world_size}"
        )
    mcfg = cfg.model_config()
    longest = max([cfg.seq_len] * (not cfg.batch_ramp) + [stage[2] for stage in cfg.batch_ramp])
    if longest > mcfg.max_seq_len:
        raise ConfigError(
            f"TrainConfig: sequence length {longest} exceeds the model's max_seq_len={mcfg.max_seq_len}"
        )
    ckpt_root = out_dir / "checkpoints"

    if cfg.deterministic:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    # Same seed on every rank: identical initial weights, which FSDP2 then shards.
    torch.manual_seed(cfg.seed)
    if cfg.meta_init:
        model = Llama.from_config(mcfg, device="meta")
    else:
        model = Llama.from_config(mcfg, device="cpu").to(device)
    try:
        scope = compile_scope(cfg.compile_scope, info.world_size)
    except ValueError as exc:
        raise ConfigError(f"TrainConfig.compile_scope: {exc}") from exc
    if cfg.compile and device.type == "cuda":
        apply_compile(model, scope)
    # Whole-model compile evaluates eagerly (the blocks' flex attention is still compiled): Inductor's no-grad
    # graph of the whole model fails at run time on torch 2.11 / H100 with "CUDA error: operation not supported
    # on global/shared address space", whichever block-mask builder (benchmarks/NOTES.md, round 5).
    eval_eager = cfg.compile and device.type == "cuda" and scope == "model"
    fsdp = info.is_distributed
    mp_policy = mixed_precision(device, cfg.precision) if fsdp else None  # FSDP2 casts params to bf16 itself
    if fsdp:
        apply_fsdp(model, device_mesh(info), mp_policy)
    if cfg.meta_init:
        model.to_empty(device=device)
        model.init_weights()
    optimizer = build_optimizer(model, cfg, device)
    params = [p for p in model.parameters() if p.requires_grad]
    autocast = autocast_context(device, cfg.precision, fsdp)

    step, tokens_seen = 0, 0
    seq_len = batch_schedule(0, cfg.batch_ramp)[1] if cfg.batch_ramp else cfg.seq_len
    loader = _make_loader(cfg, data_dir, "train", info, seq_len, cfg.seed)
    if loader.stream.vocab_size > mcfg.vocab_size:
        raise ConfigError(
            f"{data_dir}: token shards use a vocabulary of {loader.stream.vocab_size} ids, the model "
            f"({cfg.model} preset) has vocab_size={mcfg.vocab_size}: set model_overrides.vocab_size"
        )
    val_seq, val_batches = -1, []
    model_config_dict = ckpt.config_dict(mcfg)
    latest = ckpt.latest_checkpoint(ckpt_root) if resume else None
    if latest is not None:
        state = ckpt.load_checkpoint(latest, model, optimizer, model_config=model_config_dict)
        step, tokens_seen = int(state["step"]), int(state["tokens_seen"])
        if state["seq_len"] != seq_len:
            if not cfg.batch_ramp:
                raise ckpt.CheckpointError(
                    f"{latest}: saved with seq_len={state['seq_len']}, this run has seq_len={seq_len}"
                )
            seq_len = int(state["seq_len"])  # the ramp stage the checkpoint was in
            loader = _make_loader(cfg, data_dir, "train", info, seq_len, cfg.seed)
        try:
            loader.load_state_dict(state["data"])  # world-size independent: any saving world size
        except (KeyError, ValueError) as exc:
            raise ckpt.CheckpointError(f"{latest}: data-loader state does not fit this run: {exc}") from exc
        ckpt.set_rng_state(state["rng"])  # rank 0's when the world size changed (ml/train/checkpoint.py)
        if rank0:
            moved = state["world_size"] != info.world_size
            _log(
                f"resumed from {latest} at step {step} ({tokens_seen:,} tokens)"
                + (f", resharded from {state['world_size']} to {info.world_size} ranks" if moved else "")
            )
    start_step = step

    peak, peak_source = peak_flops_for(cfg, device)
    if rank0:
        n_params = sum(p.numel() for p in model.parameters())
        _log(
            f"{mcfg.n_layers}-layer model, {n_params:,} params on {info.world_size} x {device}; "
            f"MFU against {peak:.3g} FLOP/s per device ({peak_source})"
        )
    flops_cache: dict[int, float] = {}

    def save(at_step: int) -> Path:
        state = {
            "step": at_step,
            "tokens_seen": tokens_seen,
            "seq_len": seq_len,
            "rng": ckpt.rng_state(),
            "data": loader.state_dict(),
            "model_config": model_config_dict,
            "train_config": cfg.to_dict(),
        }
        return ckpt.save_checkpoint(
            ckpt_root,
            at_step,
            model,
            optimizer,
            state,
            model_config=model_config_dict,
            keep_last=cfg.keep_last,
            hf_writer=_hf_writer(mcfg),
        )

    losses: list[float] = []
    val_losses: list[tuple[int, float]] = []
    last_ckpt: Path | None = latest
    batches = iter(loader)
    window_t, window_tokens = time.perf_counter(), 0
    while step < cfg.steps:
        # Batch ramp: grad accumulation follows the scheduled batch; a new sequence length restarts the loader.
        accum = cfg.grad_accum
        if cfg.batch_ramp:
            batch_tokens, new_seq = batch_schedule(tokens_seen, cfg.batch_ramp)
            if new_seq != seq_len:  # windows of a new length: a fresh loader (epoch 0 of that layout)
                seq_len = new_seq
                loader = _make_loader(cfg, data_dir, "train", info, seq_len, cfg.seed)
                batches = iter(loader)
            accum = max(1, batch_tokens // (cfg.batch_size * seq_len))

        lr = lr_at(step, cfg.lr_schedule)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        loss_sum = torch.zeros((), device=device)
        for micro in range(accum):
            inputs, targets, doc_ids = (t.to(device, non_blocking=True) for t in next(batches))  # (B_rank, T)
            if fsdp:
                model.set_requires_gradient_sync(micro == accum - 1)  # reduce-scatter once per step
            with autocast:
                loss = model(inputs, doc_ids=doc_ids if cfg.doc_mask else None, labels=targets)
            (loss / accum).backward()
            loss_sum += loss.detach()
        grad_norm = clip_grad_norm(params, cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        step_tokens = cfg.batch_size * accum * seq_len
        tokens_seen += step_tokens
        window_tokens += step_tokens

        loss_value = all_reduce_mean(loss_sum / accum, device)
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"step {step}: training loss is {loss_value}")
        losses.append(loss_value)
        metrics: dict[str, float] = {}
        if step % cfg.log_every == 0 or step == cfg.steps:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            now = time.perf_counter()
            tokens_per_s = window_tokens / max(now - window_t, 1e-9)
            if seq_len not in flops_cache:
                flops_cache[seq_len] = float(flops_per_token(mcfg, seq_len))
            metrics = {
                "loss": loss_value,
                "lr": lr,
                "grad_norm": grad_norm,
                "tokens_per_s": tokens_per_s,
                "mfu": flops_cache[seq_len] * tokens_per_s / (peak * info.world_size),
                "tokens_seen": float(tokens_seen),
                "batch_tokens": float(step_tokens),
            }
            window_t, window_tokens = now, 0
        if (cfg.eval_every > 0 and step % cfg.eval_every == 0) or step == cfg.steps:
            if val_seq != seq_len:
                val_batches = _make_loader(cfg, data_dir, "val", info, seq_len, cfg.seed).val_batches(
                    cfg.eval_batches
                )
                val_seq = seq_len
            val = evaluate(model, val_batches, cfg, device, autocast, eager=eval_eager)
            val_losses.append((step, val))
            metrics["val_loss"] = val
            window_t = time.perf_counter()  # validation time is not training throughput
        if (cfg.ckpt_every > 0 and step % cfg.ckpt_every == 0) or step == cfg.steps:
            last_ckpt = save(step)
            window_t = time.perf_counter()
        if metrics and rank0 and on_metrics is not None:
            on_metrics(step, metrics)

    hf_dir = export_hf(model, mcfg, out_dir / "hf")
    return TrainResult(
        final_step=step,
        start_step=start_step,
        losses=losses,
        val_losses=val_losses,
        checkpoint_dir=last_ckpt,
        hf_dir=hf_dir if rank0 else None,
        tokens_seen=tokens_seen,
        wall_time_s=time.perf_counter() - t_start,
        peak_flops=peak,
        peak_flops_source=peak_source,
    )


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    batches: list,
    cfg: TrainConfig,
    device: torch.device,
    autocast: contextlib.AbstractContextManager,
    eager: bool = False,
) -> float:
    """Mean loss over fixed validation micro-batches (the same ones at every evaluation), over all ranks.

    ``eager``: call the module's own forward, not its compiled ``__call__`` (single process only: FSDP2's
    hooks run in ``__call__``)."""
    model.eval()
    forward = model.forward if eager else model
    total = torch.zeros((), device=device)
    for inputs, targets, doc_ids in batches:
        inputs, targets, doc_ids = inputs.to(device), targets.to(device), doc_ids.to(device)  # (B_rank, T)
        with autocast:
            total += forward(inputs, doc_ids=doc_ids if cfg.doc_mask else None, labels=targets).float()
    model.train()
    return all_reduce_mean(total / len(batches), device)


def _plain_model(mcfg: ModelConfig, state_dict: dict[str, torch.Tensor]) -> Llama:
    """An unsharded Llama holding ``state_dict`` (no copy: built on meta, tensors assigned)."""
    with torch.device("meta"):
        plain = Llama(mcfg)
    plain.load_state_dict(state_dict, assign=True, strict=True)
    if mcfg.tie_embeddings:
        plain.lm_head.weight = plain.embed_tokens.weight
    return plain


def _hf_writer(mcfg: ModelConfig) -> ckpt.HfWriter:
    """Rank 0's weights writer for checkpoints: ``model.safetensors`` + ``config.json`` in HF Llama format."""

    def write(state_dict: dict[str, torch.Tensor], directory: Path) -> None:
        staging = directory / "_hf"  # save_hf replaces its target directory as a whole
        save_hf(_plain_model(mcfg, state_dict), staging)
        for f in staging.iterdir():
            f.rename(directory / f.name)
        staging.rmdir()

    return write


def export_hf(model: torch.nn.Module, mcfg: ModelConfig, directory: Path) -> Path:
    """Final weights in HF Llama format (collective under FSDP; rank 0 writes ``directory`` atomically)."""
    full = ckpt.full_state_dict(model)
    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return directory
    return save_hf(_plain_model(mcfg, full), directory)
