"""Conversion between :class:`ml.model.llama.Llama` and the Hugging Face Llama checkpoint format.

A checkpoint directory holds ``config.json`` (HF ``LlamaConfig`` keys) and ``model.safetensors``
(or shards listed in ``model.safetensors.index.json``). Only safetensors are read: never a pickle.
Our parameter names are HF's without the ``model.`` prefix, and RoPE uses HF's rotate-half layout,
so conversion is a rename; a tied LM head is omitted from the file, as ``save_pretrained`` does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ml.config import ConfigError
from ml.io import atomic_dir
from ml.model.llama import Llama, ModelConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class CheckpointError(ValueError):
    """A checkpoint file, key or tensor is wrong; the message names the file and the tensor/key."""


def hf_config_dict(cfg: ModelConfig, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """HF ``LlamaConfig`` dict for ``cfg`` (readable by transformers 4.x and 5.x)."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.ffn_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_seq_len,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": _hf_rope_scaling(cfg),
        "rope_parameters": {
            "rope_theta": cfg.rope_theta,
            **(_hf_rope_scaling(cfg) or {"rope_type": "default"}),
        },
        "rms_norm_eps": cfg.norm_eps,
        "tie_word_embeddings": cfg.tie_embeddings,
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": cfg.init_std,
        "torch_dtype": str(dtype).removeprefix("torch."),
    }


def _hf_rope_scaling(cfg: ModelConfig) -> dict[str, Any] | None:
    """HF's ``rope_scaling`` for Llama 3.1 frequency scaling, None when it is off."""
    if cfg.rope_scale_factor == 1.0:
        return None
    return {
        "rope_type": "llama3",
        "factor": cfg.rope_scale_factor,
        "low_freq_factor": cfg.rope_low_freq_factor,
        "high_freq_factor": cfg.rope_high_freq_factor,
        "original_max_position_embeddings": cfg.rope_original_max_seq_len,
    }


_LLAMA3_ROPE_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")

_REQUIRED = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "vocab_size",
    "max_position_embeddings",
    "rms_norm_eps",
)


def config_from_hf(d: dict[str, Any], where: str = "config") -> ModelConfig:
    """ModelConfig from an HF Llama config dict; unsupported features raise CheckpointError."""
    missing = [k for k in _REQUIRED if k not in d]
    if missing:
        raise CheckpointError(f"{where}: missing HF Llama key(s) {', '.join(missing)}")
    if d.get("model_type", "llama") != "llama":
        raise CheckpointError(f"{where}: model_type={d.get('model_type')!r}, expected 'llama'")
    if d.get("hidden_act", "silu") != "silu":
        raise CheckpointError(
            f"{where}: hidden_act={d.get('hidden_act')!r}, only 'silu' (SwiGLU) is supported"
        )
    for key in ("attention_bias", "mlp_bias"):
        if d.get(key):
            raise CheckpointError(f"{where}: {key}=true is not supported (Llama has no biases)")
    rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    scaling: dict[str, Any] = {}
    if rope_type == "llama3":
        missing_rope = [k for k in _LLAMA3_ROPE_KEYS if k not in rope]
        if missing_rope:
            raise CheckpointError(f"{where}: llama3 rope scaling lacks {', '.join(missing_rope)}")
        scaling = dict(
            rope_scale_factor=float(rope["factor"]),
            rope_low_freq_factor=float(rope["low_freq_factor"]),
            rope_high_freq_factor=float(rope["high_freq_factor"]),
            rope_original_max_seq_len=int(rope["original_max_position_embeddings"]),
        )
    elif rope_type != "default":
        raise CheckpointError(
            f"{where}: rope type {rope_type!r} is not supported, only plain RoPE ('default') and Llama 3.1 "
            "scaling ('llama3')"
        )
    theta = rope.get("rope_theta", d.get("rope_theta", 10000.0))
    n_heads = d["num_attention_heads"]
    head_dim = d.get("head_dim") or d["hidden_size"] // n_heads
    if head_dim * n_heads != d["hidden_size"]:
        raise CheckpointError(
            f"{where}: head_dim={head_dim} * num_attention_heads={n_heads} != hidden_size={d['hidden_size']}"
        )
    try:
        return ModelConfig(
            dim=d["hidden_size"],
            n_layers=d["num_hidden_layers"],
            n_heads=n_heads,
            n_kv_heads=d.get("num_key_value_heads") or n_heads,
            ffn_dim=d["intermediate_size"],
            vocab_size=d["vocab_size"],
            max_seq_len=d["max_position_embeddings"],
            rope_theta=float(theta),
            norm_eps=float(d["rms_norm_eps"]),
            tie_embeddings=bool(d.get("tie_word_embeddings", False)),
            init_std=float(d.get("initializer_range", 0.02)),
            **scaling,
        )
    except ConfigError as exc:  # e.g. llama3 scaling with low_freq_factor >= high_freq_factor
        raise CheckpointError(f"{where}: {exc}") from exc


def to_hf_state_dict(model: Llama) -> dict[str, torch.Tensor]:
    """HF names -> tensors (``model.`` prefix; ``lm_head.weight`` left out when tied)."""
    out = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            if model.cfg.tie_embeddings:
                continue
            out[name] = tensor
        else:
            out[f"model.{name}"] = tensor
    return out


def _expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = Llama(cfg)
    return {k: tuple(v.shape) for k, v in to_hf_state_dict(model).items()}


def from_hf_state_dict(sd: dict[str, torch.Tensor], cfg: ModelConfig, where: str = "state dict") -> Llama:
    """Build a Llama from an HF state dict; missing/unexpected keys or wrong shapes raise CheckpointError."""
    sd = {k: v for k, v in sd.items() if not k.endswith("rotary_emb.inv_freq")}  # old HF buffers
    expected = _expected_shapes(cfg)
    if cfg.tie_embeddings and "lm_head.weight" in sd:
        if not torch.equal(sd["lm_head.weight"], sd.get("model.embed_tokens.weight", torch.empty(0))):
            raise CheckpointError(f"{where}: tie_word_embeddings is true but lm_head.weight != embed_tokens")
        sd = {k: v for k, v in sd.items() if k != "lm_head.weight"}
    missing, unexpected = sorted(set(expected) - set(sd)), sorted(set(sd) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: missing tensor(s) {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected tensor(s) {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    for name, shape in expected.items():
        if tuple(sd[name].shape) != shape:
            raise CheckpointError(
                f"{where}: tensor {name} has shape {tuple(sd[name].shape)}, expected {shape}"
            )
    dtype = next(iter(sd.values())).dtype
    model = Llama.from_config(cfg, device="cpu").to(dtype)  # every weight is overwritten below
    ours = {k.removeprefix("model."): v for k, v in sd.items()}
    if cfg.tie_embeddings:
        ours["lm_head.weight"] = ours["embed_tokens.weight"]
    model.load_state_dict(ours, strict=True)
    model.rope = model.rope.float()
    return model


def save_hf(model: Llama, directory: str | Path) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (HF format) atomically into ``directory``."""
    directory = Path(directory)
    sd = {k: v.detach().contiguous().cpu() for k, v in to_hf_state_dict(model).items()}
    dtype = next(iter(sd.values())).dtype
    with atomic_dir(directory) as tmp:
        save_file(sd, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(json.dumps(hf_config_dict(model.cfg, dtype), indent=2) + "\n")
    return directory


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file: {exc}") from exc


def load_hf(directory: str | Path) -> Llama:
    """Load an HF Llama checkpoint directory (safetensors only) into our Llama (on CPU)."""
    directory = Path(directory)
    cfg_path = directory / CONFIG_FILE
    try:
        cfg_dict = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{cfg_path}: cannot read HF config: {exc}") from exc
    if not isinstance(cfg_dict, dict):
        raise CheckpointError(f"{cfg_path}: expected a JSON object, got {type(cfg_dict).__name__}")
    cfg = config_from_hf(cfg_dict, where=str(cfg_path))
    index = directory / INDEX_FILE
    if (directory / WEIGHTS_FILE).exists():
        files = [directory / WEIGHTS_FILE]
    elif index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index}: cannot read weight_map: {exc}") from exc
        files = [directory / name for name in sorted(set(weight_map.values()))]
    else:
        raise CheckpointError(f"{directory}: no {WEIGHTS_FILE} or {INDEX_FILE} (only safetensors are loaded)")
    sd: dict[str, torch.Tensor] = {}
    for path in files:
        sd.update(_read_safetensors(path))
    where = str(files[0]) if len(files) == 1 else f"{directory} ({len(files)} shards)"
    return from_hf_state_dict(sd, cfg, where=where)
