"""The Llama 3 model in one file: RMSNorm, RoPE, grouped-query attention, SwiGLU, blocks, LM head.

Read it top to bottom like nanoGPT's model.py. Shapes in comments use B batch, T sequence, D model dim,
H query heads, K key/value heads, Hd head dim, F FFN dim, V vocab, N = B*T tokens.

Choices the paper (PAPER.md, "Model") does not spell out, stated here once:

* Weight names are HF's without the ``model.`` prefix (``layers.0.self_attn.q_proj.weight``), and RoPE
  uses HF's rotate-half layout, so HF ``LlamaForCausalLM`` weights load with a rename only (ml/hf.py).
* Document masking: with ``doc_ids`` a token attends only to earlier tokens of the same document.
  RoPE positions then restart at 0 at each document start (``doc_positions="restart"``, default), so
  every document's logits equal running that document alone. ``doc_positions="global"`` keeps the row's
  positions (torchtitan's choice). Both give the same logits up to rounding: a RoPE score depends only
  on the query-key offset and the mask keeps keys inside the document; restart keeps angles small.
* ``labels`` are already-shifted targets: ``labels[b, t]`` is the token to predict after ``tokens[b, t]``;
  -100 is ignored. The loss is the mean over non-ignored targets, computed chunk by chunk so the [N, V]
  logits never exist at once (fused linear + cross-entropy with its own backward).
* Init: every weight ~ N(0, init_std); the two residual-stream output projections (``o_proj``,
  ``down_proj``) use init_std / sqrt(2 * n_layers) (GPT-2 / nanoGPT scaling); norms start at 1.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Self

import torch
import torch.nn.functional as F
from torch import nn

from ml.config import PRESET_NAMES, ConfigError, StageConfig

try:  # FlexAttention: CUDA document masking; optional so the CPU path never needs it
    from torch.nn.attention.flex_attention import (
        BlockMask,
        _create_sparse_block_from_block_mask,
        create_block_mask,
        flex_attention,
    )
except ImportError:  # pragma: no cover - torch < 2.5
    BlockMask = create_block_mask = flex_attention = _create_sparse_block_from_block_mask = None

IGNORE_INDEX = -100
MODEL_PRESET_NAMES: tuple[str, ...] = (*PRESET_NAMES, "1b")

_LLAMA3 = dict(vocab_size=128256, rope_theta=500000.0, max_seq_len=8192, n_kv_heads=8)  # PAPER.md Table 3


@dataclasses.dataclass(frozen=True)
class ModelConfig(StageConfig):
    """Llama shape and numerics. Defaults are the paper's 8B (PAPER.md Table 3)."""

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
    attention: str = "auto"  # "auto": flex for doc masks on CUDA, else SDPA; "sdpa"; "flex"
    doc_positions: str = "restart"  # "restart": RoPE positions restart per document; "global": row position
    loss_chunk_tokens: int = 8192  # chosen: rows of logits per chunk in the fused linear+CE loss
    fuse_projections: bool = False  # one matmul for q|k|v and one for gate|up; off: not yet timed on GPU

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # chosen: CPU/CI size, ~1.8M params
        "tiny": dict(
            dim=128, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=384, vocab_size=4096, max_seq_len=256
        ),
        # chosen: the ~125M benchmark shape of the issue (125.8M params, untied). 16384 loss rows per chunk:
        # 1 ms/step faster than 8192 on an H100 at 16x2048 for +0.5 GiB (benchmarks/NOTES.md, round 4)
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
        if self.attention not in ("auto", "sdpa", "flex", "varlen"):
            raise ConfigError(f"{name}.attention must be auto|sdpa|flex|varlen, got {self.attention!r}")
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
    """cos and sin of every position's rotation angles, stacked: [2, max_seq_len, head_dim] fp32."""
    inv_freq = rope_frequencies(cfg, device)
    pos = torch.arange(cfg.max_seq_len, dtype=torch.int64, device=device).float()
    angles = torch.outer(pos, inv_freq)  # (T, Hd/2)
    angles = torch.cat((angles, angles), dim=-1)  # (T, Hd): HF layout, halves share frequencies
    return torch.stack((angles.cos(), angles.sin()))


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, n, T, Hd) by cos/sin of shape (T, Hd) or (B, T, Hd); fp32 math, x's dtype out."""
    if cos.dim() == 3:
        cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, Hd)
    return _rope_rows(x, cos, sin)


def _rope_rows(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The rotation for any layout of x, e.g. (B, T, n, Hd), with cos/sin already broadcastable to it."""
    xf = x.float()
    return (xf * cos + rotate_half(xf) * sin).to(x.dtype)


def doc_positions(doc_ids: torch.Tensor) -> torch.Tensor:
    """Position of each token inside its document: (B, T) -> (B, T), 0 at each document start."""
    T = doc_ids.shape[1]
    idx = torch.arange(T, device=doc_ids.device).expand_as(doc_ids)  # (B, T)
    starts = torch.ones_like(doc_ids, dtype=torch.bool)
    starts[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    start_idx = torch.where(starts, idx, torch.zeros_like(idx)).cummax(dim=1).values  # (B, T)
    return idx - start_idx


def doc_mask_dense(doc_ids: torch.Tensor) -> torch.Tensor:
    """Boolean SDPA mask (B, 1, T, T): True where query t may attend key s (s <= t, same document)."""
    T = doc_ids.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=doc_ids.device).tril()
    same_doc = doc_ids[:, :, None] == doc_ids[:, None, :]  # (B, T, T)
    return (same_doc & causal)[:, None]


@dataclasses.dataclass(frozen=True)
class PackedDocs:
    """Document boundaries of a (B, T) batch flattened to B*T tokens, for varlen FlashAttention.

    ``cu_seqlens`` (N+1,) int32: start offset of each document (a row start is always a start) then B*T;
    ``max_len``: an upper bound on document length (T), constant so compiled graphs are not re-traced.
    """

    cu_seqlens: torch.Tensor
    max_len: int


def packed_docs(doc_ids: torch.Tensor) -> PackedDocs:
    B, T = doc_ids.shape
    starts = torch.ones_like(doc_ids, dtype=torch.bool)
    starts[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    offsets = starts.flatten().nonzero().flatten()  # (N,) document starts in the flat B*T stream
    end = torch.tensor([B * T], device=doc_ids.device, dtype=offsets.dtype)
    return PackedDocs(torch.cat([offsets, end]).to(torch.int32), T)


def _varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, docs: PackedDocs) -> torch.Tensor:
    """Causal attention within documents on (B*T, H|K, Hd) tensors via torch's varlen FlashAttention."""
    from torch.nn.attention.varlen import varlen_attn

    cu, n = docs.cu_seqlens, docs.max_len
    if k.shape[1] != q.shape[1]:  # GQA: share each KV head across its group of query heads
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    return varlen_attn(q, k, v, cu, cu, n, n, window_size=(-1, 0))  # (B*T, H, Hd), (-1, 0) = causal


_COMPILED: dict = {}


def _compiled(fn, **compile_kwargs):
    """``torch.compile(fn)``, made once, for eager callers; ``fn`` itself while dynamo traces a caller (the
    outer graph compiles it). A wrapper made during a trace must not be kept: the eager path would later get
    the plain, uncompiled function (flex attention's unfused fallback)."""
    if torch.compiler.is_compiling():
        return fn
    if fn not in _COMPILED:
        _COMPILED[fn] = torch.compile(fn, **compile_kwargs)
    return _COMPILED[fn]


def doc_block_mask(doc_ids: torch.Tensor, block_size: int = 128) -> BlockMask:
    """FlexAttention block mask for causal attention within documents; built once per batch.

    ``block_size`` is the mask's tile (query and key tokens per block; torch's default 128). When T is a
    multiple of it, the block structure comes from each block's smallest and largest document id
    (``doc_range_blocks``: O(B (T/block)^2) work) instead of evaluating the mask at all T^2 token pairs as
    ``create_block_mask`` does; the token-level mask inside partial blocks is the same ``mask_mod``.
    """
    if create_block_mask is None:
        raise RuntimeError("FlexAttention needs torch >= 2.5 (torch.nn.attention.flex_attention)")
    T = doc_ids.shape[1]
    if T % block_size:  # a ragged last block: let torch evaluate the mask token by token
        return doc_block_mask_evaluated(doc_ids, block_size)
    # on CUDA compiled (0.07 ms at B16 x T2048 on an H100; eager launches ~30 small kernels, 2.2 ms)
    build = _compiled(_doc_range_block_mask) if doc_ids.is_cuda else _doc_range_block_mask
    return build(doc_ids, block_size)


def _doc_range_block_mask(doc_ids: torch.Tensor, block_size: int) -> BlockMask:
    T = doc_ids.shape[1]
    partial, full = doc_range_blocks(doc_ids, block_size)
    return _create_sparse_block_from_block_mask(
        (partial, full), _doc_mask_mod(doc_ids), (T, T), block_size, block_size
    )


def _doc_mask_mod(doc_ids: torch.Tensor):
    """FlexAttention mask_mod: query q may attend key kv of row b when kv <= q in the same document."""

    def mask_mod(b, h, q, kv):
        return (q >= kv) & (doc_ids[b, q] == doc_ids[b, kv])

    return mask_mod


def doc_range_blocks(doc_ids: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(partial, full) block masks (B, 1, T/block, T/block), bool, of the causal document mask.

    With lo/hi each block's smallest/largest document id, query block i and key block j <= i are
    * full when both blocks hold one and the same document and j < i (every pair is allowed);
    * partial (mask_mod decides per token) otherwise when the id ranges overlap: the diagonal always,
      and for packed rows (ids non-decreasing) exactly the blocks holding a pair of the same document.
    For ids in any order, overlap is necessary for a shared document, so no allowed pair is ever skipped.
    """
    B, T = doc_ids.shape
    n = T // block_size
    blocks = doc_ids.view(B, n, block_size)
    lo, hi = blocks.amin(dim=-1), blocks.amax(dim=-1)  # (B, n)
    idx = torch.arange(n, device=doc_ids.device)
    causal = idx[:, None] >= idx[None, :]  # (n, n): query block i, key block j
    before = idx[:, None] > idx[None, :]
    overlap = (hi[:, None, :] >= lo[:, :, None]) & (lo[:, None, :] <= hi[:, :, None])  # (B, n, n)
    one_doc = lo == hi
    full = before & one_doc[:, :, None] & one_doc[:, None, :] & (lo[:, :, None] == lo[:, None, :])
    partial = causal & overlap & ~full
    return partial[:, None], full[:, None]


def doc_block_mask_evaluated(doc_ids: torch.Tensor, block_size: int = 128) -> BlockMask:
    """The same block mask built by torch's ``create_block_mask`` (the mask evaluated at every token pair)."""
    B, T = doc_ids.shape
    build = _compiled(create_block_mask) if doc_ids.is_cuda else create_block_mask
    return build(_doc_mask_mod(doc_ids), B, None, T, T, device=doc_ids.device, BLOCK_SIZE=block_size)


# FlexAttention settings for the document mask, measured per (GPU compute capability, head dim, dtype) by
# benchmarks/flex_tuning.py (benchmarks/NOTES.md has the tables): FlexKernelOptions keys (tile sizes, warps,
# pipeline stages) plus "mask_block_size", the block mask's tile. Shapes with no measurement keep torch's
# defaults. ``set_flex_settings`` overrides the table (the tuner and the throughput benchmark use it).
# ROWS_GUARANTEED_SAFE and BLOCKS_ARE_CONTIGUOUS are never set: a document mask breaks both (a row's first
# visited key block can be all masked; a query block's partially masked key blocks, its document start
# and the diagonal, are not one contiguous run).
FLEX_TUNED: dict[tuple[tuple[int, int], int, torch.dtype], dict[str, int]] = {
    # H100 SXM, head dim 64, bf16 (the small and 1b presets), B=16, T=2048, 12/4 heads, one layer fwd+bwd:
    # 0.763 ms against 1.144 ms with torch's defaults (NOTES.md round 6). A 64-token mask visits 15% less
    # of the T x T plane than torch's 128 (partial blocks 7.4% instead of 14.0%), and its 64x64 tiles at 4
    # warps are also round 4's best backward; Inductor lowers it via offer_flex_bwd_tiles.
    ((9, 0), 64, torch.bfloat16): {
        "mask_block_size": 64,
        "fwd_BLOCK_M": 64,
        "fwd_BLOCK_N": 64,
        "fwd_num_warps": 4,
        "fwd_num_stages": 3,
        "bwd_BLOCK_M1": 64,
        "bwd_BLOCK_N1": 64,
        "bwd_BLOCK_M2": 64,
        "bwd_BLOCK_N2": 64,
        "bwd_num_warps": 4,
        "bwd_num_stages": 3,
    },
}
_flex_override: dict[str, int] | None = None


def set_flex_settings(settings: dict[str, int] | None) -> None:
    """Use ``settings`` for every flex call from now on; None goes back to the tuned table."""
    global _flex_override
    _flex_override = dict(settings) if settings is not None else None
    if settings is not None:
        offer_flex_bwd_tiles(settings)


@torch.compiler.assume_constant_result
def _cuda_capability(index: int) -> tuple[int, int]:
    # a constant to torch.compile (read once at trace time), so compiled graphs may look up FLEX_TUNED
    return torch.cuda.get_device_capability(index)


def split_flex_settings(settings: dict[str, int]) -> tuple[int, dict[str, int]]:
    """(block mask tile, FlexKernelOptions) of a settings dict; the tile defaults to torch's 128."""
    options = dict(settings)
    return options.pop("mask_block_size", 128), options


def flex_settings(device: torch.device, head_dim: int, dtype: torch.dtype) -> dict[str, int]:
    """The override if set, else the tuned entry for this GPU, head dim and dtype ({} if none)."""
    if _flex_override is not None:
        return dict(_flex_override)
    if device.type != "cuda":
        return {}
    index = device.index if device.index is not None else 0
    return dict(FLEX_TUNED.get((_cuda_capability(index), head_dim, dtype), {}))


# FlexBwDConfig field -> its FlexKernelOptions key in a settings dict
_BWD_TILES = {t: f"bwd_{t.upper()}" for t in ("block_m1", "block_n1", "block_m2", "block_n2")}
# block mask tile -> the settings (backward tiles, warps, stages) whose config Inductor is offered for it
_bwd_offers: dict[int, dict[str, int]] = {}


def _fits(conf: Any, block: int) -> bool:
    return all(block % getattr(conf, t) == 0 for t in _BWD_TILES)


def _offered_bwd_configs(configs: list[Any]) -> list[Any]:
    """``configs`` plus, for each registered mask tile that none of them divides, the registered config."""
    out = list(configs)
    for block, opts in _bwd_offers.items():
        if out and not any(_fits(c, block) for c in out):
            tiles = {t: opts[key] for t, key in _BWD_TILES.items()}
            extra = {k: opts[f"bwd_{k}"] for k in ("num_warps", "num_stages") if f"bwd_{k}" in opts}
            out.append(dataclasses.replace(out[-1], **tiles, **extra))
    return out


def offer_flex_bwd_tiles(settings: dict[str, int]) -> None:
    """Let Inductor lower FlexAttention's backward on a block mask smaller than its default tiles.

    ``settings`` is a flex settings dict; nothing happens unless its "mask_block_size" is under 128 and it
    names backward tiles. Inductor (torch 2.11 to 2.13) drops every backward config whose tiles do not divide
    the mask's tile, and it does so before ``kernel_options`` replace the tiles; its H100 default at head dim
    64 is 64x128/128x64, so a 64-token mask leaves no config (NoValidChoicesError) even when the options ask
    for 64x64. This adds the asked-for config to the list Inductor's choices return, only where no default
    fits. It wraps the class method rather than installing a choices handler: the backward is compiled
    lazily in autograd's device thread, which never sees a handler set in the calling thread (handlers are
    thread-local). Call it before tracing, as ``set_flex_settings`` and ``Llama.__init__`` (through
    ``offer_tuned_flex_tiles``) do: it is a side effect dynamo must not see."""
    block, options = split_flex_settings(settings)
    if block >= 128 or not any(k.startswith("bwd_") for k in options):
        return
    missing = [key for key in _BWD_TILES.values() if key not in options]
    if missing:
        raise ValueError(f"flex settings {settings}: a {block}-token block mask needs {missing} as well")
    _bwd_offers[block] = options
    from torch._inductor.choices import InductorChoices

    original = InductorChoices.get_flex_attention_bwd_configs
    if getattr(original, "_offers_tiles", False):
        return

    def get_flex_attention_bwd_configs(self, head_dim, dtype, device_type="cuda"):
        return _offered_bwd_configs(original(self, head_dim, dtype, device_type))

    get_flex_attention_bwd_configs._offers_tiles = True
    InductorChoices.get_flex_attention_bwd_configs = get_flex_attention_bwd_configs


def offer_tuned_flex_tiles() -> None:
    """offer_flex_bwd_tiles for every FLEX_TUNED entry; a Llama built where CUDA exists calls it (it imports
    Inductor, seconds, so it is not done at import or on CPU-only machines)."""
    for settings in FLEX_TUNED.values():
        offer_flex_bwd_tiles(settings)


def _flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: BlockMask) -> torch.Tensor:
    # flex_attention is only fast compiled; inside an already compiled graph dynamo inlines it.
    _, options = split_flex_settings(flex_settings(q.device, q.shape[-1], q.dtype))
    return _compiled(flex_attention, dynamic=False)(
        q, k, v, block_mask=block_mask, enable_gqa=True, kernel_options=options or None
    )


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
        self.split = (
            cfg.n_heads * cfg.head_dim,
            cfg.n_kv_heads * cfg.head_dim,
            cfg.n_kv_heads * cfg.head_dim,
        )

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | BlockMask | None
    ) -> torch.Tensor:
        B, T, _ = x.shape
        if self.fused:  # weights concatenated on the fly: one matmul, names and checkpoints stay HF's
            w = torch.cat((self.q_proj.weight, self.k_proj.weight, self.v_proj.weight))  # ((H+2K)*Hd, D)
            q, k, v = F.linear(x, w).split(self.split, dim=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if isinstance(mask, PackedDocs):  # documents packed as B*T tokens, rope in (B, T, n, Hd) layout
            c, s_ = (cos[:, :, None], sin[:, :, None]) if cos.dim() == 3 else (cos[:, None], sin[:, None])
            q = _rope_rows(q.view(B, T, self.n_heads, self.head_dim), c, s_).flatten(0, 1)  # (B*T, H, Hd)
            k = _rope_rows(k.view(B, T, self.n_kv_heads, self.head_dim), c, s_).flatten(0, 1)  # (B*T, K, Hd)
            y = _varlen(q, k, v.reshape(B * T, self.n_kv_heads, self.head_dim), mask)  # (B*T, H, Hd)
            return self.o_proj(y.reshape(B, T, self.n_heads * self.head_dim))  # (B, T, D)
        q = q.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, Hd)
        k = k.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, K, T, Hd)
        v = v.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, K, T, Hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if BlockMask is not None and isinstance(mask, BlockMask):
            y = _flex(q, k, v, mask)  # (B, H, T, Hd)
        elif mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:  # dense boolean document mask (B, 1, T, T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        y = y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)  # (B, T, H*Hd)
        return self.o_proj(y)  # (B, T, D)


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
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | BlockMask | None
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)  # (B, T, D)
        return x + self.mlp(self.post_attention_layernorm(x))  # (B, T, D)


# ---------------------------------------------------------------------------------------------------------
# Fused linear + cross-entropy: logits exist one chunk of rows at a time, forward and backward.


def _ce_chunk(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor, with_grad: bool):
    """Loss sum of one chunk and, if asked, d(loss sum)/dh and /dw. h (c, D), w (V, D), y (c,)."""
    logits = (h @ w.t()).float()  # (c, V)
    lse = torch.logsumexp(logits, dim=-1)  # (c,)
    valid = y != IGNORE_INDEX  # (c,)
    y0 = torch.where(valid, y, torch.zeros_like(y))
    target = logits.gather(1, y0[:, None]).squeeze(1)  # (c,)
    loss_sum = torch.where(valid, lse - target, torch.zeros_like(lse)).sum()
    if not with_grad:
        return loss_sum, None, None
    g = torch.exp(logits - lse[:, None])  # softmax (c, V)
    onehot = torch.arange(w.shape[0], device=y.device)[None, :] == y0[:, None]
    g = torch.where(valid[:, None], g - onehot.float(), torch.zeros_like(g)).to(h.dtype)  # (c, V)
    return loss_sum, g @ w, (g.t() @ h).float()  # (), (c, D), (V, D) fp32


def _ce_chunk_fn(device: torch.device):
    return _compiled(_ce_chunk, dynamic=False) if device.type == "cuda" else _ce_chunk


class LinearCrossEntropy(torch.autograd.Function):
    """mean CE(h @ w.T, y) over non-ignored rows; gradients computed chunk by chunk in forward."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, w: torch.Tensor, y: torch.Tensor, chunk: int) -> torch.Tensor:
        fn = _ce_chunk_fn(h.device)
        with_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        n_valid = (y != IGNORE_INDEX).sum()
        loss = torch.zeros((), dtype=torch.float32, device=h.device)
        grad_h = torch.empty_like(h) if with_grad else None
        grad_w = torch.zeros(w.shape, dtype=torch.float32, device=w.device) if with_grad else None
        for s in range(0, h.shape[0], chunk):
            loss_c, gh, gw = fn(h[s : s + chunk], w, y[s : s + chunk], with_grad)
            loss = loss + loss_c
            if with_grad:
                grad_h[s : s + chunk] = gh
                grad_w += gw
        mean = loss / n_valid  # 0 valid targets -> nan, as F.cross_entropy
        if with_grad:
            ctx.save_for_backward(grad_h, grad_w.to(w.dtype), n_valid)
        return mean

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_h, grad_w, n_valid = ctx.saved_tensors
        scale = grad_out / n_valid
        return (grad_h * scale.to(grad_h.dtype), grad_w * scale.to(grad_w.dtype), None, None)


def linear_cross_entropy(
    h: torch.Tensor, w: torch.Tensor, labels: torch.Tensor, chunk: int = 8192
) -> torch.Tensor:
    """Mean cross-entropy of logits h @ w.T (N, V) against labels (N,), ignoring -100, in row chunks.

    Under autocast both operands are cast to the autocast dtype first, as nn.Linear would be.
    """
    dev = h.device.type
    if torch.is_autocast_enabled(dev):
        dtype = torch.get_autocast_dtype(dev)
        h, w = h.to(dtype), w.to(dtype)
    with torch.autocast(dev, enabled=False):
        return LinearCrossEntropy.apply(h, w, labels, chunk)


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
        if cfg.attention in ("auto", "flex") and torch.cuda.is_available():
            offer_tuned_flex_tiles()  # never traced, and before any compile of this model

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

    def _attention_mask(self, doc_ids: torch.Tensor | None) -> torch.Tensor | BlockMask | PackedDocs | None:
        if doc_ids is None:
            return None  # plain causal: SDPA's is_causal path
        if self.cfg.attention == "varlen" and doc_ids.is_cuda:
            return packed_docs(doc_ids)
        use_flex = self.cfg.attention == "flex" or (self.cfg.attention == "auto" and doc_ids.is_cuda)
        if not use_flex:
            return doc_mask_dense(doc_ids)
        dev = doc_ids.device.type
        dtype = (
            torch.get_autocast_dtype(dev)
            if torch.is_autocast_enabled(dev)
            else self.embed_tokens.weight.dtype
        )
        block, _ = split_flex_settings(flex_settings(doc_ids.device, self.cfg.head_dim, dtype))
        return doc_block_mask(doc_ids, block)

    def hidden_states(self, tokens: torch.Tensor, doc_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Final-norm hidden states (B, T, D)."""
        B, T = tokens.shape
        if T > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {T} exceeds max_seq_len={self.cfg.max_seq_len}")
        if doc_ids is not None and doc_ids.shape != tokens.shape:
            raise ValueError(f"doc_ids shape {tuple(doc_ids.shape)} != tokens shape {tuple(tokens.shape)}")
        rope = self.rope.float()
        if doc_ids is not None and self.cfg.doc_positions == "restart":
            pos = doc_positions(doc_ids)  # (B, T)
            cos, sin = rope[0][pos], rope[1][pos]  # (B, T, Hd)
        else:
            cos, sin = rope[0, :T], rope[1, :T]  # (T, Hd)
        mask = self._attention_mask(doc_ids)
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
