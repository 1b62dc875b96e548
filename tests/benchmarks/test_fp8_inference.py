"""benchmarks/fp8_inference.py runs on CPU (tiny shape): a row per precision and phase, FP8 really converted."""

import pytest
import torch

from benchmarks.fp8_inference import bench, build
from ml.infer.fp8 import FP8Linear

CPU = torch.device("cpu")


def test_builds_the_same_model_in_every_precision():
    models = build("tiny", CPU)
    assert not any(isinstance(m, FP8Linear) for m in models["bf16"].modules())
    for name, fast in (("fp8", True), ("fp8_exact", False)):
        fp8 = [m for m in models[name].modules() if isinstance(m, FP8Linear)]
        assert len(fp8) == 6 and all(m.fast_accum is fast for m in fp8)  # 3 projections x layers 1, 2
        assert torch.equal(models["bf16"].model.embed_tokens.weight, models[name].model.embed_tokens.weight)


def test_block_compile_wraps_every_layer_and_an_unknown_scope_is_refused():
    models = build("tiny", CPU, compile_scope="blocks")
    assert all(block._compiled_call_impl is not None for block in models["fp8"].model.layers)
    with pytest.raises(ValueError, match="compile scope must be one of"):
        build("tiny", CPU, compile_scope="everything")


def test_cpu_smoke_row():
    rows = bench("tiny", CPU, warmup=1, iters=1)
    assert [(r["precision"], r["phase"]) for r in rows] == [
        ("bf16", "prefill"),
        ("bf16", "decode"),
        ("fp8", "prefill"),
        ("fp8", "decode"),
        ("fp8_exact", "prefill"),
        ("fp8_exact", "decode"),
    ]
    assert [(r["batch"], r["seq"]) for r in rows[:2]] == [(2, 128), (8, 1)]
    assert all(r["tok_s"] > 0 for r in rows) and rows[0]["speedup_vs_bf16"] == 1.0
    assert rows[0]["kl"] == 0.0 and rows[0]["top1"] == 1.0
    # on CPU both FP8 models run the exact reference: the same logits, so the same deltas
    assert rows[2]["rel_l2"] == rows[4]["rel_l2"] > 0
