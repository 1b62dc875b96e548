"""The scaling-law fits recover known minima and exponents from synthetic IsoFLOP sweeps."""

import numpy as np
import pytest

from ml.scaling.fit import (
    FitError,
    fit_isoflop,
    fit_power_law,
    fit_scaling_laws,
    fit_sigmoid,
    sigmoid_accuracy,
)

ALPHA, COEF = 0.5, 0.3  # the synthetic sweep's true D*(C) = 0.3 * C**0.5
LOSS_B, LOSS_A = -0.05, 20.0  # true L*(C) = 20 * C**-0.05


def synthetic_sweep(budgets, noise: float, seed: int = 0, offsets=(-0.6, -0.3, 0.0, 0.3, 0.6)):
    """Cells around each budget's true optimum: loss = L* + 0.8 * (log10 D - log10 D*)**2 (+ noise)."""
    rng = np.random.default_rng(seed)
    cells = {}
    for c in budgets:
        x_opt = np.log10(COEF * c**ALPHA)
        xs = x_opt + np.asarray(offsets)
        losses = LOSS_A * c**LOSS_B + 0.8 * (xs - x_opt) ** 2 + rng.normal(0, noise, xs.size)
        cells[c] = (10.0**xs, losses)
    return cells


def test_parabola_vertex_is_exact_without_noise():
    fit = fit_isoflop(1e15, [1e6, 1e7, 1e8], [3.0 + 0.5 * (6 - 7) ** 2, 3.0, 3.0 + 0.5 * (8 - 7) ** 2])
    assert fit.coeffs[0] == pytest.approx(0.5)
    assert fit.opt_log10_tokens == pytest.approx(7.0)
    assert fit.opt_loss == pytest.approx(3.0)
    assert not fit.edge and fit.reason == ""


def test_edge_minimum_is_flagged_and_left_out_of_the_fit():
    cells = synthetic_sweep([1e12, 1e13, 1e14], noise=0.0)
    tokens, losses = cells[1e14]
    cells[1e14] = (tokens[:2], losses[:2])  # two cells cannot hold a parabola
    with pytest.raises(FitError, match="need >= 3 cells"):
        fit_scaling_laws(cells, bootstrap=0)
    # a budget swept only on one side of its optimum: the vertex lies beyond the largest cell
    x_opt = np.log10(COEF * 1e14**ALPHA)
    xs = x_opt - np.asarray([1.0, 0.7, 0.4])
    cells[1e14] = (10.0**xs, LOSS_A * 1e14**LOSS_B + 0.8 * (xs - x_opt) ** 2)
    fit = fit_scaling_laws(cells, bootstrap=0)
    edge = [f for f in fit.isoflops if f.edge]
    assert [f.budget for f in edge] == [1e14]
    assert "outside swept" in edge[0].reason
    assert [f.budget for f in fit.used] == [1e12, 1e13]
    assert fit.tokens_law.exponent == pytest.approx(ALPHA, abs=1e-9)  # the two interior budgets are exact


def test_downward_parabola_is_flagged():
    fit = fit_isoflop(1e13, [1e5, 1e6, 1e7], [3.0, 3.5, 3.0])
    assert fit.edge and "opens downwards" in fit.reason


def test_power_law_recovers_exponent_and_coefficient_exactly():
    c = np.array([1e10, 1e12, 1e14])
    law = fit_power_law(c, 0.29 * c**0.53)
    assert law.exponent == pytest.approx(0.53, rel=1e-12)
    assert law.coef == pytest.approx(0.29, rel=1e-9)
    assert law(1e16) == pytest.approx(0.29 * 1e16**0.53, rel=1e-9)


def test_noisy_sweep_recovers_alpha_within_tolerance_with_an_interval_that_covers_it():
    fit = fit_scaling_laws(
        synthetic_sweep([1e12, 1e13, 1e14, 1e15], noise=0.01, seed=3), bootstrap=300, seed=1
    )
    assert fit.tokens_law.exponent == pytest.approx(ALPHA, abs=0.03)
    assert fit.alpha_ci[0] < ALPHA < fit.alpha_ci[1]
    assert fit.alpha_ci[1] - fit.alpha_ci[0] < 0.2
    for f in fit.isoflops:  # every vertex within 0.1 decade of the truth
        assert f.opt_log10_tokens == pytest.approx(np.log10(COEF * f.budget**ALPHA), abs=0.1)
    forecast = fit.forecast(3e15)
    assert forecast["expected_loss"] == pytest.approx(LOSS_A * 3e15**LOSS_B, rel=0.01)
    assert forecast["opt_tokens"] == pytest.approx(COEF * 3e15**ALPHA, rel=0.25)


def test_sigmoid_fit_recovers_known_curve():
    x = np.linspace(1.0, 3.0, 12)
    acc = sigmoid_accuracy(x, 4.0, 2.0, chance=0.25)
    k, x0 = fit_sigmoid(x, acc, chance=0.25)
    assert (k, x0) == pytest.approx((4.0, 2.0), rel=1e-4)


# the six cells of a CI run's 10-40 step sweep (32 items): every cell answered 12 of 32, so accuracy says
# nothing about NLL and no sigmoid is determined (curve_fit ran out of evaluations on it)
FLAT_NLL = [3.25295, 3.26550, 3.24648, 3.02226, 3.05713, 2.99223]


def test_sigmoid_fit_refuses_accuracies_that_do_not_vary_naming_them():
    with pytest.raises(FitError, match=r"accuracy does not vary.*0\.375"):
        fit_sigmoid(FLAT_NLL, [0.375] * 6, chance=0.25)


def test_sigmoid_fit_that_does_not_converge_is_a_fit_error():
    # accuracy rising with NLL: no sigmoid with k > 0 fits it
    with pytest.raises(FitError, match="sigmoid"):
        fit_sigmoid([1.0, 2.0, 3.0, 4.0], [0.25, 0.5, 0.75, 1.0], chance=0.25)
