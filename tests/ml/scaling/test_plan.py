"""The sweep grid: FLOPs per token of the paper's shapes by hand, tokens per cell, refused cells."""

import pytest

from ml.config import ConfigError
from ml.model.flops import flops_per_token, num_params
from ml.model.llama import ModelConfig
from ml.scaling.forecast import flagship_cell
from ml.scaling.plan import (
    LARGE_WEB_CURATED_TOKENS,
    MAX_EPOCHS,
    SweepConfig,
    budget_key,
    cell_key,
    epochs,
    plan_sweep,
)

# Hand-computed at seq 8,192: 6 x (layers x (q,o: 2*D*D + k,v: 2*D*8*128 + ffn: 3*D*F) + LM head V*D)
# + causal attention 6 x layers x D x T (Table 3 shapes, V = 128,256).
PAPER_FLOPS_PER_TOKEN = {
    # 6*(32*(2*4096*4096 + 2*4096*1024 + 3*4096*14336) + 128256*4096) + 6*32*4096*8192
    "8b": 45_027_950_592 + 6_442_450_944,
    # 6*(80*(2*8192*8192 + 2*8192*1024 + 3*8192*28672) + 128256*8192) + 6*80*8192*8192
    "70b": 417_010_286_592 + 32_212_254_720,
    # 6*(126*(2*16384**2 + 2*16384*1024 + 3*16384*53248) + 128256*16384) + 6*126*16384*8192
    "405b": 2_422_487_384_064 + 101_468_602_368,
}


@pytest.mark.parametrize("preset", ["8b", "70b", "405b"])
def test_paper_shapes_flops_per_token_equal_hand_computed(preset):
    assert flops_per_token(ModelConfig.from_preset(preset), 8192) == PAPER_FLOPS_PER_TOKEN[preset]


def test_405b_has_405_9b_parameters():
    # embedding + LM head 2 x 128256*16384, 126 layers of 3,187,671,040 matmul weights + 2 norms, final norm
    assert num_params(ModelConfig.from_preset("405b")) == 405_853_388_800


def grid(**kw) -> SweepConfig:
    sizes = (("a", 64, 2, 4, 2, 192, 2e-3), ("b", 96, 4, 4, 2, 256, 1.5e-3))
    return SweepConfig(
        **{"budgets": (2e11, 2e12), "sizes": sizes, "seq_len": 128, "batch_tokens": 1024, **kw}
    )


def test_cells_train_for_the_budget_in_whole_steps():
    cells = plan_sweep(grid(), vocab_size=4096)
    assert [c.key for c in cells] == ["2e11_a", "2e11_b", "2e12_a", "2e12_b"]
    for c in cells:
        model = ModelConfig(**c.model)
        assert c.flops_per_token == flops_per_token(model, 128)
        assert c.steps == round(c.budget / c.flops_per_token / 1024)
        assert c.tokens == c.steps * 1024
        assert abs(c.flops - c.budget) <= 0.5 * 1024 * c.flops_per_token  # within half a step
        assert c.params == num_params(model) and c.non_embedding_params < c.params


def test_a_cell_too_small_to_train_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"sweep cell 2e11_b: .* \(< min_steps=60\)"):
        plan_sweep(grid(min_steps=60), vocab_size=4096)


def test_keys_and_forecast_budget():
    assert budget_key(3e11) == "3e11" and budget_key(1.5e12) == "1.5e12"
    assert cell_key(2e12, "d64") == "2e12_d64"
    assert grid().forecast_budget == 6e12
    assert grid(target_budget=5e12).forecast_budget == 5e12


def test_bad_grid_rows_are_named():
    with pytest.raises(ConfigError, match="each row is"):
        SweepConfig(sizes=(("a", 64, 2),))
    with pytest.raises(ConfigError, match="not a multiple of seq_len"):
        grid(batch_tokens=1000)


def test_a_window_of_sizes_per_budget():
    cfg = grid(sizes=grid().sizes + (("c", 128, 4, 4, 2, 384, 1e-3),), budget_sizes=(("a", "b"), ("b", "c")))
    assert [c.key for c in plan_sweep(cfg, vocab_size=4096)] == ["2e11_a", "2e11_b", "2e12_b", "2e12_c"]
    with pytest.raises(ConfigError, match=r"budget_sizes names unknown size\(s\) \['z'\]"):
        grid(budget_sizes=(("a",), ("z",)))
    with pytest.raises(ConfigError, match="budget_sizes has 1 rows for 2 budgets"):
        grid(budget_sizes=(("a",),))


def test_presets_span_the_grid_the_issue_asks_for():
    tiny = plan_sweep(SweepConfig.from_preset("tiny"), vocab_size=4096)
    budgets = sorted({c.budget for c in tiny})
    assert budgets == [1e11, 3e11, 1e12]  # >= 3 budgets over 10x
    assert all(sum(c.budget == b for c in tiny) == 4 for b in budgets)  # 4 sizes each
    assert [c.key for c in tiny if c.budget == 1e12] == ["1e12_s16", "1e12_s24", "1e12_s32", "1e12_s48"]
    assert (
        min(c.steps for c in tiny) == 571 and sum(c.tokens for c in tiny) == 9_129_472
    )  # benchmarks/NOTES.md
    small = SweepConfig.from_preset("small")
    assert small.budgets == (1e15, 3e15, 1e16) and len(small.size_list) == 9  # >= 3 budgets over 10x
    cells = plan_sweep(small, vocab_size=32_768)
    assert len(cells) == 15 and len({c.size for c in cells}) == 7 and min(c.steps for c in cells) == 104
    for preset in ("8b", "70b", "405b"):  # Llama 3 paper §3.2.1: 6e18 ... 1e22 FLOPs, 40M ... 16B
        paper = SweepConfig.from_preset(preset)
        assert (min(paper.budgets), max(paper.budgets), len(paper.budgets)) == (6e18, 1e22, 10)
        assert [s.name for s in paper.size_list][::7] == ["40M", "16B"]
        assert (paper.min_lr_ratio, paper.weight_decay) == (0.1, 0.1)
        assert {s.lr for s in paper.size_list} <= {2e-4, 2.5e-4, 3e-4, 3.5e-4, 4e-4}


def test_small_sweep_reads_the_large_web_at_most_4_times():
    # LARGE_WEB_CURATED_TOKENS: the `large` local web's curated tokens as measured by benchmarks/large_web.py
    # (benchmarks/results/2026-12-05-cpu-large-web.json; see the constant's comment in ml/scaling/plan.py)
    assert LARGE_WEB_CURATED_TOKENS == 60_800_000 and MAX_EPOCHS == 4.0
    small = SweepConfig.from_preset("small")
    cells = plan_sweep(small, vocab_size=32_768)
    most = max(cells, key=lambda c: c.tokens)
    assert (most.key, most.tokens) == ("1e16_d192", 206_766_080)
    assert round(epochs(most, LARGE_WEB_CURATED_TOKENS), 3) == 3.401 <= MAX_EPOCHS
    # the flagship at 3x the largest budget, sized by the paper's D*(C) = 0.29 C^0.53 (the fit decides at run time)
    flagship = flagship_cell(small, 0.29 * small.forecast_budget**0.53, vocab_size=32_768)
    assert (flagship.key, flagship.tokens) == ("3e16_d384", 205_062_144)
    assert round(epochs(flagship, LARGE_WEB_CURATED_TOKENS), 3) == 3.373
    # the budgets the preset had before the measurement read the corpus up to 21.8 times
    old = dict(budgets=(1e16, 3e16, 1e17), budget_sizes=(), sizes=small.sizes[3:], batch_tokens=131_072)
    before = plan_sweep(small.replace(**old), vocab_size=32_768)
    assert round(max(epochs(c, LARGE_WEB_CURATED_TOKENS) for c in before), 1) == 21.8
    with pytest.raises(ValueError, match="corpus_tokens must be > 0"):
        epochs(most, 0)
