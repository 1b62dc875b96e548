"""Reading a run's ``metrics.jsonl`` back and plotting its loss curve (PNG bytes, matplotlib Agg)."""

from __future__ import annotations

import json
from pathlib import Path

from ml.plots import agg_subplots, figure_png


def read_metrics(path: Path) -> list[dict]:
    """One dict per logged step; a truncated last line (killed writer) is skipped, any other bad line is an error."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no metrics were written (did rank 0 run?)")
    lines = path.read_text().splitlines()
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path}:{i + 1}: not JSON ({exc})") from exc
    # A resumed run appends again from its checkpoint step: keep the latest record for each step.
    by_step = {int(r["step"]): r for r in rows}
    return [by_step[s] for s in sorted(by_step)]


def loss_curve_png(metrics: list[dict]) -> bytes:
    fig, ax = agg_subplots(figsize=(6, 3.5), dpi=100)
    train = [(m["step"], m["loss"]) for m in metrics if "loss" in m]
    val = [(m["step"], m["val_loss"]) for m in metrics if "val_loss" in m]
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss")
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="val loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats)")
    ax.grid(alpha=0.3)
    ax.legend()
    return figure_png(fig)
