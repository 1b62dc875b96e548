"""FP8 quantization: the e4m3 error bound, the scale bound, which layers convert, logits, GPU = CPU reference.

The error bound used throughout: e4m3 keeps 3 mantissa bits, so rounding to nearest moves a value whose
scaled magnitude is normal (>= 2**-6) by at most half a unit in the last place, 2**-4 of its leading
power of two, hence relative error <= 2**-4. Below 2**-6 (subnormals, spacing 2**-9) the absolute error
of the scaled value is <= 2**-10, i.e. <= 2**-10 * scale after dequantization. A slack of 1e-6 relative
covers the fp32 division x / scale.
"""

import copy

import pytest
import torch
from torch import nn

from ml.config import ConfigError
from ml.infer.fp8 import (
    E4M3_MAX,
    FP8Config,
    FP8Linear,
    dequantize_rows,
    fp8_layer_indices,
    fp8_matmul_reference,
    fp8_summary,
    quantize_model,
    quantize_rows,
    row_scales,
    scaled_mm_supported,
)
from ml.model.llama import Llama, ModelConfig

MIN_NORMAL = 2.0**-6


def _error_bound(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    normal = x.abs() / scale >= MIN_NORMAL
    return torch.where(normal, 2.0**-4 * x.abs(), 2.0**-10 * scale) * (1 + 1e-6)


def test_row_quantization_error_within_the_e4m3_bound():
    g = torch.Generator().manual_seed(0)
    # rows spanning six decades, so values land in the normal and the subnormal range of e4m3
    x = torch.randn(64, 256, generator=g) * torch.logspace(-3, 3, 64)[:, None]
    q, scale = quantize_rows(x)
    err = (dequantize_rows(q, scale) - x).abs()
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (64, 1)
    assert bool((err <= _error_bound(x, scale)).all())
    # the bound is tight: some element really loses close to 2**-4 of its value
    normal = x.abs() / scale >= MIN_NORMAL
    assert (err[normal] / x.abs()[normal]).max().item() > 0.05


def test_the_bound_detects_a_coarser_format():
    """The bound can fail: e5m2 (2 mantissa bits) breaks it on the same data."""
    x = torch.randn(8, 128, generator=torch.Generator().manual_seed(1))
    scale = row_scales(x)
    coarse = (x / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e5m2).float() * scale
    assert not bool(((coarse - x).abs() <= _error_bound(x, scale)).all())


def test_row_amax_maps_to_448_and_zero_rows_stay_zero():
    x = torch.tensor([[0.5, -2.0, 1.0], [0.0, 0.0, 0.0]])
    q, scale = quantize_rows(x)
    assert scale[0, 0].item() == pytest.approx(2.0 / 448)
    assert q.float()[0, 1].item() == -448.0
    assert torch.equal(dequantize_rows(q, scale)[1], torch.zeros(3))


def test_scale_upper_bound_clamps_the_amax_before_the_scale():
    x = torch.tensor([[5000.0, 600.0, -1.0], [10.0, 1.0, -3.0]])
    q, scale = quantize_rows(x, scale_ub=1200.0)
    assert scale[:, 0].tolist() == pytest.approx([1200.0 / 448, 10.0 / 448])
    deq = dequantize_rows(q, scale)
    assert deq[0, 0].item() == pytest.approx(1200.0)  # saturated at the bound, not 5000
    assert deq[0, 1].item() == pytest.approx(600.0, rel=2**-4)
    # without the bound the same row's scale follows the outlier and the small value is lost
    _, free = quantize_rows(x)
    assert free[0, 0].item() == pytest.approx(5000.0 / 448)


def test_fp8_linear_weights_are_quantized_per_output_row_without_the_bound():
    lin = nn.Linear(32, 16, bias=False)
    with torch.no_grad():
        lin.weight.mul_(torch.arange(1, 17, dtype=torch.float32)[:, None] * 1000)  # rows past 1200
    fp8 = FP8Linear(lin, scale_ub=1200.0)
    expected = lin.weight.abs().amax(dim=1, keepdim=True) / 448
    assert torch.allclose(fp8.weight_scale, expected, rtol=1e-6)
    x = torch.randn(3, 5, 32)
    y = fp8(x)
    x_q, x_s = quantize_rows(x.reshape(-1, 32), 1200.0)
    ref = fp8_matmul_reference(x_q, x_s, fp8.weight_fp8, fp8.weight_scale).reshape(3, 5, 16)
    assert y.shape == (3, 5, 16) and torch.equal(y, ref)


def test_fp8_linear_keeps_its_dtypes_when_the_model_is_cast():
    fp8 = nn.Sequential(FP8Linear(nn.Linear(32, 16, bias=False), scale_ub=1200.0))
    scale = fp8[0].weight_scale.clone()
    fp8.to(torch.bfloat16)
    assert fp8[0].weight_fp8.dtype == torch.float8_e4m3fn and fp8[0].weight_scale.dtype == torch.float32
    assert torch.equal(fp8[0].weight_scale, scale)
    assert fp8(torch.randn(2, 32, dtype=torch.bfloat16)).dtype == torch.bfloat16


def _tiny() -> Llama:
    torch.manual_seed(0)
    return Llama.from_config(ModelConfig.from_preset("tiny"))


def test_quantize_model_converts_middle_ffns_only():
    model = _tiny()
    original = copy.deepcopy(model)
    quantize_model(model, FP8Config.from_preset("tiny"))
    assert fp8_summary(model) == {
        "fp8_layers": [1, 2],
        "high_precision_layers": [0, 3],
        "fp8_modules": [f"layers.{i}.mlp.{p}" for i in (1, 2) for p in ("gate_proj", "up_proj", "down_proj")],
    }
    for i in (0, 3):  # first and last layers: same module types, identical weights
        for name in ("gate_proj", "up_proj", "down_proj"):
            lin = getattr(model.layers[i].mlp, name)
            assert type(lin) is nn.Linear
            assert torch.equal(lin.weight, getattr(original.layers[i].mlp, name).weight)
    fp8_names = {f"layers.{i}.mlp.{p}.weight" for i in (1, 2) for p in ("gate_proj", "up_proj", "down_proj")}
    before = original.state_dict()
    after = model.state_dict()
    for name, tensor in before.items():  # attention, norms, embeddings, head: untouched
        if name not in fp8_names:
            assert torch.equal(after[name], tensor), name
    for block, before_block in zip(model.layers, original.layers, strict=True):  # attention: same modules
        assert type(block.self_attn) is type(before_block.self_attn)
        assert [type(m) for m in block.self_attn.modules()] == [
            type(m) for m in before_block.self_attn.modules()
        ]
        assert all(type(m) is nn.Linear for m in block.self_attn.children())


def test_layer_selection_edges():
    cfg = FP8Config.from_preset("8b")
    assert fp8_layer_indices(32, cfg) == list(range(1, 31))
    assert fp8_layer_indices(2, cfg) == []
    assert fp8_layer_indices(4, cfg.replace(skip_first_layers=0, skip_last_layers=2)) == [0, 1]
    with pytest.raises(ConfigError, match="scale_ub"):
        FP8Config(scale_ub=0.0)
    with pytest.raises(ConfigError, match="skip_last_layers"):
        FP8Config(skip_last_layers=-1)


def test_quantized_tiny_llama_logits_stay_close():
    """Tolerance: relative L2 error of the logits < 2% (1.3% measured) and mean KL(original || fp8) of the
    next-token distributions < 1e-4 nats (4.5e-6 measured). Argmax agreement is no test at random init:
    the logits are nearly flat, so ties flip under any perturbation."""
    model = _tiny()
    tokens = torch.randint(0, 4096, (2, 64), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(tokens)
        out = quantize_model(model, FP8Config()).eval()(tokens)
    rel = ((out - ref).norm() / ref.norm()).item()
    lp, lq = ref.log_softmax(-1), out.log_softmax(-1)
    kl = (lp.exp() * (lp - lq)).sum(-1).mean().item()
    assert 0 < rel < 0.02
    assert 0 < kl < 1e-4


gpu = pytest.mark.skipif(
    not (torch.cuda.is_available() and scaled_mm_supported(torch.device("cuda"))),
    reason="needs a CUDA device of compute capability >= 8.9",
)


@pytest.mark.gpu
@gpu
def test_gpu_scaled_mm_equals_the_cpu_reference():
    """Bit-identical quantized operands and scales on both devices; outputs within one bf16 rounding
    (rtol 2**-7) of the fp32 reference: only the order of the fp32 sums and the output rounding differ."""
    torch.manual_seed(3)
    lin = nn.Linear(256, 384, bias=False)
    x = (torch.randn(4, 32, 256) * 3).to(torch.bfloat16)
    x[0, 0, 0] = 5000.0  # a token past the scale bound
    cpu = FP8Linear(lin, scale_ub=1200.0)
    ref = cpu(x.float()).to(torch.bfloat16)
    dev = FP8Linear(lin.cuda(), scale_ub=1200.0, fast_accum=False)
    assert torch.equal(dev.weight_fp8.cpu().float(), cpu.weight_fp8.float())
    assert torch.equal(dev.weight_scale.cpu(), cpu.weight_scale)
    (q_cpu, s_cpu), (q_dev, s_dev) = quantize_rows(x, 1200.0), quantize_rows(x.cuda(), 1200.0)
    assert torch.equal(q_dev.cpu().float(), q_cpu.float()) and torch.equal(s_dev.cpu(), s_cpu)
    out = dev(x.cuda())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float().cpu(), ref.float(), rtol=2**-7, atol=1e-3)


@pytest.mark.gpu
@gpu
def test_gpu_fast_accumulation_stays_near_the_exact_product():
    """Hopper's fast FP8 accumulation (fbgemm's default) against exact accumulation on the same quantized
    operands, K = 4096 (a long sum, where fewer fp32 promotions show): relative L2 below 1e-2."""
    torch.manual_seed(4)
    lin = nn.Linear(4096, 1024, bias=False).cuda()
    x = torch.randn(256, 4096, device="cuda").to(torch.bfloat16)
    exact = FP8Linear(lin, scale_ub=1200.0, fast_accum=False)(x).float()
    fast = FP8Linear(lin, scale_ub=1200.0, fast_accum=True)(x).float()
    rel = ((fast - exact).norm() / exact.norm()).item()
    assert rel < 1e-2, rel
