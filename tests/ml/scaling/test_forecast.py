"""From sweep records to forecasts: refused cells are named; both downstream stages and N*(C) are
recovered exactly from synthetic records; the flagship is the size nearest to C / D*."""

import math

import pytest

from ml.scaling.fit import sigmoid_accuracy
from ml.scaling.forecast import SweepIncomplete, check_cells, fit_downstream, fit_sweep, flagship_cell
from ml.scaling.plan import SweepConfig, plan_sweep

ALPHA, COEF = 0.5, 0.3  # D*(C) = 0.3 C^0.5
NLL_A, NLL_B = 40.0, -0.1  # NLL at the optimum = 40 C^-0.1
K, X0, CHANCE = 4.0, 2.0, 0.25


def records(budgets=(1e12, 1e13, 1e14), offsets=(-0.6, -0.2, 0.2, 0.6)) -> list[dict]:
    out = []
    for c in budgets:
        x_opt = math.log10(COEF * c**ALPHA)
        for dx in offsets:
            tokens = 10 ** (x_opt + dx)
            nll = NLL_A * c**NLL_B + 0.5 * dx**2
            out.append(
                {
                    "budget": c,
                    "tokens": tokens,
                    "non_embedding_params": c / (6 * tokens),  # C = 6 N D
                    "final_val_loss": 20 * c**-0.05 + 0.8 * dx**2,
                    "mc_normalized_nll": nll,
                    "mc_accuracy": float(sigmoid_accuracy(nll, K, X0, chance=CHANCE)),
                    "mc_chance": CHANCE,
                }
            )
    return out


def test_tokens_and_params_laws_from_records():
    fit = fit_sweep(records(), bootstrap=0, seed=0)
    assert fit.tokens_law.exponent == pytest.approx(ALPHA, abs=1e-9)
    assert fit.tokens_law.coef == pytest.approx(COEF, rel=1e-6)
    # N* = C / (6 D*) = C^0.5 / 1.8
    assert fit.params_law.exponent == pytest.approx(1 - ALPHA, abs=1e-9)
    assert fit.params_law.coef == pytest.approx(1 / (6 * COEF), rel=1e-6)
    assert fit.forecast(1e16)["opt_params"] == pytest.approx(1e8 / 1.8, rel=1e-6)


def test_two_stage_downstream_forecast_is_exact_on_exact_records():
    recs = records()
    down = fit_downstream(recs, fit_sweep(recs, bootstrap=0, seed=0))
    assert down.nll_law.exponent == pytest.approx(NLL_B, abs=1e-9)
    assert down.nll_law.coef == pytest.approx(NLL_A, rel=1e-6)
    assert (down.k, down.x0, down.chance) == (pytest.approx(K, rel=1e-4), pytest.approx(X0, rel=1e-4), CHANCE)
    forecast = down.forecast(1e16)
    assert forecast["expected_normalized_nll"] == pytest.approx(NLL_A * 1e16**NLL_B, rel=1e-6)
    want = float(sigmoid_accuracy(NLL_A * 1e16**NLL_B, K, X0, chance=CHANCE))
    assert forecast["expected_accuracy"] == pytest.approx(want, rel=1e-4)


def test_a_sweep_with_a_missing_failed_or_stale_cell_is_refused_naming_each():
    cfg = SweepConfig(
        budgets=(2e11, 2e12), sizes=(("a", 64, 2, 4, 2, 192, 2e-3), ("b", 96, 4, 4, 2, 256, 1.5e-3))
    )
    planned = plan_sweep(cfg, vocab_size=4096)
    done = {c.key: {**c.__dict__, "final_val_loss": 5.0} for c in planned}
    assert [r["size"] for r in check_cells(planned, done)] == ["a", "b", "a", "b"]
    broken = {**done, "2e11_b": None}
    broken["2e12_a"] = {**done["2e12_a"], "final_val_loss": float("nan")}
    broken["2e12_b"] = {**done["2e12_b"], "steps": done["2e12_b"]["steps"] + 1}
    with pytest.raises(SweepIncomplete) as err:
        check_cells(planned, broken)
    assert str(err.value) == (
        "sweep cell(s) not usable: 2e11_b: missing (materialize it); 2e12_a: failed (validation loss nan); "
        "2e12_b: trained for another plan (steps differ; rerun it)"
    )


def test_flagship_is_the_size_nearest_to_c_over_d_star():
    cfg = SweepConfig.from_preset("tiny")  # target 3e12
    cells = {c.size: c for c in (flagship_cell(cfg, 3e12 / fpt, 4096) for fpt in (1.0e6, 1.7e6, 3.0e6))}
    assert sorted(cells) == ["s32", "s48", "s64"]  # 958,464 / 1,677,312 / 2,850,816 FLOPs per token at seq 64
    assert all(
        c.budget == 3e12 and abs(c.flops - 3e12) <= 0.5 * 256 * c.flops_per_token for c in cells.values()
    )
    assert [cells[s].flops_per_token for s in ("s32", "s48", "s64")] == [958_464, 1_677_312, 2_850_816]
    assert cells["s48"].steps == round(3e12 / 1_677_312 / 256) == 6987


def test_flat_accuracies_keep_the_loss_forecast_and_say_why_there_is_no_accuracy_one():
    recs = [{**r, "mc_accuracy": 0.375} for r in records()]
    down = fit_downstream(recs, fit_sweep(recs, bootstrap=0, seed=0))
    assert (down.k, down.x0) == (None, None)
    assert "accuracy does not vary over the 12 points (all 0.375)" in down.sigmoid_error
    assert down.forecast(1e16) == {"expected_normalized_nll": pytest.approx(NLL_A * 1e16**NLL_B, rel=1e-6)}


def test_a_midpoint_the_sweep_never_saw_is_named_an_extrapolation():
    inside = fit_downstream(records(), fit_sweep(records(), bootstrap=0, seed=0))
    assert inside.sigmoid_note == ""  # the records' NLL spans X0 = 2.0
    shifted = [
        {**r, "mc_accuracy": float(sigmoid_accuracy(r["mc_normalized_nll"], K, 0.5, chance=CHANCE))}
        for r in records()
    ]
    down = fit_downstream(shifted, fit_sweep(shifted, bootstrap=0, seed=0))
    lo = min(r["mc_normalized_nll"] for r in shifted)
    assert lo > 0.5 and down.x0 == pytest.approx(0.5, rel=1e-3)
    assert down.sigmoid_note.startswith("sigmoid midpoint x0 = 0.5 lies outside the swept NLL range [")
