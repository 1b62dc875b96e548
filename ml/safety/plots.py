"""Grouped bar charts of per-group rates (PNG bytes, matplotlib Agg): VR/FRR per category, per-class
precision/recall, injection success per technique."""

from __future__ import annotations

import pandas as pd

from ml.plots import agg_subplots, figure_png


def grouped_bars_png(table: pd.DataFrame, columns: list[str], title: str, ylabel: str = "rate") -> bytes:
    """One group of bars per row of ``table`` (its index on the x axis), one bar per column, y in [0, 1]."""
    fig, ax = agg_subplots(figsize=(max(4.0, 0.45 * len(table) * len(columns) + 1.5), 3.5), dpi=100)
    width = 0.8 / max(1, len(columns))
    x = range(len(table))
    for j, col in enumerate(columns):
        ax.bar([i + j * width for i in x], table[col].fillna(0.0), width, label=col)
    ax.set_xticks([i + 0.4 - width / 2 for i in x], [str(i) for i in table.index], rotation=45, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    return figure_png(fig)
