"""Scaling-law fits of the Llama 3 paper §3.2.1: IsoFLOP parabolas, the compute-optimal power law, forecasts.

* Per compute budget C, validation loss against x = log10(training tokens) is fitted with a second-degree
  polynomial; its vertex is the compute-optimal point (tokens D*, loss L*). A budget whose vertex is not
  strictly inside the swept range (or whose parabola opens downwards) is *flagged* and left out of the
  power-law fit: its optimum was not bracketed by the grid, so using it would be extrapolation.
* Over the budgets kept, D*(C) = A * C**alpha (least squares in log10 space); the paper reports
  alpha = 0.53, A = 0.29 with D in tokens. The optimal parameter count follows from D* and the model's
  FLOPs per token (``ml.scaling.plan``), so the fit itself needs only (C, D*) pairs.
* L*(C) = a * C**b (linear in log space), to forecast the loss of a larger run.
* Confidence intervals by bootstrap over the sweep's cells: each budget's points are resampled with
  replacement, parabolas and the power law refitted; the 2.5/97.5 percentiles are the 95% interval.

Everything here is numpy on plain arrays, so it is tested on synthetic parabolas with known minima.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

PAPER_ALPHA, PAPER_A = 0.53, 0.29  # Llama 3 paper §3.2.1, tokens against FLOPs


class FitError(ValueError):
    """A fit cannot be made from these points; the message names the budget or the input."""


@dataclasses.dataclass(frozen=True)
class IsoFlopFit:
    """One budget's parabola: loss = c2*x**2 + c1*x + c0 with x = log10(tokens)."""

    budget: float
    coeffs: tuple[float, float, float]  # (c2, c1, c0)
    x_range: tuple[float, float]  # swept log10(tokens), min and max
    opt_log10_tokens: float
    opt_loss: float
    edge: bool  # vertex outside the swept range, or a parabola that opens downwards
    reason: str  # why it is flagged ("" when not)

    @property
    def opt_tokens(self) -> float:
        return float(10.0**self.opt_log10_tokens)


@dataclasses.dataclass(frozen=True)
class PowerLaw:
    """y = coef * x**exponent, fitted in log10 space."""

    coef: float
    exponent: float

    def __call__(self, x: float | np.ndarray) -> float | np.ndarray:
        return self.coef * np.asarray(x, dtype=float) ** self.exponent


def fit_isoflop(budget: float, tokens: Sequence[float], losses: Sequence[float]) -> IsoFlopFit:
    """The parabola of one budget's (tokens, loss) cells and its vertex; needs >= 3 distinct token counts."""
    x = np.log10(np.asarray(tokens, dtype=float))
    y = np.asarray(losses, dtype=float)
    if x.shape != y.shape or np.unique(x).size < 3:
        raise FitError(f"budget {budget:.3g}: need >= 3 cells with distinct token counts, got {x.size}")
    if not np.all(np.isfinite(y)):
        raise FitError(f"budget {budget:.3g}: non-finite validation loss in {y.tolist()}")
    c2, c1, c0 = np.polyfit(x, y, 2)
    lo, hi = float(x.min()), float(x.max())
    if c2 <= 0:
        vertex, reason = float(x[np.argmin(y)]), f"parabola opens downwards (c2={c2:.3g})"
    else:
        vertex = float(-c1 / (2 * c2))
        reason = "" if lo < vertex < hi else f"minimum 10^{vertex:.3f} outside swept 10^{lo:.3f}..10^{hi:.3f}"
    loss = float(np.polyval([c2, c1, c0], vertex))
    return IsoFlopFit(
        float(budget), (float(c2), float(c1), float(c0)), (lo, hi), vertex, loss, bool(reason), reason
    )


def fit_power_law(x: Sequence[float], y: Sequence[float]) -> PowerLaw:
    """Least squares of log10(y) = log10(coef) + exponent*log10(x); needs >= 2 distinct x."""
    lx, ly = np.log10(np.asarray(x, dtype=float)), np.log10(np.asarray(y, dtype=float))
    if lx.size < 2 or np.unique(lx).size < 2:
        raise FitError(f"power law needs >= 2 distinct points, got x={list(x)}")
    exponent, intercept = np.polyfit(lx, ly, 1)
    return PowerLaw(float(10.0**intercept), float(exponent))


@dataclasses.dataclass(frozen=True)
class ScalingFit:
    """The whole sweep's fit: per-budget parabolas, the budgets used, and the two power laws."""

    isoflops: tuple[IsoFlopFit, ...]
    tokens_law: PowerLaw  # D*(C)
    loss_law: PowerLaw  # L*(C)
    alpha_ci: tuple[float, float]  # 95% bootstrap interval of the tokens exponent
    coef_ci: tuple[float, float]
    bootstrap_samples: int
    params_law: PowerLaw | None = None  # N*(C), when the cells' parameter counts are given
    params_alpha_ci: tuple[float, float] = (float("nan"), float("nan"))
    include_edge: bool = False  # smoke runs only: flagged budgets were used too

    @property
    def used(self) -> tuple[IsoFlopFit, ...]:
        return tuple(f for f in self.isoflops if self.include_edge or not f.edge)

    def forecast(self, budget: float) -> dict[str, float]:
        """Compute-optimal tokens and expected validation loss at ``budget`` FLOPs."""
        out = {
            "budget": float(budget),
            "opt_tokens": float(self.tokens_law(budget)),
            "expected_loss": float(self.loss_law(budget)),
        }
        if self.params_law is not None:
            out["opt_params"] = float(self.params_law(budget))
        return out


def _grouped(
    cells: Mapping[float, tuple[Sequence[float], Sequence[float]]],
    params: Mapping[float, Sequence[float]] | None,
) -> list[tuple[float, np.ndarray, np.ndarray, np.ndarray | None]]:
    return [
        (
            float(c),
            np.asarray(t, dtype=float),
            np.asarray(v, dtype=float),
            np.asarray(params[c], dtype=float) if params is not None else None,
        )
        for c, (t, v) in sorted(cells.items())
    ]


def params_at(fit: IsoFlopFit, tokens: np.ndarray, params: np.ndarray) -> float:
    """The parameter count at the budget's optimum: log10 N interpolated linearly in log10 D over its cells
    (at a fixed budget N falls as D grows, so the cells are ordered by -log10 D)."""
    x, n = np.log10(tokens), np.log10(params)
    order = np.argsort(x)
    return float(10.0 ** np.interp(fit.opt_log10_tokens, x[order], n[order]))


def _params_law(fits: Sequence[IsoFlopFit], groups, include_edge: bool = False) -> PowerLaw | None:
    kept = [(f, g) for f, g in zip(fits, groups, strict=True) if include_edge or not f.edge]
    if groups[0][3] is None or len(kept) < 2:
        return None
    return fit_power_law([f.budget for f, _ in kept], [params_at(f, g[1], g[3]) for f, g in kept])


def _laws(fits: Sequence[IsoFlopFit], include_edge: bool = False) -> tuple[PowerLaw, PowerLaw]:
    kept = [f for f in fits if include_edge or not f.edge]
    if len(kept) < 2:
        flagged = "; ".join(f"{f.budget:.3g}: {f.reason}" for f in fits if f.edge)
        raise FitError(
            f"need >= 2 budgets with an interior minimum, have {len(kept)} (flagged: {flagged or 'none'})"
        )
    budgets = [f.budget for f in kept]
    return fit_power_law(budgets, [f.opt_tokens for f in kept]), fit_power_law(
        budgets, [f.opt_loss for f in kept]
    )


def _bootstrap(groups, samples: int, seed: int, include_edge: bool = False) -> np.ndarray:
    """(alpha, coef, params exponent) of the laws refitted on ``samples`` resamplings of each budget's cells."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(samples):
        fits, kept = [], []
        for budget, tokens, losses, params in groups:
            idx = rng.integers(0, tokens.size, tokens.size)
            if np.unique(tokens[idx]).size < 3:
                continue  # a resample with fewer than 3 distinct sizes cannot hold a parabola
            fits.append(fit_isoflop(budget, tokens[idx], losses[idx]))
            kept.append((budget, tokens[idx], losses[idx], None if params is None else params[idx]))
        try:
            law, _ = _laws(fits, include_edge)
        except FitError:
            continue
        n_law = _params_law(fits, kept, include_edge)
        out.append((law.exponent, law.coef, n_law.exponent if n_law else float("nan")))
    return np.asarray(out).reshape(-1, 3)


def _interval(values: np.ndarray) -> tuple[float, float]:
    if not values.size or np.isnan(values).all():
        return (float("nan"), float("nan"))
    lo, hi = np.nanpercentile(values, [2.5, 97.5])
    return (float(lo), float(hi))


def fit_scaling_laws(
    cells: Mapping[float, tuple[Sequence[float], Sequence[float]]],
    *,
    params: Mapping[float, Sequence[float]] | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    include_edge: bool = False,
) -> ScalingFit:
    """Fit every budget's parabola, then D*(C) and L*(C) over the budgets whose minimum is interior.

    ``cells`` maps budget -> (tokens of each cell, validation loss of each cell); ``params`` (optional) maps
    budget -> each cell's parameter count, for N*(C). ``include_edge`` (smoke runs only) fits over flagged
    budgets too; they stay flagged in ``isoflops``.
    """
    groups = _grouped(cells, params)
    fits = tuple(fit_isoflop(c, t, v) for c, t, v, _ in groups)
    tokens_law, loss_law = _laws(fits, include_edge)
    boot = _bootstrap(groups, bootstrap, seed, include_edge) if bootstrap > 0 else np.empty((0, 3))
    return ScalingFit(
        isoflops=fits,
        tokens_law=tokens_law,
        loss_law=loss_law,
        alpha_ci=_interval(boot[:, 0]),
        coef_ci=_interval(boot[:, 1]),
        bootstrap_samples=int(len(boot)),
        params_law=_params_law(fits, groups, include_edge),
        params_alpha_ci=_interval(boot[:, 2]),
        include_edge=include_edge,
    )


def fit_sigmoid(x: Sequence[float], acc: Sequence[float], *, chance: float) -> tuple[float, float]:
    """Stage 2 of the paper's downstream forecast: acc = chance + (1-chance) / (1 + exp(k*(x - x0))).

    ``x`` is the normalized NLL of the correct answer (lower is better, so ``k`` > 0); returns (k, x0).
    """
    from scipy.optimize import curve_fit

    xs, ys = np.asarray(x, dtype=float), np.asarray(acc, dtype=float)
    if xs.size < 2:
        raise FitError(f"sigmoid needs >= 2 points, got {xs.size}")

    if np.ptp(ys) == 0:
        raise FitError(
            f"sigmoid: accuracy does not vary over the {xs.size} points (all {ys[0]:.4g}), so it determines no "
            "curve; more evaluation items or a wider sweep would resolve one"
        )

    def curve(v, k, x0):
        return chance + (1.0 - chance) / (1.0 + np.exp(k * (v - x0)))

    try:  # k >= 0: accuracy falls as the correct answer's NLL grows
        (k, x0), _ = curve_fit(
            curve, xs, ys, p0=(5.0, float(np.median(xs))), bounds=([0.0, -np.inf], np.inf), maxfev=20000
        )
    except (RuntimeError, ValueError) as exc:
        raise FitError(f"sigmoid fit over {xs.size} points did not converge: {exc}") from exc
    if k < 1e-6:
        raise FitError(
            f"sigmoid: accuracy does not fall as NLL grows over the {xs.size} points (k = {k:.3g})"
        )
    return float(k), float(x0)


def sigmoid_accuracy(x: float | np.ndarray, k: float, x0: float, *, chance: float) -> float | np.ndarray:
    return chance + (1.0 - chance) / (1.0 + np.exp(k * (np.asarray(x, dtype=float) - x0)))
