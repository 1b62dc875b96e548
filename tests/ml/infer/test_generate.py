"""Generation: greedy with the cache equals decoding without it, top-p on exact numbers, stop tokens."""

from __future__ import annotations

import pytest
import torch

from ml.infer.generate import SamplingConfig, generate, sample_next, top_p_filter
from ml.model.llama import Llama, ModelConfig

CFG = ModelConfig.from_preset("tiny", dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, vocab_size=97)
PROMPTS = [[3, 14, 15, 92, 65], [35, 89], [79, 32, 38, 46, 26, 43, 38, 32]]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Llama.from_config(CFG).eval()


def greedy_without_cache(model, prompt, n, stop):
    """The reference: full forward of the whole sequence at every step, one prompt at a time."""
    ids = list(prompt)
    for _ in range(n):
        with torch.no_grad():
            nxt = int(model(torch.tensor([ids]))[0, -1].argmax())
        ids.append(nxt)
        if nxt in stop:
            break
    return ids[len(prompt) :]


def test_greedy_batched_with_cache_equals_no_cache(model):
    res = generate(model, PROMPTS, stop_ids=[], cfg=SamplingConfig(max_new_tokens=12, temperature=0))
    ref = [greedy_without_cache(model, p, 12, ()) for p in PROMPTS]
    assert res.tokens == ref
    assert (res.new_tokens, res.prompt_tokens, res.stopped) == (36, 15, [False, False, False])
    assert res.tokens_per_s == pytest.approx(36 / res.seconds)


def test_rows_stop_at_their_stop_token(model):
    ref = [greedy_without_cache(model, p, 12, ()) for p in PROMPTS]
    stop = ref[0][3]  # the 4th token of row 0 becomes a stop token
    res = generate(model, PROMPTS, stop_ids=[stop], cfg=SamplingConfig(max_new_tokens=12, temperature=0))
    expect = [greedy_without_cache(model, p, 12, (stop,)) for p in PROMPTS]
    assert res.tokens == expect and res.tokens[0] == ref[0][: ref[0].index(stop) + 1]
    assert res.stopped == [r[-1] == stop for r in expect]


def test_top_p_filter_exact():
    logits = torch.tensor([[0.5, 0.3, 0.2]]).log()
    assert torch.isinf(top_p_filter(logits, 0.7)).tolist() == [[False, False, True]]
    assert torch.isinf(top_p_filter(logits, 0.5)).tolist() == [
        [False, True, True]
    ]  # 0.5 before #2 is not < 0.5
    assert torch.isinf(top_p_filter(logits, 0.01)).tolist() == [[False, True, True]]  # top token always kept
    assert top_p_filter(logits, 1.0) is logits


def test_sampling_is_seeded_and_tiny_top_p_is_greedy(model):
    cfg = SamplingConfig(max_new_tokens=8, temperature=1.0, seed=7)
    a, b = generate(model, PROMPTS, [], cfg), generate(model, PROMPTS, [], cfg)
    assert a.tokens == b.tokens
    greedy = generate(model, PROMPTS, [], SamplingConfig(max_new_tokens=8, temperature=0))
    nucleus = generate(model, PROMPTS, [], SamplingConfig(max_new_tokens=8, temperature=0.7, top_p=1e-6))
    assert nucleus.tokens == greedy.tokens
    g = torch.Generator().manual_seed(0)
    draws = [int(sample_next(torch.tensor([[0.0, 0.0, 20.0]]), 1.0, 1.0, g)) for _ in range(50)]
    assert draws.count(2) >= 49  # p(2) = 1 - 2e-9


def test_bad_input_is_named(model):
    with pytest.raises(ValueError, match="prompt #1 is empty"):
        generate(model, [[1], []], [])
    with pytest.raises(ValueError, match="prompt #0 has a token id outside"):
        generate(model, [[97]], [])
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0)
