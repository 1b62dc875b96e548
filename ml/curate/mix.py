"""Realise a data mix: re-weight document classes so the corpus hits target proportions.

Llama 3 paper §3.1.2: final pre-training mix ≈ 50% general knowledge, 25% math & reasoning, 17% code, 8% multilingual
tokens. Each class c with ``a_c`` units available gets ``s_c = t_c · T`` units, where ``T`` is the corpus
size (by default the size of the input, so the mix re-weights without growing or shrinking the corpus),
reduced when some class would need more than ``max_upsample`` copies of its data. A class is down-sampled by
a seeded random choice of documents and up-sampled by whole repeats of every document (column ``repeat``)
plus a random subset for the fractional part.

A class that cannot be filled (no documents, or too few to reach ``min_fill`` of its share) is never
re-normalized away silently: the report keeps every class's *configured* target next to the target applied
and the realized share, lists the unfilled classes, and :func:`mix_gate` judges the realized mix against
the configured targets (a gap caused by an unfilled class warns or fails, by ``MixConfig.unfillable``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ml.config import ConfigError, StageConfig

PAPER_MIX: dict[str, float] = {"general": 0.50, "math_reasoning": 0.25, "code": 0.17, "multilingual": 0.08}


@dataclass(frozen=True)
class MixConfig(StageConfig):
    """Target class proportions and how to realise them."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"tiny": {}, "small": {}, "8b": {}, "70b": {}, "405b": {}}

    targets: dict[str, float] = field(
        default_factory=lambda: dict(PAPER_MIX)
    )  # Llama 3 paper §3.1.2: 50/25/17/8
    # "tokens" (the trained tokenizer's count in column ``n_tokens``; without it ≈ chars / chars_per_token)
    # or "docs"
    unit: str = "tokens"
    chars_per_token: float = 4.0  # chosen: ~4 chars per BPE token for English web text (the fallback only)
    total_units: float | None = None  # None: the input's size; else the mixed corpus size (same unit)
    max_upsample: float = (
        4.0  # chosen: Muennighoff et al. 2023 find up to ~4 epochs nearly as good as new data
    )
    # chosen: a class that cannot fill half of its target share even at max_upsample is left out and its
    # share re-normalized over the others (reported as ``insufficient_classes``), instead of shrinking the
    # whole corpus to the rare class's size.
    min_fill: float = 0.5
    unfillable: str = "warn"  # the gate on an unfilled class: "warn" (report, run on) or "fail"
    gate_tolerance: float = 0.05  # chosen: realized share within 5 points of the configured target
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.targets:
            raise ConfigError("MixConfig.targets: empty")
        bad = {k: v for k, v in self.targets.items() if not v >= 0}
        if bad:
            raise ConfigError(f"MixConfig.targets: negative or NaN proportion(s) {bad}")
        if sum(self.targets.values()) <= 0:
            raise ConfigError("MixConfig.targets: proportions sum to 0")
        if self.unit not in ("tokens", "docs"):
            raise ConfigError(f"MixConfig.unit: {self.unit!r} is not 'tokens' or 'docs'")
        if not 0.0 <= self.min_fill <= 1.0:
            raise ConfigError(f"MixConfig.min_fill: {self.min_fill} must be in [0, 1]")
        if self.unfillable not in ("warn", "fail"):
            raise ConfigError(f"MixConfig.unfillable: {self.unfillable!r} is not 'warn' or 'fail'")
        if self.max_upsample < 1.0:
            raise ConfigError(f"MixConfig.max_upsample: {self.max_upsample} must be >= 1")


def doc_units(df: pd.DataFrame, cfg: MixConfig) -> np.ndarray:
    """Size of each doc in the mix unit: 1 per doc; its ``n_tokens`` (counted by the trained tokenizer)
    when the column exists; else the estimate ``n_chars / chars_per_token`` (off by ~30% on non-English)."""
    if cfg.unit == "docs":
        return np.ones(len(df), dtype=np.float64)
    if "n_tokens" in df.columns:
        return df["n_tokens"].to_numpy(dtype=np.float64)
    chars = (
        df["n_chars"].to_numpy() if "n_chars" in df.columns else df["text"].astype(str).str.len().to_numpy()
    )
    return chars.astype(np.float64) / cfg.chars_per_token


def _take(units: np.ndarray, target: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of a seeded random subset whose total units come closest to ``target`` (greedy, in order)."""
    if target <= 0 or units.size == 0:
        return np.zeros(0, dtype=np.int64)
    order = rng.permutation(units.size)
    cum = np.cumsum(units[order])
    k = int(np.searchsorted(cum, target, side="left"))  # first prefix reaching the target
    if k >= units.size:
        return np.sort(order)
    below = cum[k - 1] if k > 0 else 0.0
    n = k + 1 if (cum[k] - target) < (target - below) else k  # nearer of the two prefixes
    return np.sort(order[:n])


def _fillable_targets(
    live: dict[str, float], available: dict[str, float], total: float, cfg: MixConfig
) -> tuple[dict[str, float], list[str]]:
    """``(targets normalised to 1, insufficient classes)``: classes too small to fill ``min_fill`` of
    their re-normalised share at ``max_upsample`` are left out, repeatedly, until the set is stable."""
    insufficient: list[str] = []
    while True:
        norm = sum(live.values())
        short = [
            c for c, t in live.items() if cfg.max_upsample * available[c] < cfg.min_fill * (t / norm) * total
        ]
        if not short or len(short) == len(live):
            break
        insufficient += short
        live = {c: t for c, t in live.items() if c not in short}
    norm = sum(live.values())
    return {c: t / norm for c, t in live.items()}, insufficient


def _select(
    labels: np.ndarray,
    units: np.ndarray,
    available: dict[str, float],
    targets: dict[str, float],
    total: float,
    cfg: MixConfig,
) -> tuple[list[tuple[np.ndarray, np.ndarray]], dict[str, dict[str, float]]]:
    """Per class: whole repeats of every doc plus a seeded random subset for the fraction. Returns
    ``(input positions, repeat index)`` per class and the per-class report (without ``realized``)."""
    rng = np.random.default_rng(cfg.seed)
    picks: list[tuple[np.ndarray, np.ndarray]] = []  # (input positions, repeat index)
    classes: dict[str, dict[str, float]] = {}
    for c in cfg.targets:  # fixed order → deterministic RNG stream
        pos = np.flatnonzero(labels == c)
        want = targets.get(c, 0.0) * total
        full = int(want // available[c]) if available[c] > 0 else 0
        extra = pos[_take(units[pos], want - full * available[c], rng)]
        idx = np.concatenate([np.tile(pos, full), extra])
        rep = np.concatenate([np.repeat(np.arange(full), pos.size), np.full(extra.size, full)])
        picks.append((idx, rep))
        selected = float(units[idx].sum())
        classes[c] = {"applied_target": targets.get(c, 0.0), "available": available[c], "selected": selected,
                      "weight": selected / available[c] if available[c] else 0.0, "repeats": full + (extra.size > 0)}  # fmt: skip
    return picks, classes


def unit_source(df: pd.DataFrame, cfg: MixConfig) -> str:
    """How the mix unit was measured: ``documents``, ``tokenizer`` or ``chars/<chars_per_token>``."""
    if cfg.unit == "docs":
        return "documents"
    return "tokenizer" if "n_tokens" in df.columns else f"chars/{cfg.chars_per_token:g}"


def realize_mix(df: pd.DataFrame, class_col: str, cfg: MixConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Sample/repeat docs per class to hit ``cfg.targets``; returns (mixed frame, report).

    The mixed frame has the input's columns plus ``repeat`` (0 for a doc's first copy), rows ordered by
    input position then repeat. Report: ``classes`` → {target (as configured, normalised to 1),
    applied_target (re-normalised over the filled classes), available, selected, realized, weight, repeats},
    plus ``total_units``, ``unit``, ``empty_classes`` (no documents), ``insufficient_classes`` (too small to
    fill ``min_fill`` of their share at ``max_upsample``), ``unfilled_classes`` (both, left out),
    ``untargeted_classes`` (present in df, no target: dropped) and ``capped`` (T lowered by max_upsample).
    """
    if class_col not in df.columns:
        raise KeyError(f"realize_mix: no class column {class_col!r}; has {', '.join(df.columns)}")
    units = doc_units(df, cfg)
    labels = df[class_col].astype(str).to_numpy()
    available = {c: float(units[labels == c].sum()) for c in cfg.targets}
    empty = [c for c, a in available.items() if a <= 0 and cfg.targets[c] > 0]
    live = {c: t for c, t in cfg.targets.items() if c not in empty and t > 0}
    if not live:
        raise ValueError(f"realize_mix: no documents in any target class {list(cfg.targets)} ({class_col!r})")
    total = float(cfg.total_units) if cfg.total_units is not None else float(units.sum())
    targets, insufficient = _fillable_targets(live, available, total, cfg)
    untargeted = sorted(set(labels) - set(cfg.targets))

    cap_total = min(cfg.max_upsample * available[c] / t for c, t in targets.items())
    capped = cap_total < total
    total = min(total, cap_total)

    picks, classes = _select(labels, units, available, targets, total, cfg)
    grand = sum(v["selected"] for v in classes.values())
    configured = sum(cfg.targets.values())
    for c, v in classes.items():
        v["target"] = cfg.targets[c] / configured
        v["realized"] = v["selected"] / grand if grand else 0.0

    idx = np.concatenate([p[0] for p in picks]).astype(np.int64)
    rep = np.concatenate([p[1] for p in picks]).astype(np.int64)
    order = np.lexsort((rep, idx))  # by input position, then repeat
    mixed = df.iloc[idx[order]].reset_index(drop=True)
    mixed["repeat"] = rep[order]
    report = {
        "unit": cfg.unit,
        "unit_source": unit_source(df, cfg),
        "total_units": grand,
        "capped": bool(capped),
        "empty_classes": empty,
        "insufficient_classes": sorted(insufficient),
        "unfilled_classes": sorted(set(empty) | set(insufficient)),
        "unfillable": cfg.unfillable,
        "gate_tolerance": cfg.gate_tolerance,
        "untargeted_classes": untargeted,
        "classes": classes,
    }
    return mixed, report


def mix_gate(report: dict[str, Any]) -> dict[str, Any]:
    """The realized mix against the *configured* targets: ``passed``, ``severity`` ("ok", "warn", "error"),
    ``gaps`` (realized - configured, per class), ``max_abs_gap``, ``unfilled_classes`` and a one-line
    ``summary``. A gap beyond tolerance is an error; when classes were unfilled it is a warning under
    ``unfillable="warn"`` (the mix could not do better with this corpus) and an error under "fail"."""
    gaps = {c: v["realized"] - v["target"] for c, v in report["classes"].items()}
    worst = max((abs(g) for g in gaps.values()), default=0.0)
    unfilled = list(report.get("unfilled_classes", []))
    passed = worst <= report["gate_tolerance"] and not unfilled
    if passed:
        severity = "ok"
    elif unfilled and report.get("unfillable", "warn") == "warn":
        severity = "warn"
    else:
        severity = "error"
    shares = ", ".join(
        f"{c} {v['realized']:.1%} (target {v['target']:.0%})" for c, v in report["classes"].items()
    )
    summary = f"realized {report['unit']}: {shares}"
    if unfilled:
        summary += f"; unfilled: {', '.join(unfilled)} (their share went to the other classes)"
    return {"passed": passed, "severity": severity, "gaps": gaps, "max_abs_gap": worst,
            "unfilled_classes": unfilled, "summary": summary}  # fmt: skip


def plot_mix(report: dict[str, Any]) -> bytes:
    """PNG bar chart of the configured target vs the realised share per class; unfilled classes are named
    on their tick (matplotlib Agg, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(report["classes"])
    unfilled = set(report.get("unfilled_classes", []))
    target = [report["classes"][c]["target"] for c in names]
    realized = [report["classes"][c]["realized"] for c in names]
    fig = Figure(figsize=(6, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = np.arange(len(names))
    ax.bar(x - 0.2, target, width=0.4, label="configured target")
    ax.bar(x + 0.2, realized, width=0.4, label="realized")
    ax.set_xticks(x, [f"{c}\n(unfilled)" if c in unfilled else c for c in names], rotation=15)
    ax.set_ylabel(f"share of {report['unit']}")
    ax.set_title("data mix" + (" (capped by max_upsample)" if report.get("capped") else ""))
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
