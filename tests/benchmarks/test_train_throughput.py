"""benchmarks/train_throughput.py runs end to end on CPU (tiny shape) and builds the variants its names ask for."""

import math

import pytest
import torch

import ml.model.attention
from benchmarks.train_throughput import SHAPES, bench, build, row_context
from ml.model.flex_tuning import flex_settings

transformers = pytest.importorskip("transformers")
torch.set_num_threads(1)
CPU = torch.device("cpu")


def test_variant_names_build_what_they_say():
    model, _ = build("ours_doc_chunk1k_fused", SHAPES["tiny"], CPU, compile_model=False)
    assert model.cfg.loss_chunk_tokens == 1024 and model.cfg.fuse_projections
    model, _ = build("ours_doc_globalpos", SHAPES["tiny"], CPU, compile_model=False)
    assert model.cfg.doc_positions == "global" and SHAPES["tiny"].cfg.doc_positions == "restart"
    model, _ = build("ours_varlen", SHAPES["tiny"], CPU, compile_model=False)
    assert (
        model.cfg.attention == "varlen"
        and model.cfg.loss_chunk_tokens == SHAPES["tiny"].cfg.loss_chunk_tokens
    )


def test_tuned_rows_need_settings_and_restore_the_table():
    with pytest.raises(ValueError, match="'_tuned' needs --flex-settings"):
        with row_context("ours_doc_tuned", None):
            pass
    with row_context("ours_doc_tuned", {"fwd_BLOCK_M": 64}):
        assert flex_settings(CPU, 64, torch.bfloat16) == {"fwd_BLOCK_M": 64}
    assert flex_settings(CPU, 64, torch.bfloat16) == {}


def test_flexat_rows_autotune_flex_only_and_restore_the_config():
    with row_context("ours_doc_full_flexat", None):
        assert torch._inductor.config.max_autotune
        assert torch._inductor.config.max_autotune_gemm_backends == "ATEN"
    assert not torch._inductor.config.max_autotune


def test_evalmask_rows_build_the_mask_with_torch_and_restore_ours():
    with row_context("ours_doc_full_evalmask", None):
        assert ml.model.attention.doc_block_mask is ml.model.attention.doc_block_mask_evaluated
    assert ml.model.attention.doc_block_mask is not ml.model.attention.doc_block_mask_evaluated


@pytest.mark.parametrize("impl", ["hf", "ours_doc"])
def test_one_row_on_cpu(impl):
    row = bench(impl, SHAPES["tiny"], CPU, peak=1e12, warmup=1, steps=1, compile_model=False)
    assert row["impl"] == impl and row["batch"] * row["seq"] == 4 * 256
    assert row["tok_s"] > 0 and 0 < row["mfu"] < 1
    # ~uniform at init
    assert math.isfinite(row["final_loss"]) and abs(row["final_loss"] - math.log(4096)) < 1.0
