"""The evaluation sampler: batched left-padded greedy decoding equals one prompt at a time with the plain
causal model, stop tokens cut, seeded sampling repeats, top-1 sampling is greedy, long prompts keep their end."""

import pytest
import torch

from ml.config import ConfigError
from ml.infer.sample import SampleConfig, sample, sample_batch
from ml.model.llama import Llama, ModelConfig


@pytest.fixture(scope="module")
def model() -> Llama:
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset("tiny", vocab_size=97, max_seq_len=48, dim=64, n_layers=2, ffn_dim=128)
    return Llama.from_config(cfg).eval()


def _greedy_alone(model: Llama, prompt: list[int], n: int) -> list[int]:
    """Reference: no padding, no doc ids, full logits, one token at a time."""
    tokens = list(prompt)
    for _ in range(n):
        logits = model(torch.tensor([tokens]))  # (1, T, V)
        tokens.append(int(logits[0, -1].argmax()))
    return tokens[len(prompt) :]


def test_batched_left_padded_greedy_equals_each_prompt_alone(model):
    prompts = [[5, 9, 2], [7, 1, 3, 3, 8, 40, 11, 6], [12]]
    cfg = SampleConfig(max_new_tokens=6, batch_size=2)
    got = sample(model, prompts, cfg)
    assert got == [_greedy_alone(model, p, 6) for p in prompts]
    assert all(len(g) == 6 for g in got)


def test_generation_stops_before_the_first_stop_token(model):
    prompt = [5, 9, 2]
    free = _greedy_alone(model, prompt, 6)
    stop = free[3]
    cut = sample_batch(model, [prompt], SampleConfig(max_new_tokens=6), stop_ids=[stop])[0]
    assert cut == free[: free.index(stop)]


def test_seeded_sampling_repeats_and_top1_is_greedy(model):
    prompts = [[5, 9, 2], [3, 3]]
    hot = SampleConfig(max_new_tokens=8, temperature=1.0, seed=3)
    assert sample(model, prompts, hot) == sample(model, prompts, hot)
    top1 = SampleConfig(max_new_tokens=8, temperature=1.0, top_k=1)
    assert sample(model, prompts, top1) == sample(model, prompts, SampleConfig(max_new_tokens=8))


def test_long_prompt_keeps_its_last_tokens(model):
    long = list(range(1, 60))  # 59 tokens > 48 - 4
    cfg = SampleConfig(max_new_tokens=4)
    assert sample(model, [long], cfg) == [_greedy_alone(model, long[-44:], 4)]
    capped = SampleConfig(max_new_tokens=4, max_prompt_tokens=10)
    assert sample(model, [long], capped) == [_greedy_alone(model, long[-10:], 4)]


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="max_new_tokens"):
        SampleConfig(max_new_tokens=0)
    with pytest.raises(ConfigError, match="temperature"):
        SampleConfig(temperature=-1.0)
