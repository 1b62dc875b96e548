"""Distributed setup as functions applied to a plain model (torchtitan style): process group, FSDP2, compile.

Works unchanged in one plain process (no process group: world size 1) and under ``torchrun``
(``RANK``/``WORLD_SIZE``/``LOCAL_RANK``): NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import dataclasses
import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

DEFAULT_TIMEOUT_S = 600  # chosen: a dead peer turns into an error after 10 min instead of a hang


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def pick_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: this rank's CUDA device when there is one, else CPU."""
    if device == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
    return dev


def init_distributed(device: str = "auto", timeout_s: int = DEFAULT_TIMEOUT_S) -> DistInfo:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1; otherwise a single-process DistInfo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        for key in ("MASTER_ADDR", "MASTER_PORT"):
            if key not in os.environ:
                raise RuntimeError(f"WORLD_SIZE={world} but {key} is not set: launch with torchrun")
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world,
            timeout=timedelta(seconds=timeout_s),
            device_id=dev if dev.type == "cuda" else None,
        )
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def destroy_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def device_mesh(info: DistInfo) -> DeviceMesh:
    """1-D data-parallel mesh over all ranks."""
    return init_device_mesh(info.device.type, (info.world_size,), mesh_dim_names=("dp",))


def mixed_precision(device: torch.device, precision: str) -> MixedPrecisionPolicy | None:
    """bf16 compute with fp32 gradient reduction on GPU; none on CPU or in fp32."""
    if device.type != "cuda" or precision != "bf16":
        return None
    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks: ``model.layers`` (Llama) or ``model.blocks``."""
    for name in ("layers", "blocks"):
        blocks = getattr(model, name, None)
        if isinstance(blocks, nn.ModuleList | nn.ModuleDict):
            return list(blocks.values()) if isinstance(blocks, nn.ModuleDict) else list(blocks)
    raise ValueError(f"{type(model).__name__} has no `layers`/`blocks` ModuleList to shard or compile")


def apply_fsdp(
    model: nn.Module, mesh: DeviceMesh, mp_policy: MixedPrecisionPolicy | None = None
) -> nn.Module:
    """FSDP2: ``fully_shard`` each transformer block, then the root (embeddings, final norm, output)."""
    kwargs = {"mesh": mesh}
    if mp_policy is not None:
        kwargs["mp_policy"] = mp_policy
    blocks = transformer_blocks(model)
    for i, block in enumerate(blocks):
        # The last block's params are gathered again right away by the root's backward: keep them.
        fully_shard(block, reshard_after_forward=i < len(blocks) - 1, **kwargs)
    fully_shard(model, **kwargs)
    return model


COMPILE_SCOPES = ("auto", "blocks", "model")


def compile_scope(scope: str, world_size: int) -> str:
    """Resolve ``TrainConfig.compile_scope``: "auto" is the whole model in one process, blocks under FSDP2."""
    if scope not in COMPILE_SCOPES:
        raise ValueError(f"compile scope must be one of {' | '.join(COMPILE_SCOPES)}, got {scope!r}")
    if scope == "auto":
        return "model" if world_size == 1 else "blocks"
    if scope == "model" and world_size > 1:
        raise ValueError(
            f"compile scope 'model' needs one process, got world size {world_size}: FSDP2 shards per block, "
            "so compile per block ('blocks' or 'auto')"
        )
    return scope


def apply_compile(model: nn.Module, scope: str = "blocks", **compile_kwargs: Any) -> nn.Module:
    """``torch.compile`` in place (parameter names unchanged, so checkpoints stay portable).

    "blocks": each block with ``fullgraph=True``, one graph reused by all layers (what FSDP2 needs).
    "model": the whole forward incl. the loss, which lets Inductor fuse across block boundaries: 2-3 ms/step
    faster at 125M on an H100 (benchmarks/NOTES.md).
    The tuned FlexAttention backward configs are offered to Inductor for as long as ``model`` lives (it
    compiles lazily, the backward in autograd's thread at the first backward, and may recompile later);
    ``ml.model.flex_tuning.release_flex_compile_configs(model)`` ends that early.
    """
    if scope not in ("blocks", "model"):
        raise ValueError(f"apply_compile: scope must be blocks | model, got {scope!r}")
    from ml.model.flex_tuning import hold_flex_compile_configs

    if scope == "model":
        model.compile(**compile_kwargs)
    else:
        for block in transformer_blocks(model):
            block.compile(**{"fullgraph": True, **compile_kwargs})
    hold_flex_compile_configs(model)  # before the first call, where compiling starts
    return model


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_mean(value: float | torch.Tensor, device: torch.device) -> float:
    """Mean of a scalar over ranks (the value itself in one process)."""
    dtype = torch.float64 if device.type == "cpu" else torch.float32
    t = torch.as_tensor(value, device=device).detach().to(dtype).reshape(()).clone()
    if _world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / _world_size()


def all_reduce_count(value: int, device: torch.device) -> int:
    """Sum of an integer count over ranks, exact (int64)."""
    if _world_size() == 1:
        return int(value)
    t = torch.tensor(int(value), dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return int(t.item())
