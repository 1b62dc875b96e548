"""The data-value annealing experiment's numbers (Llama 3 paper §3.4.3): a candidate anneal against the
control anneal on the unchanged mix, both from the same mid-training checkpoint and scored on the same
held-out documents and multiple-choice items.

``model_scores`` flattens one model's evaluation (ml/eval/model_evals.py ``evaluate_model`` with
``group_by=("domain",)`` and MC items) to the numbers compared; ``value_table`` puts a candidate next to the
control: one row per metric, ``delta = candidate - control`` (a negative loss / NLL delta or a positive
accuracy delta means the candidate data helped).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ml.plots import agg_subplots, figure_png

HEADLINE = ("heldout_loss", "mc_accuracy", "mc_normalized_nll")


def model_scores(evals: Mapping[str, Any], class_column: str = "domain") -> dict[str, Any]:
    """``heldout_loss``, ``mc_accuracy``, ``mc_normalized_nll`` and ``class_loss`` (held-out loss per value of
    ``class_column``) of one ``evaluate_model`` result."""
    groups = evals.get("groups")
    if groups is None or "mc" not in evals:
        raise ValueError("model_scores: the evaluation needs held-out loss per group and MC scores")
    per_class = groups[groups["column"] == class_column]
    return {
        "heldout_loss": float(evals["heldout_loss"]),
        "mc_accuracy": float(evals["mc"]["accuracy"]),
        "mc_normalized_nll": float(evals["mc"]["normalized_nll"]),
        "class_loss": {str(g): float(v) for g, v in zip(per_class["group"], per_class["loss"], strict=True)},
    }


def value_table(candidate: Mapping[str, Any], control: Mapping[str, Any]) -> pd.DataFrame:
    """Rows ``metric, candidate, control, delta``: the headline metrics, then ``heldout_loss[<class>]`` for
    every class either model was scored on (NaN where one of them has no such class)."""
    rows = [(m, float(candidate[m]), float(control[m])) for m in HEADLINE]
    classes = sorted(set(candidate["class_loss"]) | set(control["class_loss"]))
    for c in classes:
        rows.append(
            (
                f"heldout_loss[{c}]",
                float(candidate["class_loss"].get(c, np.nan)),
                float(control["class_loss"].get(c, np.nan)),
            )
        )
    table = pd.DataFrame(rows, columns=["metric", "candidate", "control"])
    return table.assign(delta=table["candidate"] - table["control"])


def noise_floor(repeats: list[Mapping[str, Any]], control: Mapping[str, Any]) -> dict[str, float]:
    """The largest ``|delta|`` per metric of the control re-annealed on the same mix with other data-order
    seeds (``repeats``) against the control: a candidate's delta within it is not a measured value."""
    if not repeats:
        return {}
    tables = [value_table(r, control) for r in repeats]
    deltas = pd.concat([t.set_index("metric")["delta"].abs() for t in tables], axis=1)
    return {str(m): float(v) for m, v in deltas.max(axis=1).items()}


def with_noise(table: pd.DataFrame, noise: Mapping[str, float]) -> pd.DataFrame:
    """``table`` with ``noise`` (NaN where not measured) and ``beyond_noise`` (``|delta| > noise``)."""
    floor = table["metric"].map(lambda m: noise.get(m, np.nan)).astype(float)
    return table.assign(noise=floor, beyond_noise=table["delta"].abs() > floor)


def deltas_png(table: pd.DataFrame, candidate: str) -> bytes:
    """Bars of the held-out loss delta overall and per class, and the MC deltas, for one candidate."""
    loss = table[table["metric"].str.startswith("heldout_loss")]
    mc = table[table["metric"].str.startswith("mc_")]
    fig, axes = agg_subplots(1, 2, figsize=(8, 3.2), dpi=100, gridspec_kw={"width_ratios": [3, 1]})
    loss_labels = [m[m.index("[") + 1 : -1] if "[" in m else "all" for m in loss["metric"]]
    loss_colors = ["tab:green" if d < 0 else "tab:red" for d in loss["delta"]]
    # accuracy: up is better; normalized NLL: down is better
    mc_colors = ["tab:green" if (d > 0) == (m == "mc_accuracy") else "tab:red"
                 for m, d in zip(mc["metric"], mc["delta"], strict=True)]  # fmt: skip
    panels = (
        (axes[0], loss, loss_labels, loss_colors, "held-out loss delta (nats)"),
        (axes[1], mc, [m[3:] for m in mc["metric"]], mc_colors, "MC delta"),
    )
    for ax, part, labels, colors, title in panels:
        ax.bar(range(len(part)), part["delta"], color=colors)
        ax.set_xticks(range(len(part)), labels, rotation=30, fontsize=7)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"candidate {candidate} vs control (green: the candidate helped)", fontsize=9)
    return figure_png(fig)
