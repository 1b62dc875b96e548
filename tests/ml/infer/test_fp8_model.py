"""The FP8 model stage: save/load round trip keeps e4m3 weights and the skipped layers, per-document
log-likelihood equals a hand computation, quality numbers on a fixed table, a coarser quantizer is caught."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from ml.eval.val_loglik import doc_logliks, perplexity
from ml.infer.fp8 import FP8Config, FP8Linear
from ml.infer.fp8_model import compare_quality, evaluate_fp8, load_fp8, quantized_copy, save_fp8
from ml.model.llama import Llama, ModelConfig


@pytest.fixture(scope="module")
def model() -> Llama:
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset("tiny", vocab_size=128, max_seq_len=64, dim=64, ffn_dim=128)
    return Llama.from_config(cfg).eval()


def test_round_trip_keeps_fp8_weights_and_skipped_layers(model, tmp_path):
    fp8 = quantized_copy(model, FP8Config())
    assert isinstance(model.layers[1].mlp.up_proj, torch.nn.Linear)  # the original is untouched
    save_fp8(fp8, FP8Config(), tmp_path / "fp8")
    back = load_fp8(tmp_path / "fp8")
    for i in (0, 3):  # first and last layers stay unquantized, in bf16
        assert isinstance(back.layers[i].mlp.gate_proj, torch.nn.Linear)
        assert back.layers[i].mlp.gate_proj.weight.dtype == torch.bfloat16
    for i in (1, 2):
        lin = back.layers[i].mlp.down_proj
        assert isinstance(lin, FP8Linear) and lin.weight_fp8.dtype == torch.float8_e4m3fn
        assert torch.equal(lin.weight_fp8.float(), fp8.layers[i].mlp.down_proj.weight_fp8.float())
    x = torch.randint(0, 128, (2, 20))
    assert torch.equal(back(x), fp8(x))


def test_the_accumulation_setting_round_trips_and_old_checkpoints_load_as_exact(model, tmp_path):
    """``fast_accum`` is saved with the checkpoint; a record written before the setting existed ran
    ``_scaled_mm`` with exact accumulation, so it loads with ``fast_accum`` False."""
    import json

    fp8 = quantized_copy(model, FP8Config())
    assert fp8.layers[1].mlp.up_proj.fast_accum is True  # fbgemm's f8f8bf16_rowwise default
    save_fp8(fp8, FP8Config(), tmp_path / "fp8")
    assert load_fp8(tmp_path / "fp8").layers[1].mlp.up_proj.fast_accum is True
    record_path = tmp_path / "fp8" / "fp8_config.json"
    record = json.loads(record_path.read_text())
    del record["fast_accum"]
    record_path.write_text(json.dumps(record))
    assert load_fp8(tmp_path / "fp8").layers[1].mlp.up_proj.fast_accum is False


def test_doc_loglik_equals_a_hand_computation(model):
    docs = [np.array([5, 9, 2, 7]), np.array([3, 1])]
    got = doc_logliks(model, docs, batch_size=2)
    for d, row in zip(docs, got.itertuples(), strict=True):
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.from_numpy(d[None]))[0].float(), -1)  # alone, no padding
        want = sum(float(logp[t, d[t + 1]]) for t in range(len(d) - 1))
        assert row.tokens == len(d) - 1 and row.loglik == pytest.approx(want, abs=1e-4)
    assert perplexity(got) == pytest.approx(math.exp(-got["loglik"].sum() / 4))


def test_quality_numbers_on_a_fixed_table():
    ref = pd.DataFrame({"tokens": [10, 30], "loglik": [-20.0, -30.0], "nats_per_token": [2.0, 1.0]})
    fp8 = pd.DataFrame({"tokens": [10, 30], "loglik": [-21.0, -30.0], "nats_per_token": [2.1, 1.0]})
    q = compare_quality(ref, fp8)
    assert q["ppl_bf16"] == pytest.approx(math.exp(50 / 40)) and q["ppl_fp8"] == pytest.approx(
        math.exp(51 / 40)
    )
    assert q["ppl_increase"] == pytest.approx(math.exp(1 / 40) - 1)
    assert q["score_ks"] == pytest.approx(0.5) and q["score_mean_delta"] == pytest.approx(0.05)
    assert q["score_max_abs_delta"] == pytest.approx(0.1)


def test_fp8_stays_close_to_bf16_on_real_logits(model):
    docs = [np.random.default_rng(i).integers(0, 128, 40) for i in range(8)]
    quality, table = evaluate_fp8(model, quantized_copy(model, FP8Config()), docs, batch_size=4)
    assert len(table) == 8 and 0 < abs(quality["ppl_increase"]) < 0.01
    assert quality["score_max_abs_delta"] < 0.01


def test_too_few_documents_for_the_ks_bound_is_refused():
    from ml.config import ConfigError
    from ml.infer.fp8_model import FP8ModelConfig

    with pytest.raises(ConfigError, match=r"eval_docs=8: the KS bound 0.1 needs at least 20 documents"):
        FP8ModelConfig(eval_docs=8)
    assert FP8ModelConfig(eval_docs=20).eval_docs == 20 and FP8ModelConfig(eval_docs=0).eval_docs == 0
