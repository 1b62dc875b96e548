"""Rejection sampling: K samples per prompt, each scored by the RM on its own, the best kept."""

from __future__ import annotations

import pytest
import torch

from ml.infer.generate import SamplingConfig
from ml.model.llama import Llama, ModelConfig
from ml.posttrain.rejection import rejection_sample, score_replies
from ml.tokens.tokenizer import byte_tokenizer

CFG = ModelConfig.from_preset("tiny", dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, vocab_size=272)
PROMPTS = [
    ("q1", [{"role": "user", "content": "2+2?"}]),
    ("q2", [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]),
]


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return Llama.from_config(CFG).eval(), Llama.from_config(CFG).eval()


def test_best_of_k_by_reward(models):
    policy, rm = models
    tok = byte_tokenizer(16)
    res = rejection_sample(
        policy, rm, tok, PROMPTS, k=4, sampling=SamplingConfig(max_new_tokens=6, seed=1), require_stop=False
    )
    assert [r.prompt_id for r in res] == ["q1", "q2"]
    for r, (_, messages) in zip(res, PROMPTS, strict=True):
        assert len(r.samples) == 4 and all(s is not None for s in r.samples)
        assert len({s["content"] for s in r.samples}) > 1  # sampled, not one answer four times
        alone = [score_replies(rm, tok, messages, [s])[0] for s in r.samples]  # each scored on its own
        assert r.rewards == pytest.approx(alone, abs=1e-5)
        i = max(range(4), key=lambda j: alone[j])
        assert r.best == r.samples[i] and r.best_reward == pytest.approx(alone[i], abs=1e-5)


def test_samples_without_an_end_token_are_discarded(models):
    policy, rm = models
    tok = byte_tokenizer(16)
    cut = rejection_sample(
        policy, rm, tok, PROMPTS[:1], k=3, sampling=SamplingConfig(max_new_tokens=2, seed=2)
    )
    assert cut[0].samples == [None, None, None] and cut[0].best is None and cut[0].best_reward is None
    with pytest.raises(ValueError, match="k must be >= 1"):
        rejection_sample(policy, rm, tok, PROMPTS, k=0, sampling=SamplingConfig())
