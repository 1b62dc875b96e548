"""benchmarks/fp8_inference.py runs on CPU (tiny shape): a row per precision and phase, FP8 really converted."""

import torch

from benchmarks.fp8_inference import bench, build
from ml.infer.fp8 import FP8Linear

CPU = torch.device("cpu")


def test_builds_the_same_model_in_both_precisions():
    models = build("tiny", CPU, compile_model=False)
    assert not any(isinstance(m, FP8Linear) for m in models["bf16"].modules())
    assert sum(isinstance(m, FP8Linear) for m in models["fp8"].modules()) == 6  # 3 projections x layers 1, 2
    assert torch.equal(models["bf16"].model.embed_tokens.weight, models["fp8"].model.embed_tokens.weight)


def test_cpu_smoke_row():
    rows = bench("tiny", CPU, warmup=1, iters=1)
    assert [(r["precision"], r["phase"]) for r in rows] == [
        ("bf16", "prefill"),
        ("bf16", "decode"),
        ("fp8", "prefill"),
        ("fp8", "decode"),
    ]
    assert [(r["batch"], r["seq"]) for r in rows[:2]] == [(2, 128), (8, 1)]
    assert all(r["tok_s"] > 0 for r in rows) and rows[0]["speedup_vs_bf16"] == 1.0
