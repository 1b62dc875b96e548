"""ml/model/flops.py: closed-form parameter counts and FLOPs per token, checked by hand."""

import pytest

from ml.model.flops import flops_per_token, matmul_params, mfu, num_params
from ml.model.llama import ModelConfig

SMALL = ModelConfig.from_preset("small")


def test_small_counts_by_hand():
    layer = 2 * 768 * 768 + 2 * 768 * 256 + 3 * 768 * 2048  # q,o + k,v + gate,up,down = 6_291_456
    assert matmul_params(SMALL) == 12 * layer + 32768 * 768 == 100_663_296
    assert num_params(SMALL) == 125_848_320
    assert num_params(SMALL, exclude_embeddings=True) == 125_848_320 - 32768 * 768


def test_tied_embedding_counted_once():
    cfg = ModelConfig.from_preset("1b")
    assert num_params(cfg) == num_params(cfg, exclude_embeddings=True) == 1_235_814_400


def test_flops_per_token_and_mfu():
    # 6 * 100_663_296 + 6 * 12 * 768 * 2048 (causal half of attention)
    assert flops_per_token(SMALL, 2048) == 603_979_776 + 113_246_208
    assert flops_per_token(SMALL, 2048, causal=False) == 603_979_776 + 226_492_416
    assert mfu(1e6, SMALL, 2048, peak_flops=717_225_984e6) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="peak_flops"):
        mfu(1.0, SMALL, 2048, 0.0)


@pytest.mark.parametrize("preset,billions", [("8b", 8.03), ("70b", 70.55), ("405b", 405.85)])
def test_paper_sizes(preset, billions):
    assert num_params(ModelConfig.from_preset(preset)) / 1e9 == pytest.approx(billions, abs=0.01)
