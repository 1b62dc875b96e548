"""Whether a model version may be promoted to ``champion``: every evaluation it requires evaluated exactly
this version and passed its blocking checks, and every other required stage's newest version passed.

Inputs are version records (``{"version", "status", "inputs": {asset: {"md5", ...}}}``, oldest first), the
form the artifact store keeps them in; a version's status is ``current`` or ``superseded`` only when every
blocking check of it passed, ``failed`` when one did not, ``pending`` while it is written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import pandas as pd

from ml.config import StageConfig

PASSED = ("current", "superseded")


@dataclasses.dataclass(frozen=True)
class PromotionConfig(StageConfig):
    """evaluations: assets that must have evaluated this model version and passed (the newest evaluation
    of it counts); passing: assets whose newest version must have passed (checks not tied to one model
    version, such as the scaling forecast)."""

    evaluations: tuple[str, ...] = ("base_model_evals", "safety_evals", "fp8_model")
    passing: tuple[str, ...] = ("scaling_flagship",)

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {p: {} for p in ("tiny", "small", "8b", "70b", "405b")}


@dataclasses.dataclass(frozen=True)
class ChatPromotionConfig(PromotionConfig):
    """A round's chat model: its safety evaluation (the chat model's own checks ran when it was made)."""

    evaluations: tuple[str, ...] = ("chat_safety_evals",)
    passing: tuple[str, ...] = ()


def _row(kind: str, asset: str, rec: Mapping[str, Any] | None, reason: str) -> dict[str, Any]:
    ok = rec is not None and rec.get("status") in PASSED
    return {
        "requirement": kind,
        "asset": asset,
        "version": rec.get("version", "") if rec else "",
        "status": rec.get("status", "") if rec else "missing",
        "ok": ok,
        "reason": "" if ok else reason,
    }


def _newest(records: Sequence[Mapping[str, Any]], keep=lambda r: True) -> Mapping[str, Any] | None:
    done = [r for r in records if r.get("status") != "pending" and keep(r)]
    return done[-1] if done else None


def evaluation_row(asset: str, records: Sequence[Mapping[str, Any]], model: str, md5: str) -> dict[str, Any]:
    """The newest finished evaluation by ``asset`` of ``model`` at ``md5``: ok when it passed."""
    rec = _newest(records, lambda r: (r.get("inputs") or {}).get(model, {}).get("md5") == md5)
    if rec is None:
        return _row("evaluated this version", asset, rec, f"{asset} never evaluated {model} {md5[:12]}")
    reason = f"{asset} {rec['version']} evaluated it and failed: {rec.get('reason', '')}"
    return _row("evaluated this version", asset, rec, reason)


def passing_row(asset: str, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The newest finished version of ``asset``: ok when it passed."""
    rec = _newest(records)
    if rec is None:
        return _row("newest version passed", asset, rec, f"{asset} has no version")
    return _row(
        "newest version passed", asset, rec, f"{asset} {rec['version']} failed: {rec.get('reason', '')}"
    )


def decide(
    cfg: PromotionConfig, model: str, md5: str, records: Mapping[str, Sequence[Mapping[str, Any]]]
) -> pd.DataFrame:
    """One row per requirement of ``cfg`` (``records``: asset -> its version records, oldest first);
    the model may be promoted when every row is ok."""
    rows = [evaluation_row(a, records.get(a, ()), model, md5) for a in cfg.evaluations]
    rows += [passing_row(a, records.get(a, ())) for a in cfg.passing]
    return pd.DataFrame(rows, columns=["requirement", "asset", "version", "status", "ok", "reason"])
