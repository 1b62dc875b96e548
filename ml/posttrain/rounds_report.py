"""The per-round table of post-training (Llama 3 paper §4.1 rounds) and its plot.

One row per round from the chat model's held-out evaluation: for the model the round started from (``start``),
its SFT model (``sft``) and its chat model (``chat``) the verifier pass rates, the log-likelihood per token
of verified answers and the held-out preference accuracy, and the reward model's win rate of the chat model
over the start (round 1: the base model; round k: round k-1's chat model).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import pandas as pd

HEADLINE = (
    "pass_rate_math",
    "pass_rate_code",
    "pass_rate_qa",
    "answer_loglik_math",
    "answer_loglik_code",
    "answer_loglik_qa",
    "pref_accuracy",
)


SAFETY = ("vr", "frr", "refusal_margin")


def rounds_table(
    evals: Mapping[int, Mapping[str, Any]], safety: Mapping[int, Mapping[str, Any]] | None = None
) -> pd.DataFrame:
    """Rows indexed by round; columns ``<model>.<metric>`` and ``win_rate_vs_start``; with ``safety`` (the
    round's safety evaluation report: ``headline`` of the chat model, ``previous.headline`` of the model
    the round started from) also ``start.<m>`` and ``chat.<m>`` for VR, FRR and the refusal margin (mean
    log-likelihood per token of a held-out refusal on adversarial minus borderline prompts)."""
    rows = []
    for k in sorted(evals):
        ev = evals[k]
        row: dict[str, Any] = {"round": k}
        if safety and k in safety:
            before = (safety[k].get("previous") or {}).get("headline", {})
            row.update({f"start.{m}": before[m] for m in SAFETY if m in before})
            row.update({f"chat.{m}": safety[k]["headline"][m] for m in SAFETY if m in safety[k]["headline"]})
        for label in ("start", "sft", "chat"):
            for metric in HEADLINE:
                if metric in ev["models"].get(label, {}):
                    row[f"{label}.{metric}"] = ev["models"][label][metric]
        row["win_rate_vs_start"] = ev["win_rate_vs_start"]
        rows.append(row)
    return pd.DataFrame(rows).set_index("round")


def rounds_png(table: pd.DataFrame) -> bytes:
    """Pass rates, answer log-likelihoods and preference accuracy / win rate across rounds, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("pass_rate", "verifier pass rate"),
        ("answer_loglik", "log-lik / token"),
        ("pref", "pref. acc."),
    ]
    if any(c.endswith((".vr", ".frr")) for c in table.columns):
        panels.append((("vr", "frr"), "safety: VR / FRR"))
    if any(c.endswith(".refusal_margin") for c in table.columns):
        panels.append(("refusal_margin", "refusal log-lik: adversarial - borderline"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.6))
    for ax, (prefix, title) in zip(axes, panels, strict=True):
        for col in [c for c in table.columns if c.split(".")[-1].startswith(prefix)]:
            ax.plot(table.index, table[col], marker="o", label=col)
        if prefix == "pref":
            ax.plot(table.index, table["win_rate_vs_start"], marker="s", label="RM win rate vs start")
        ax.set_title(title)
        ax.set_xlabel("round")
        if ax.get_legend_handles_labels()[0]:  # a panel whose metrics the table lacks stays empty
            ax.legend(fontsize=6)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()
