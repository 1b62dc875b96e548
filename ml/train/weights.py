"""Model weights in and out of the engine: ``init_from`` (another stage's weights), frozen models, HF export.

``init_from`` accepts an HF-format directory (``config.json`` + ``model.safetensors``, as written by
:func:`ml.model.hf.save_hf` and by every run's export), a checkpoint directory ``step-XXXXXXXX`` of another
run (its DCP model state, verified against the manifest, resharded to this world size), or a checkpoint
root holding such directories (the newest is used). Only the weights are taken: the optimizer, step count
and data position start fresh. The source must have this run's weight shapes; fields that do not shape a
tensor (context length, RoPE table, attention backend) may differ, e.g. for long-context training.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

from ml.model.hf import CONFIG_FILE, config_from_hf, from_hf_state_dict, load_hf, save_hf, to_hf_state_dict
from ml.model.llama import Llama, ModelConfig
from ml.train import checkpoint as ckpt

# ModelConfig fields that fix a weight's name or shape.
SHAPE_FIELDS = ("dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "vocab_size", "tie_embeddings")


def resolve_source(path: str | Path) -> tuple[str, Path]:
    """``("checkpoint", step_dir)`` or ``("hf", directory)`` for an ``init_from`` path."""
    path = Path(path)
    if (path / ckpt.MANIFEST).is_file():
        return "checkpoint", path
    if (path / CONFIG_FILE).is_file():
        return "hf", path
    latest = ckpt.latest_checkpoint(path)
    if latest is not None:
        return "checkpoint", latest
    raise ckpt.CheckpointError(
        f"{path}: not an HF model directory ({CONFIG_FILE}), a checkpoint ({ckpt.MANIFEST}) or a directory "
        "of checkpoints"
    )


def check_shapes(where: Path, theirs: ModelConfig, ours: ModelConfig) -> None:
    """Refuse weights of another shape, naming every field that differs."""
    diff = [f for f in SHAPE_FIELDS if getattr(theirs, f) != getattr(ours, f)]
    if diff:
        raise ckpt.CheckpointError(
            f"{where}: weights of another model shape: "
            + ", ".join(f"{f}={getattr(theirs, f)!r} (this run: {getattr(ours, f)!r})" for f in diff)
        )


def _hf_state_dict(directory: Path, mcfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Our parameter names -> full tensors of the HF model in ``directory``, laid out for ``mcfg``."""
    check_shapes(directory, config_from_hf(json.loads((directory / CONFIG_FILE).read_text())), mcfg)
    with torch.random.fork_rng(devices=[]):  # building the plain model initialises weights: keep our RNG
        plain = from_hf_state_dict(to_hf_state_dict(load_hf(directory)), mcfg, where=str(directory))
    return plain.state_dict()


def load_weights(path: str | Path, model: nn.Module, mcfg: ModelConfig) -> Path:
    """Load the weights at ``path`` into ``model`` (plain or FSDP2-sharded; collective); returns the source."""
    kind, source = resolve_source(path)
    if kind == "checkpoint":
        saved = ckpt.verified_manifest(source).get("model_config") or {}
        check_shapes(source, ModelConfig.from_dict({k: saved[k] for k in SHAPE_FIELDS if k in saved}), mcfg)
        ckpt.load_model_state(source, model)
    else:
        opts = StateDictOptions(full_state_dict=True, strict=True)
        set_model_state_dict(model, _hf_state_dict(source, mcfg), options=opts)
    return source


def frozen_model(path: str | Path, device: torch.device) -> Llama:
    """A model that is not trained (a DPO reference): HF weights at ``path`` on ``device``, no grads, eval mode."""
    _, source = resolve_source(path)
    with torch.random.fork_rng(devices=[]):
        model = load_hf(source).to(device)  # a checkpoint dir holds its weights in HF format too
    model.requires_grad_(False)
    return model.eval()


def plain_model(mcfg: ModelConfig, state_dict: dict[str, torch.Tensor]) -> Llama:
    """An unsharded Llama holding ``state_dict`` (no copy: built on meta, tensors assigned)."""
    with torch.device("meta"):
        plain = Llama(mcfg)
    plain.load_state_dict(state_dict, assign=True, strict=True)
    if mcfg.tie_embeddings:
        plain.lm_head.weight = plain.embed_tokens.weight
    return plain


def hf_writer(mcfg: ModelConfig) -> ckpt.HfWriter:
    """Rank 0's weights writer for checkpoints: ``model.safetensors`` + ``config.json`` in HF Llama format."""

    def write(state_dict: dict[str, torch.Tensor], directory: Path) -> None:
        staging = directory / "_hf"  # save_hf replaces its target directory as a whole
        save_hf(plain_model(mcfg, state_dict), staging)
        for f in staging.iterdir():
            f.rename(directory / f.name)
        staging.rmdir()

    return write


def export_hf(model: nn.Module, mcfg: ModelConfig, directory: Path) -> Path:
    """Final weights in HF Llama format (collective under FSDP; rank 0 writes ``directory`` atomically)."""
    full = ckpt.full_state_dict(model)
    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return directory
    return save_hf(plain_model(mcfg, full), directory)
