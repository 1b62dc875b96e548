"""The Llama 3 model in one file: RMSNorm, RoPE, grouped-query attention, SwiGLU, blocks, LM head.

Read it top to bottom like nanoGPT's model.py. Shapes in comments use B batch, T sequence, D model dim,
H query heads, K key/value heads, Hd head dim, F FFN dim, V vocab, N = B*T tokens. The architecture is the
Llama 3 paper's §3.2 (dense transformer, GQA with 8 KV heads, SwiGLU, RoPE theta 500000; shapes Table 3).

Choices the paper does not spell out, stated here once:

* Weight names are HF's without the ``model.`` prefix (``layers.0.self_attn.q_proj.weight``), and RoPE
  uses HF's rotate-half layout, so HF ``LlamaForCausalLM`` weights load with a rename only (ml/model/hf.py).
* Document masking (the paper's mask against attention across documents): with ``doc_ids`` a token attends
  only to earlier tokens of the same document (ml/model/attention.py holds the mask backends). How RoPE
  positions count is ours: they restart at 0 at each document start
  (``doc_positions="restart"``, default), so every document's logits equal running that document alone.
  ``doc_positions="global"`` keeps the row's positions (torchtitan's choice). Both give the same logits up
  to rounding: a RoPE score depends only on the query-key offset and the mask keeps keys inside the
  document; restart keeps angles small.
* ``labels`` are already-shifted targets: ``labels[b, t]`` is the token to predict after ``tokens[b, t]``;
  -100 is ignored. The loss is the mean over non-ignored targets, computed chunk by chunk so the (N, V)
  logits never exist at once (ml/model/loss.py: fused linear + cross-entropy with its own backward).
* Init: every weight ~ N(0, init_std); the two residual-stream output projections (``o_proj``,
  ``down_proj``) use init_std / sqrt(2 * n_layers) (GPT-2 / nanoGPT scaling); norms start at 1.
* Decoding (``forward_cached``, used by ml/infer/generate.py) keeps every layer's RoPE-rotated keys and
  values in a ``KVCache``; explicit per-row positions and a key mask let left-padded prompts share a batch.
* Building a model changes nothing in torch; tuned FlexAttention configs are offered to Inductor by whoever
  compiles (ml/model/flex_tuning.py).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, ClassVar, Self

import torch
import torch.nn.functional as F
from torch import nn

from ml.config import PRESET_NAMES, ConfigError, StageConfig
from ml.model.attention import BACKENDS, attend, attention_mask
from ml.model.loss import IGNORE_INDEX as IGNORE_INDEX  # re-exported: the model's ignored label
from ml.model.loss import linear_cross_entropy

MODEL_PRESET_NAMES: tuple[str, ...] = (*PRESET_NAMES, "1b")

# shared by the paper's 8B, 70B and 405B (Llama 3 paper Table 3)
_LLAMA3 = dict(vocab_size=128256, rope_theta=500000.0, max_seq_len=8192, n_kv_heads=8)


@dataclasses.dataclass(frozen=True)
class ModelConfig(StageConfig):
    """Llama shape and numerics. Defaults are the paper's 8B (Llama 3 paper Table 3)."""

    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int = 8  # GQA: 8 KV heads at every size (paper)
    ffn_dim: int = 14336  # SwiGLU hidden size (paper)
    vocab_size: int = 128256  # 100K tiktoken + 28K multilingual (paper)
    max_seq_len: int = 8192  # pre-training context (paper); sizes the RoPE table
    rope_theta: float = 500000.0  # paper
    # Llama 3.1 RoPE frequency scaling (released checkpoints, not the paper): 1.0 = off; Llama 3.1 uses
    # factor 8, Llama 3.2 factor 32, both low 1 / high 4 over an original 8192-token context.
    rope_scale_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_seq_len: int = 8192
    norm_eps: float = 1e-5  # chosen: Meta's released Llama 3 configs
    tie_embeddings: bool = False  # paper sizes are untied; Llama-3.2-1B ties
    init_std: float = 0.02  # chosen: GPT-2/HF initializer_range
    attention: str = "auto"  # ml.model.attention.BACKENDS: "auto" is flex for doc masks on CUDA, else SDPA
    doc_positions: str = "restart"  # "restart": RoPE positions restart per document; "global": row position
    loss_chunk_tokens: int = 8192  # chosen: rows of logits per chunk in the fused linear+CE loss
    fuse_projections: bool = False  # one matmul for q|k|v and one for gate|up; off: not yet timed on GPU

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # chosen: CPU/CI size, ~1.8M params
        "tiny": dict(
            dim=128, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=384, vocab_size=4096, max_seq_len=256
        ),
        # chosen: ~125M params (125.8M, untied), the throughput benchmark's small shape. 16384 loss rows per
        # chunk: 1 ms/step faster than 8192 on an H100 at 16x2048 for +0.5 GiB (benchmarks/NOTES.md)
        "small": dict(
            dim=768,
            n_layers=12,
            n_heads=12,
            n_kv_heads=4,
            ffn_dim=2048,
            vocab_size=32768,
            max_seq_len=2048,
            loss_chunk_tokens=16384,
        ),
        # Llama-3.2-1B shape (1.24B params, tied embeddings), pre-trained here at 4K context
        "1b": dict(
            dim=2048,
            n_layers=16,
            n_heads=32,
            n_kv_heads=8,
            ffn_dim=8192,
            vocab_size=128256,
            rope_theta=500000.0,
            tie_embeddings=True,
            max_seq_len=4096,
        ),
        "8b": dict(dim=4096, n_layers=32, n_heads=32, ffn_dim=14336, **_LLAMA3),
        "70b": dict(dim=8192, n_layers=80, n_heads=64, ffn_dim=28672, **_LLAMA3),
        "405b": dict(dim=16384, n_layers=126, n_heads=128, ffn_dim=53248, **_LLAMA3),
    }

    def __post_init__(self) -> None:
        name = type(self).__name__
        for field in ("dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "vocab_size", "max_seq_len"):
            if getattr(self, field) <= 0:
                raise ConfigError(f"{name}.{field} must be > 0, got {getattr(self, field)}")
        if self.dim % self.n_heads:
            raise ConfigError(f"{name}.dim={self.dim} is not divisible by n_heads={self.n_heads}")
        if (self.dim // self.n_heads) % 2:
            raise ConfigError(f"{name}: head dim {self.dim // self.n_heads} must be even for RoPE")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(
                f"{name}.n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}"
            )
        if self.attention not in BACKENDS:
            raise ConfigError(f"{name}.attention must be {'|'.join(BACKENDS)}, got {self.attention!r}")
        if self.doc_positions not in ("restart", "global"):
            raise ConfigError(f"{name}.doc_positions must be restart|global, got {self.doc_positions!r}")
        if self.rope_scale_factor < 1.0:
            raise ConfigError(
                f"{name}.rope_scale_factor must be >= 1 (1 = off), got {self.rope_scale_factor}"
            )
        if self.rope_scale_factor != 1.0 and not (
            0 < self.rope_low_freq_factor < self.rope_high_freq_factor and self.rope_original_max_seq_len > 0
        ):
            raise ConfigError(
                f"{name}: RoPE scaling needs 0 < rope_low_freq_factor ({self.rope_low_freq_factor}) < "
                f"rope_high_freq_factor ({self.rope_high_freq_factor}) and rope_original_max_seq_len > 0 "
                f"({self.rope_original_max_seq_len})"
            )
        if self.loss_chunk_tokens <= 0:
            raise ConfigError(f"{name}.loss_chunk_tokens must be > 0, got {self.loss_chunk_tokens}")

    @classmethod
    def from_preset(cls, preset: str | None = None, **overrides: Any) -> Self:
        """Like StageConfig.from_preset, plus the model-only ``1b`` preset."""
        if preset is not None and preset not in MODEL_PRESET_NAMES:
            raise ConfigError(
                f"{cls.__name__}: unknown preset {preset!r}; choose one of {', '.join(MODEL_PRESET_NAMES)}"
            )
        if preset in MODEL_PRESET_NAMES and preset not in PRESET_NAMES:
            return cls.from_dict({**cls.PRESETS[preset], **overrides})
        return super().from_preset(preset, **overrides)

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


# ---------------------------------------------------------------------------------------------------------
# Building blocks


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in fp32 and cast back (as HF's LlamaRMSNorm)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_frequencies(cfg: ModelConfig, device: torch.device | None = None) -> torch.Tensor:
    """Inverse frequencies (Hd/2,) fp32: theta^(-2i/Hd), with Llama 3.1 scaling when rope_scale_factor > 1.

    Scaling leaves short wavelengths (< original context / high_freq_factor) alone, divides long ones
    (> original context / low_freq_factor) by the factor, and blends linearly in 1/wavelength between.
    """
    Hd = cfg.head_dim
    inv_freq = 1.0 / cfg.rope_theta ** (torch.arange(0, Hd, 2, dtype=torch.int64, device=device).float() / Hd)
    if cfg.rope_scale_factor == 1.0:
        return inv_freq
    factor, low, high = cfg.rope_scale_factor, cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    # smooth = 1 at wavelen = original/high (keep), 0 at original/low (divide by factor)
    smooth = ((cfg.rope_original_max_seq_len / wavelen - low) / (high - low)).clamp(0.0, 1.0)
    return (1 - smooth) * inv_freq / factor + smooth * inv_freq


def rope_table(cfg: ModelConfig, device: torch.device | None = None) -> torch.Tensor:
    """cos and sin of every position's rotation angles, stacked: (2, max_seq_len, Hd) fp32."""
    inv_freq = rope_frequencies(cfg, device)
    pos = torch.arange(cfg.max_seq_len, dtype=torch.int64, device=device).float()
    angles = torch.outer(pos, inv_freq)  # (T, Hd/2)
    angles = torch.cat((angles, angles), dim=-1)  # (T, Hd): HF layout, halves share frequencies
    return torch.stack((angles.cos(), angles.sin()))


def doc_positions(doc_ids: torch.Tensor) -> torch.Tensor:
    """Position of each token inside its document: (B, T) -> (B, T), 0 at each document start."""
    T = doc_ids.shape[1]
    idx = torch.arange(T, device=doc_ids.device).expand_as(doc_ids)  # (B, T)
    starts = torch.ones_like(doc_ids, dtype=torch.bool)
    starts[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    start_idx = torch.where(starts, idx, torch.zeros_like(idx)).cummax(dim=1).values  # (B, T)
    return idx - start_idx


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, T, n, Hd) by cos/sin of shape (T, 1, Hd) or (B, T, 1, Hd); fp32 math, x's dtype out."""
    xf = x.float()
    return (xf * cos + rotate_half(xf) * sin).to(x.dtype)


KVUpdate = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclasses.dataclass
class KVCache:
    """Keys and values of every layer for the first ``length`` slots of each row, for decoding.

    ``k[i]``, ``v[i]``: (B, S_max, K, Hd) of layer i, RoPE already applied to the keys. ``key_mask``
    (B, S_max) marks the slots that hold real tokens (a left-padded prompt's pads are False).
    """

    k: list[torch.Tensor]
    v: list[torch.Tensor]
    key_mask: torch.Tensor
    length: int = 0

    @classmethod
    def empty(cls, cfg: ModelConfig, batch: int, max_len: int, device: Any, dtype: torch.dtype) -> KVCache:
        shape = (batch, max_len, cfg.n_kv_heads, cfg.head_dim)
        zeros = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(2 * cfg.n_layers)]
        mask = torch.zeros(batch, max_len, dtype=torch.bool, device=device)
        return cls(zeros[: cfg.n_layers], zeros[cfg.n_layers :], mask)

    def updater(self, layer: int) -> KVUpdate:
        """Writes a layer's new (B, T, K, Hd) keys/values at slots [length, length+T); returns all so far."""

        def update(k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            end = self.length + k.shape[1]
            self.k[layer][:, self.length : end] = k
            self.v[layer][:, self.length : end] = v
            return self.k[layer][:, :end], self.v[layer][:, :end]

        return update


class Attention(nn.Module):
    """Causal self-attention with grouped-query heads (K KV heads shared by H/K query heads each)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)
        self.fused = cfg.fuse_projections
        kv = cfg.n_kv_heads * cfg.head_dim
        self.split = (cfg.n_heads * cfg.head_dim, kv, kv)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: Any, kv: KVUpdate | None = None
    ) -> torch.Tensor:
        B, T, _ = x.shape
        if self.fused:  # weights concatenated on the fly: one matmul, names and checkpoints stay HF's
            w = torch.cat((self.q_proj.weight, self.k_proj.weight, self.v_proj.weight))  # ((H+2K)*Hd, D)
            q, k, v = F.linear(x, w).split(self.split, dim=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = apply_rope(q.view(B, T, self.n_heads, self.head_dim), cos, sin)  # (B, T, H, Hd)
        k = apply_rope(k.view(B, T, self.n_kv_heads, self.head_dim), cos, sin)  # (B, T, K, Hd)
        v = v.view(B, T, self.n_kv_heads, self.head_dim)  # (B, T, K, Hd)
        if kv is not None:  # decoding: attend over the cached keys/values too
            k, v = kv(k, v)  # (B, S, K, Hd), S = cached + T
        y = attend(q, k, v, mask)  # (B, T, H, Hd)
        return self.o_proj(y.reshape(B, T, self.n_heads * self.head_dim))  # (B, T, D)


class FeedForward(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.up_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)
        self.fused = cfg.fuse_projections

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            w = torch.cat((self.gate_proj.weight, self.up_proj.weight))  # (2F, D)
            gate, up = F.linear(x, w).chunk(2, dim=-1)  # (B, T, F) each
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        return self.down_proj(F.silu(gate) * up)  # (B, T, F) -> (B, T, D)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then + ffn(norm(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = FeedForward(cfg)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: Any, kv: KVUpdate | None = None
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, kv)  # (B, T, D)
        return x + self.mlp(self.post_attention_layernorm(x))  # (B, T, D)


# ---------------------------------------------------------------------------------------------------------
# The model


class Llama(nn.Module):
    """Llama 3: token embedding, n_layers pre-norm blocks, final RMSNorm, LM head (optionally tied)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        # (2, max_seq_len, Hd) fp32; not saved in checkpoints, recomputed by init_weights()
        self.register_buffer("rope", rope_table(cfg), persistent=False)

    @classmethod
    def from_config(cls, cfg: ModelConfig, device: str | torch.device = "cpu") -> Llama:
        """Build on ``device``; on "meta" nothing is allocated or initialised (call to_empty + init_weights)."""
        with torch.device("meta"):
            model = cls(cfg)
        if torch.device(device).type != "meta":
            model.to_empty(device=device)
            if cfg.tie_embeddings:  # to_empty may swap Parameter objects: tie again
                model.lm_head.weight = model.embed_tokens.weight
            model.init_weights()
        return model

    @torch.no_grad()
    def init_weights(self) -> None:
        """N(0, init_std) weights, residual projections scaled by 1/sqrt(2 L), unit norms, fresh RoPE table."""
        cfg = self.cfg
        std, resid_std = cfg.init_std, cfg.init_std / math.sqrt(2 * cfg.n_layers)
        nn.init.normal_(self.embed_tokens.weight, std=std)
        if not cfg.tie_embeddings:
            nn.init.normal_(self.lm_head.weight, std=std)
        for block in self.layers:
            for lin in (block.self_attn.q_proj, block.self_attn.k_proj, block.self_attn.v_proj):
                nn.init.normal_(lin.weight, std=std)
            nn.init.normal_(block.mlp.gate_proj.weight, std=std)
            nn.init.normal_(block.mlp.up_proj.weight, std=std)
            nn.init.normal_(block.self_attn.o_proj.weight, std=resid_std)
            nn.init.normal_(block.mlp.down_proj.weight, std=resid_std)
            nn.init.ones_(block.input_layernorm.weight)
            nn.init.ones_(block.post_attention_layernorm.weight)
        nn.init.ones_(self.norm.weight)
        self.rope = rope_table(cfg, device=self.rope.device)

    def _rope_angles(self, T: int, doc_ids: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of each token's position, shaped to broadcast over heads: (T, 1, Hd) or (B, T, 1, Hd)."""
        rope = self.rope.float()
        if doc_ids is not None and self.cfg.doc_positions == "restart":
            pos = doc_positions(doc_ids)  # (B, T)
            cos, sin = rope[0][pos], rope[1][pos]  # (B, T, Hd)
        else:
            cos, sin = rope[0, :T], rope[1, :T]  # (T, Hd)
        return cos.unsqueeze(-2), sin.unsqueeze(-2)

    def hidden_states(self, tokens: torch.Tensor, doc_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Final-norm hidden states (B, T, D)."""
        B, T = tokens.shape
        if T > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {T} exceeds max_seq_len={self.cfg.max_seq_len}")
        if doc_ids is not None and doc_ids.shape != tokens.shape:
            raise ValueError(f"doc_ids shape {tuple(doc_ids.shape)} != tokens shape {tuple(tokens.shape)}")
        cos, sin = self._rope_angles(T, doc_ids)
        mask = attention_mask(doc_ids, self.cfg.attention, self.cfg.head_dim, self.embed_tokens.weight.dtype)
        x = self.embed_tokens(tokens)  # (B, T, D)
        for block in self.layers:
            x = block(x, cos, sin, mask)
        return self.norm(x)

    def forward(
        self, tokens: torch.Tensor, doc_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (B, T, V) if ``labels`` is None, else the mean cross-entropy over labels != -100."""
        h = self.hidden_states(tokens, doc_ids)  # (B, T, D)
        if labels is None:
            return self.lm_head(h)  # (B, T, V)
        return linear_cross_entropy(
            h.flatten(0, 1), self.lm_head.weight, labels.flatten(), self.cfg.loss_chunk_tokens
        )

    def forward_cached(
        self, tokens: torch.Tensor, positions: torch.Tensor, new_mask: torch.Tensor, cache: KVCache
    ) -> torch.Tensor:
        """Logits (B, T, V) of ``tokens`` (B, T) appended after the ``cache.length`` cached slots.

        ``positions`` (B, T): RoPE positions of the new tokens; ``new_mask`` (B, T): which of them are real
        (False for left padding: no real token attends to them). Fills the cache and advances its length.
        """
        B, T = tokens.shape
        start, end = cache.length, cache.length + T
        if end > cache.k[0].shape[1] or int(positions.max()) >= self.cfg.max_seq_len:
            raise ValueError(f"decoding past the cache ({cache.k[0].shape[1]} slots) or max_seq_len")
        cache.key_mask[:, start:end] = new_mask
        slots = torch.arange(end, device=tokens.device)  # (S,)
        query_slots = slots[start:, None]  # (T, 1)
        mask = (slots[None, :] <= query_slots) & cache.key_mask[:, None, :end]  # (B, T, S)
        mask |= slots[None, :] == query_slots  # a pad query sees itself: no all-masked row (NaN)
        rope = self.rope.float()
        cos, sin = rope[0][positions].unsqueeze(-2), rope[1][positions].unsqueeze(-2)  # (B, T, 1, Hd)
        x = self.embed_tokens(tokens)  # (B, T, D)
        for i, block in enumerate(self.layers):
            x = block(x, cos, sin, mask[:, None], cache.updater(i))
        cache.length = end
        return self.lm_head(self.norm(x))  # (B, T, V)
