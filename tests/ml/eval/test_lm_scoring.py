"""Batched continuation log-likelihoods equal the same sums computed one pair at a time from full logits."""

import pandas as pd
import pytest
import torch

from ml.eval.lm_scoring import continuation_logprobs, score_model
from ml.model.llama import Llama, ModelConfig
from ml.tokens.tokenizer import byte_tokenizer

PAIRS = [("The cat sat on the", " mat."), ("A", " much longer continuation here"), ("x" * 80, " end")]


@pytest.fixture(scope="module")
def model_and_tokenizer():
    torch.manual_seed(0)
    cfg = ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, vocab_size=512, max_seq_len=64)
    return Llama(cfg).eval(), byte_tokenizer()


def one_pair(model, tok, context: str, continuation: str, max_len: int) -> float:
    cont = tok.encode(continuation, add_special_tokens=False).ids[: max_len - 1]
    ctx = tok.encode(context).ids[-(max_len - len(cont)) :]
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids[:, :-1]).float(), dim=-1)[0]
    return sum(float(logp[len(ctx) - 1 + i, t]) for i, t in enumerate(cont))


def test_batched_scores_equal_one_pair_at_a_time(model_and_tokenizer):
    model, tok = model_and_tokenizer
    got = continuation_logprobs(model, tok, PAIRS, max_len=64, batch_size=2)
    assert [n for _, n in got] == [5, 30, 4]  # characters of each continuation
    for (context, continuation), (score, _) in zip(PAIRS, got, strict=True):
        assert score == pytest.approx(one_pair(model, tok, context, continuation, 64), abs=1e-4)
    # the 80-byte context is cut from the left to fit 64 tokens with its continuation
    assert len(tok.encode(PAIRS[2][0]).ids) > 64 - 4


def test_score_model_reports_accuracy_and_nll(model_and_tokenizer):
    model, tok = model_and_tokenizer
    items = pd.DataFrame(
        [{"context": "The cat sat on the", "choices": [" mat.", " end", " dog"], "label": 0}] * 2
    )
    scores = score_model(items, model, tok, max_len=64)
    per_char = [
        s / n
        for s, n in continuation_logprobs(
            model, tok, [("The cat sat on the", c) for c in items.choices[0]], max_len=64
        )
    ]
    assert scores["items"] == 2.0 and scores["chance"] == pytest.approx(1 / 3)
    assert scores["normalized_nll"] == pytest.approx(-per_char[0], abs=1e-5)
    assert scores["accuracy"] == float(max(range(3), key=per_char.__getitem__) == 0)
