"""KV-cache decoding: logits with the cache equal the full forward, also for left-padded rows."""

from __future__ import annotations

import pytest
import torch

from ml.model.llama import KVCache, Llama, ModelConfig

CFG = ModelConfig.from_preset("tiny", dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, vocab_size=97)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Llama.from_config(CFG).eval()


def test_prefill_then_steps_equal_full_forward(model):
    tokens = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(tokens)  # (2, 9, V)
        cache = KVCache.empty(CFG, 2, 9, "cpu", torch.float32)
        pos = torch.arange(9).expand(2, 9)
        ones = torch.ones(2, 9, dtype=torch.bool)
        parts = [model.forward_cached(tokens[:, :5], pos[:, :5], ones[:, :5], cache)]
        for t in range(5, 9):
            parts.append(model.forward_cached(tokens[:, t : t + 1], pos[:, t : t + 1], ones[:, :1], cache))
    assert cache.length == 9
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)


def test_left_padded_row_equals_the_prompt_alone(model):
    padded = torch.tensor([[0, 0, 0, 5, 6, 7]])
    real = torch.tensor([[False, False, False, True, True, True]])
    pos = torch.tensor([[0, 0, 0, 0, 1, 2]])
    with torch.no_grad():
        alone = model(torch.tensor([[5, 6, 7, 8]]))
        cache = KVCache.empty(CFG, 1, 7, "cpu", torch.float32)
        pre = model.forward_cached(padded, pos, real, cache)
        step = model.forward_cached(torch.tensor([[8]]), torch.tensor([[3]]), torch.tensor([[True]]), cache)
    torch.testing.assert_close(pre[:, 3:], alone[:, :3], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(step[:, 0], alone[:, 3], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(pre).all()  # pad queries see themselves, no NaN rows


def test_decoding_past_the_cache_is_an_error(model):
    cache = KVCache.empty(CFG, 1, 2, "cpu", torch.float32)
    with pytest.raises(ValueError, match="past the cache"):
        model.forward_cached(
            torch.zeros(1, 3, dtype=torch.long),
            torch.zeros(1, 3, dtype=torch.long),
            torch.ones(1, 3, dtype=torch.bool),
            cache,
        )
