"""One call that builds the verified synthetic SFT set: what a ``synthetic_data`` asset will run.

Math problems (every step and answer checked, ml/posttrain/math_synth.py) and code tasks (the reference
solution passes its unit tests in the sandbox, ml/posttrain/code_synth.py) become SFT records; anything
that fails verification or the tone rules (ml/posttrain/cleaning.py) is dropped with its reason; the rest
is split by id into train / val / heldout (ml/posttrain/records.py) and written as JSONL with a report.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

from ml.config import ConfigError, StageConfig
from ml.io import atomic_write_text
from ml.posttrain.cleaning import clean_records
from ml.posttrain.code_synth import check_candidate, generate_code_tasks
from ml.posttrain.math_synth import generate_math, verify_solution
from ml.posttrain.records import check_sft_record, write_posttrain_splits
from ml.posttrain.sandbox import SandboxLimits


@dataclasses.dataclass(frozen=True)
class SyntheticDataConfig(StageConfig):
    """n_math / n_code: problems generated (chosen per preset: tiny runs in seconds on CPU);
    heldout_fraction / val_fraction: by id (not published, chosen); sandbox_*: limits per code check."""

    n_math: int = 300
    n_code: int = 40
    seed: int = 0
    heldout_fraction: float = 0.1
    val_fraction: float = 0.05
    sandbox_cpu_seconds: int = 5
    sandbox_wall_seconds: float = 20.0

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"n_math": 300, "n_code": 40},
        "small": {"n_math": 20_000, "n_code": 2_000},
        "8b": {"n_math": 200_000, "n_code": 20_000},
        "70b": {"n_math": 200_000, "n_code": 20_000},
        "405b": {"n_math": 200_000, "n_code": 20_000},
    }

    def __post_init__(self) -> None:
        name = type(self).__name__
        if self.n_math < 0 or self.n_code < 0 or self.n_math + self.n_code == 0:
            raise ConfigError(
                f"{name}: n_math={self.n_math} and n_code={self.n_code} must be >= 0, not both 0"
            )
        for f in ("heldout_fraction", "val_fraction"):
            if not 0.0 <= getattr(self, f) < 1.0:
                raise ConfigError(f"{name}.{f} must be in [0, 1), got {getattr(self, f)}")


def _verified_records(cfg: SyntheticDataConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(records, dropped) where every kept record passed its checker; each drop carries its reason."""
    kept, dropped = [], []
    for p in generate_math(cfg.n_math, cfg.seed):
        verdict = verify_solution(p.solution, p.answer)  # re-checked here: the record is what is checked
        (kept if verdict.ok else dropped).append(
            p.to_record()
            if verdict.ok
            else {"id": p.id, "drop_reason": "math_unverified", "drop_detail": verdict.reason}
        )
    limits = SandboxLimits(cpu_seconds=cfg.sandbox_cpu_seconds, wall_seconds=cfg.sandbox_wall_seconds)
    for t in generate_code_tasks(cfg.n_code, cfg.seed):
        verdict = check_candidate(t, t.reference, limits)
        if verdict.ok:
            kept.append(t.to_record())
        else:
            detail = f"{verdict.status}: {verdict.detail or '; '.join(verdict.failures)}"
            dropped.append({"id": t.id, "drop_reason": "code_unverified", "drop_detail": detail})
    return kept, dropped


def build_synthetic_data(cfg: SyntheticDataConfig, out_dir: Path | str) -> dict[str, Any]:
    """Write ``train.jsonl``, ``val.jsonl``, ``heldout.jsonl``, ``dropped.jsonl`` and ``report.json``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records, dropped = _verified_records(cfg)
    records = [check_sft_record(r, f"synthetic {r['id']}") for r in records]
    by_id: dict[str, dict[str, Any]] = {}
    for r in records:  # the same problem twice (same id) is kept once
        by_id.setdefault(r["id"], r)
    unique = list(by_id.values())
    kept, tone_dropped, _ = clean_records(unique)
    dropped += [
        {"id": r["id"], "drop_reason": r["drop_reason"], "drop_detail": r["drop_detail"]}
        for r in tone_dropped
    ]
    splits = write_posttrain_splits(kept, out_dir, cfg.heldout_fraction, cfg.val_fraction, cfg.seed)
    atomic_write_text(out_dir / "dropped.jsonl", "".join(json.dumps(d) + "\n" for d in dropped))
    report = {
        "generated": cfg.n_math + cfg.n_code,
        "duplicates": len(records) - len(unique),
        "kept_by_family": dict(Counter(r["family"] for r in kept)),
        "dropped_by_reason": dict(Counter(d["drop_reason"] for d in dropped)),
        "splits": splits,
    }
    atomic_write_text(out_dir / "report.json", json.dumps(report, indent=2))
    return report
