"""Row-wise dynamic FP8 (e4m3) inference for the FFN matmuls (Llama 3 paper §6.2).

What is quantized, as in the paper: the three SwiGLU projections (gate, up, down) of every transformer
layer except the first and the last; attention, norms, embeddings and the LM head keep their dtype.

How, as fbgemm's ``quantize_fp8_row`` (the kernel behind the paper's serving stack) does it:

* weights: one scale per output row, ``scale = amax(row) / 448`` (448 = largest finite e4m3), computed
  once when the module is converted;
* activations: one scale per token (row of the flattened input), computed on every call ("dynamic"). The
  row's amax is first clamped to ``scale_ub`` (1200 in the paper), then ``scale = amax / 448``; elements
  beyond the bound saturate at +-448 after scaling. The bound keeps one outlier token from flattening
  every other value of its row towards zero (the paper's "upper bounding dynamic scaling factors"). It is
  not applied to weights: they are static and their amax is known.
* the product ``y = (x_q @ w_q^T) * scale_x * scale_w^T`` accumulates in fp32. On CUDA with compute
  capability >= 8.9 this is ``torch._scaled_mm`` (FP8 tensor cores); anywhere else the same quantized
  operands are cast to fp32 and multiplied, an exact reference of the same quantization, so CPU runs and
  tests see the numbers the GPU path sees up to the GPU's accumulation order and output rounding.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn

from ml.config import ConfigError, StageConfig

E4M3 = torch.float8_e4m3fn
E4M3_MAX = 448.0  # torch.finfo(torch.float8_e4m3fn).max
AMAX_EPS = 1e-12  # fbgemm's floor on a row's amax: an all-zero row gets a tiny scale, never 0/0
FFN_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


@dataclasses.dataclass(frozen=True)
class FP8Config(StageConfig):
    """Which layers go to FP8 and the activation scale bound."""

    scale_ub: float = 1200.0  # Llama 3 paper §6.2: upper bound on a token row's amax
    skip_first_layers: int = 1  # Llama 3 paper §6.2: first layer kept in high precision
    skip_last_layers: int = 1  # Llama 3 paper §6.2: last layer kept in high precision
    use_scaled_mm: bool = True  # torch._scaled_mm on CUDA capability >= 8.9; False forces the reference
    # Hopper's fast FP8 accumulation (fewer promotions of the tensor-core partial sums to fp32): the default
    # of fbgemm's f8f8bf16_rowwise, the serving kernel the paper names. GPU only; the reference is exact.
    fast_accum: bool = True

    # The paper's recipe is the same at every size; presets exist so every stage loads the same way.
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {},
        "small": {},
        "8b": {},
        "70b": {},
        "405b": {},
    }

    def __post_init__(self) -> None:
        if not self.scale_ub > 0:
            raise ConfigError(f"FP8Config.scale_ub must be > 0, got {self.scale_ub}")
        for name in ("skip_first_layers", "skip_last_layers"):
            if getattr(self, name) < 0:
                raise ConfigError(f"FP8Config.{name} must be >= 0, got {getattr(self, name)}")


def row_scales(x: torch.Tensor, scale_ub: float | None = None) -> torch.Tensor:
    """fp32 scale of each row of ``x`` (..., K) -> (..., 1): min(amax, scale_ub) / 448."""
    amax = x.detach().abs().amax(dim=-1, keepdim=True).float()
    if scale_ub is not None:
        amax = amax.clamp(max=scale_ub)
    # divide by a tensor: CUDA turns division by a Python scalar into multiplication by its rounded
    # reciprocal, which can differ from the CPU's correctly rounded quotient in the last bit
    return amax.clamp(min=AMAX_EPS) / amax.new_tensor(E4M3_MAX)


def quantize_rows(x: torch.Tensor, scale_ub: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_q e4m3, scale fp32) with x ~= x_q * scale row by row; values past the bound saturate."""
    scale = row_scales(x, scale_ub)
    q = (x.float() / scale).clamp(-E4M3_MAX, E4M3_MAX)  # round-to-nearest-even happens in the cast
    return q.to(E4M3), scale


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale


def fp8_matmul_reference(
    x_q: torch.Tensor, x_scale: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor
) -> torch.Tensor:
    """fp32 (M, N) = (x_q @ w_q^T) * x_scale * w_scale^T; x_q (M, K), w_q (N, K), scales (M, 1), (N, 1).

    Every product of two e4m3 values is exact in fp32 (4-bit significands), so this differs from the
    tensor-core result only by the order of the fp32 sums.
    """
    return (x_q.float() @ w_q.float().t()) * x_scale * w_scale.t()


def scaled_mm_supported(device: torch.device) -> bool:
    """FP8 tensor cores: CUDA compute capability 8.9 (Ada) or newer (Hopper 9.0)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


def fp8_matmul_scaled_mm(
    x_q: torch.Tensor,
    x_scale: torch.Tensor,
    w_q: torch.Tensor,
    w_scale: torch.Tensor,
    fast_accum: bool = False,
) -> torch.Tensor:
    """bf16 (M, N) through ``torch._scaled_mm``: row-wise scales need a bf16 output and K, N % 16 == 0."""
    # _scaled_mm wants its second operand column-major: w_q (N, K) row-major, transposed, is exactly that
    return torch._scaled_mm(
        x_q,
        w_q.t(),
        scale_a=x_scale,
        scale_b=w_scale.t(),
        out_dtype=torch.bfloat16,
        use_fast_accum=fast_accum,
    )


class FP8Linear(nn.Module):
    """A bias-free nn.Linear replaced by e4m3 weights with per-output-row scales, FP8 activations per token.

    Buffers: ``weight_fp8`` (N, K) float8_e4m3fn, ``weight_scale`` (N, 1) fp32. The output has the input's
    dtype.
    """

    def __init__(
        self, linear: nn.Linear, scale_ub: float, use_scaled_mm: bool = True, fast_accum: bool = False
    ):
        super().__init__()
        if linear.bias is not None:
            raise ValueError("FP8Linear converts bias-free Linear modules only (Llama has no biases)")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.scale_ub = scale_ub
        self.use_scaled_mm = use_scaled_mm
        self.fast_accum = fast_accum
        w_q, w_scale = quantize_rows(linear.weight.detach())
        self.register_buffer("weight_fp8", w_q)
        self.register_buffer("weight_scale", w_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x_q, x_scale = quantize_rows(x.reshape(-1, self.in_features), self.scale_ub)  # (N_tok, K), (N_tok, 1)
        if self.use_scaled_mm and scaled_mm_supported(x.device) and self._scaled_mm_shapes_ok():
            y = fp8_matmul_scaled_mm(x_q, x_scale, self.weight_fp8, self.weight_scale, self.fast_accum)
        else:
            y = fp8_matmul_reference(x_q, x_scale, self.weight_fp8, self.weight_scale)
        return y.to(x.dtype).reshape(*lead, self.out_features)

    def _apply(self, fn, recurse=True):
        """Device moves apply, dtype casts do not: ``model.to(torch.bfloat16)`` would otherwise turn the
        e4m3 weights into bf16 and round the fp32 scales."""

        def keep_dtype(t: torch.Tensor) -> torch.Tensor:
            out = fn(t)
            return out if out.dtype == t.dtype else t.to(out.device)

        return super()._apply(keep_dtype, recurse)

    def _scaled_mm_shapes_ok(self) -> bool:
        return self.in_features % 16 == 0 and self.out_features % 16 == 0

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, scale_ub={self.scale_ub}, "
            f"fast_accum={self.fast_accum}"
        )


def _ffn_of(block: nn.Module) -> nn.Module:
    """The block's SwiGLU module: the child holding gate/up/down projections."""
    for child in block.children():
        if all(isinstance(getattr(child, name, None), nn.Linear | FP8Linear) for name in FFN_PROJECTIONS):
            return child
    raise ValueError(f"{type(block).__name__} has no child with {', '.join(FFN_PROJECTIONS)} projections")


def fp8_layer_indices(n_layers: int, cfg: FP8Config) -> list[int]:
    """Indices of the transformer layers whose FFN goes to FP8: all but the first and last few."""
    return list(range(cfg.skip_first_layers, max(cfg.skip_first_layers, n_layers - cfg.skip_last_layers)))


@torch.no_grad()
def quantize_model(model: nn.Module, cfg: FP8Config) -> nn.Module:
    """Convert ``model`` in place (``model.layers`` blocks): FFN projections of the middle layers to FP8Linear.

    Returns the same model; :func:`fp8_summary` reports what was converted. A fused gate|up projection is
    switched off in converted FFNs (it concatenates the high-precision weights, which are gone).
    """
    for i in fp8_layer_indices(len(model.layers), cfg):
        ffn = _ffn_of(model.layers[i])
        for name in FFN_PROJECTIONS:
            lin = getattr(ffn, name)
            if isinstance(lin, nn.Linear):
                setattr(ffn, name, FP8Linear(lin, cfg.scale_ub, cfg.use_scaled_mm, cfg.fast_accum))
        if getattr(ffn, "fused", False):
            ffn.fused = False
    return model


def fp8_summary(model: nn.Module) -> dict[str, Any]:
    """Which layers run their FFN in FP8, which stay in high precision, and the FP8 module names."""
    fp8_layers, kept = [], []
    for i, block in enumerate(model.layers):
        ffn = _ffn_of(block)
        converted = [isinstance(getattr(ffn, name), FP8Linear) for name in FFN_PROJECTIONS]
        (fp8_layers if all(converted) else kept).append(i)
    modules = [name for name, m in model.named_modules() if isinstance(m, FP8Linear)]
    return {"fp8_layers": fp8_layers, "high_precision_layers": kept, "fp8_modules": modules}
