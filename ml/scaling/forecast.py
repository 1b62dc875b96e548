"""From a finished sweep to forecasts (Llama 3 paper §3.2.1): the fits over the cells' records, the
two-stage downstream forecast, the compute-optimal run at a target budget, and the plots.

* ``check_cells`` refuses a sweep with a planned cell missing, failed (non-finite loss) or trained for
  another plan (its steps, tokens or model differ), naming the cell.
* The fit uses training tokens D (as the paper) and, for N*(C), each cell's non-embedding parameters
  (every block weight and the LM head; the embedding lookup is not a matmul), the N with
  C = (6 N + attention) D of ``ml.model.flops``.
* Downstream, stage 1: the normalized NLL of the correct answer at each budget's optimum (a parabola of
  NLL vs log10 D evaluated at the loss vertex) against C, a power law (linear in log space); stage 2:
  a sigmoid from NLL to accuracy over every cell of the sweep. Forecast accuracy at C = stage 2 of stage 1.
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ml.scaling.fit import (
    PAPER_A,
    PAPER_ALPHA,
    FitError,
    PowerLaw,
    ScalingFit,
    fit_power_law,
    fit_scaling_laws,
    fit_sigmoid,
    sigmoid_accuracy,
)
from ml.scaling.plan import SweepCell, SweepConfig, plan_cell

PLAN_FIELDS = ("budget", "size", "model", "lr", "steps", "tokens")


class SweepIncomplete(FitError):
    """A planned cell is missing, failed or stale; the message names it."""


def check_cells(planned: Sequence[SweepCell], records: Mapping[str, dict | None]) -> list[dict]:
    """The records of the planned cells, in plan order; ``SweepIncomplete`` naming every bad cell."""
    problems = []
    for cell in planned:
        rec = records.get(cell.key)
        if rec is None:
            problems.append(f"{cell.key}: missing (materialize it)")
        elif not math.isfinite(float(rec.get("final_val_loss", float("nan")))):
            problems.append(f"{cell.key}: failed (validation loss {rec.get('final_val_loss')})")
        elif any(rec.get(f) != getattr(cell, f) for f in PLAN_FIELDS):
            diff = [f for f in PLAN_FIELDS if rec.get(f) != getattr(cell, f)]
            problems.append(f"{cell.key}: trained for another plan ({', '.join(diff)} differ; rerun it)")
    if problems:
        raise SweepIncomplete("sweep cell(s) not usable: " + "; ".join(problems))
    return [records[c.key] for c in planned]  # type: ignore[misc]


def _by_budget(records: Sequence[dict], field: str) -> dict[float, list[float]]:
    out: dict[float, list[float]] = {}
    for r in records:
        out.setdefault(float(r["budget"]), []).append(float(r[field]))
    return out


def fit_sweep(
    records: Sequence[dict], *, bootstrap: int, seed: int, include_edge: bool = False
) -> ScalingFit:
    tokens, losses = _by_budget(records, "tokens"), _by_budget(records, "final_val_loss")
    cells = {c: (tokens[c], losses[c]) for c in tokens}
    params = _by_budget(records, "non_embedding_params")
    return fit_scaling_laws(cells, params=params, bootstrap=bootstrap, seed=seed, include_edge=include_edge)


@dataclasses.dataclass(frozen=True)
class DownstreamFit:
    nll_law: PowerLaw  # stage 1: normalized NLL of the correct answer at the optimum vs C
    k: float | None  # stage 2: acc = chance + (1 - chance) / (1 + exp(k (nll - x0))); None: not determined
    x0: float | None
    chance: float
    points: tuple[tuple[float, float, float], ...]  # (budget, nll at optimum) per used budget, + accuracy
    sigmoid_error: str = ""  # why stage 2 has no curve (the sweep's accuracies determine none)
    sigmoid_note: str = ""  # a curve whose midpoint the sweep never saw: its accuracy forecast extrapolates

    def forecast(self, budget: float) -> dict[str, float]:
        """Stage 1's NLL at ``budget``, and stage 2's accuracy when its sigmoid was determined."""
        nll = float(self.nll_law(budget))
        if self.k is None or self.x0 is None:
            return {"expected_normalized_nll": nll}
        acc = float(sigmoid_accuracy(nll, self.k, self.x0, chance=self.chance))
        return {"expected_normalized_nll": nll, "expected_accuracy": acc}


def _at_vertex(x: np.ndarray, ys: list[float], vertex: float) -> float:
    """A budget's parabola of ``ys`` against log10 tokens, evaluated at the loss vertex."""
    return float(np.polyval(np.polyfit(x, ys, 2), vertex))


def fit_downstream(records: Sequence[dict], fit: ScalingFit) -> DownstreamFit:
    """Both stages over the sweep's records (each holds ``mc_normalized_nll``, ``mc_accuracy``)."""
    points = []
    for iso in fit.used:
        cell = [r for r in records if float(r["budget"]) == iso.budget]
        x = np.log10([float(r["tokens"]) for r in cell])
        nll = [float(r["mc_normalized_nll"]) for r in cell]
        acc = [float(r["mc_accuracy"]) for r in cell]
        points.append(
            (iso.budget, _at_vertex(x, nll, iso.opt_log10_tokens), _at_vertex(x, acc, iso.opt_log10_tokens))
        )
    law = fit_power_law([p[0] for p in points], [p[1] for p in points])
    chance = float(np.mean([float(r["mc_chance"]) for r in records]))
    nll = [float(r["mc_normalized_nll"]) for r in records]
    try:
        k, x0 = fit_sigmoid(nll, [float(r["mc_accuracy"]) for r in records], chance=chance)
    except FitError as exc:  # the loss forecast stands without it; the reason travels with the fit
        return DownstreamFit(law, None, None, chance, tuple(points), sigmoid_error=str(exc))
    return DownstreamFit(
        law, k, x0, chance, tuple(points), sigmoid_note=_midpoint_note(x0, min(nll), max(nll))
    )


def _midpoint_note(x0: float, lo: float, hi: float) -> str:
    if lo <= x0 <= hi:
        return ""
    return (
        f"sigmoid midpoint x0 = {x0:.4g} lies outside the swept NLL range [{lo:.4g}, {hi:.4g}]: the sweep saw one "
        "side of the curve only, so its accuracy forecast is an extrapolation"
    )


def flagship_cell(cfg: SweepConfig, opt_tokens: float, vocab_size: int) -> SweepCell:
    """The run at ``cfg.forecast_budget``: of the configured sizes, the one whose FLOPs per token are
    nearest (in log) to C / D*, trained for the whole budget."""
    budget = cfg.forecast_budget
    cells = [plan_cell(cfg, budget, size, vocab_size) for size in cfg.size_list]
    want = math.log(budget / opt_tokens)
    return min(cells, key=lambda c: abs(math.log(c.flops_per_token) - want))


def summary_rows(fit: ScalingFit, target: float) -> list[tuple[str, Any, Any]]:
    """(quantity, ours, paper) rows for the asset summary."""
    rows: list[tuple[str, Any, Any]] = [
        ("alpha (D* = A C^alpha)", fit.tokens_law.exponent, PAPER_ALPHA),
        ("alpha 95% CI", f"[{fit.alpha_ci[0]:.3f}, {fit.alpha_ci[1]:.3f}]", "-"),
        ("A", fit.tokens_law.coef, PAPER_A),
        ("budgets used / swept", f"{len(fit.used)} / {len(fit.isoflops)}", "-"),
    ]
    if fit.params_law is not None:
        ci = fit.params_alpha_ci
        rows.append(
            ("N* exponent (95% CI)", f"{fit.params_law.exponent:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]", "-")
        )
    rows.extend(
        (f"forecast {k} at {target:.3g}", v, "-") for k, v in fit.forecast(target).items() if k != "budget"
    )
    return rows


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return buf.getvalue()


def isoflop_png(fit: ScalingFit, records: Sequence[dict]) -> bytes:
    """Validation loss vs tokens per budget, each parabola and its minimum (hollow: flagged, not used)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for iso in fit.isoflops:
        cell = [r for r in records if float(r["budget"]) == iso.budget]
        line = ax.scatter([r["tokens"] for r in cell], [r["final_val_loss"] for r in cell], s=18)
        xs = np.linspace(iso.x_range[0] - 0.1, iso.x_range[1] + 0.1, 60)
        color = line.get_facecolor()[0]
        ax.plot(10**xs, np.polyval(iso.coeffs, xs), color=color, label=f"C={iso.budget:.2g}")
        ax.scatter(
            [iso.opt_tokens],
            [iso.opt_loss],
            marker="*",
            s=120,
            color=color if not iso.edge else "none",
            edgecolors=color,
        )
    ax.set(xscale="log", xlabel="training tokens", ylabel="validation loss", title="IsoFLOP parabolas")
    ax.legend(fontsize=7)
    png = _png(fig)
    plt.close(fig)
    return png


def power_law_png(fit: ScalingFit, target: float, actual_tokens: float | None = None) -> bytes:
    """D*(C) over the used minima, extrapolated to the target budget (and the flagship's tokens if given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    used = fit.used
    ax.scatter([f.budget for f in used], [f.opt_tokens for f in used], label="IsoFLOP minima")
    cs = np.logspace(np.log10(min(f.budget for f in used)) - 0.2, np.log10(target) + 0.2, 50)
    law = fit.tokens_law
    ax.plot(cs, law(cs), label=f"D* = {law.coef:.3g} C^{law.exponent:.3f}")
    ax.scatter([target], [law(target)], marker="*", s=140, label=f"forecast at {target:.2g}")
    if actual_tokens is not None:
        ax.scatter([target], [actual_tokens], marker="x", s=80, label="flagship tokens")
    ax.set(xscale="log", yscale="log", xlabel="compute C (FLOPs)", ylabel="compute-optimal tokens D*")
    ax.legend(fontsize=7)
    png = _png(fig)
    plt.close(fig)
    return png
