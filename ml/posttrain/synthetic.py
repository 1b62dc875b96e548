"""One call that builds the verified synthetic post-training data: what the ``synthetic_data`` asset runs.

Math problems (every step and answer checked, ml/posttrain/math_synth.py), code tasks (the reference
solution passes its unit tests in the sandbox, ml/posttrain/code_synth.py) and corpus-grounded questions
(the answer is a unique span of a held-out document, ml/posttrain/qa.py) become SFT records; anything
that fails verification, the tone rules (ml/posttrain/cleaning.py) or semantic dedup
(ml/posttrain/pruning.py) is dropped with its reason; the rest is split by id into train / val / heldout
(ml/posttrain/records.py) and written as JSONL, with a preference pair per record (its verified response
over a corruption its verifier refuses, ml/posttrain/preferences.py) split the same way under ``prefs/``.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from ml.config import ConfigError, StageConfig
from ml.io import atomic_write_text
from ml.posttrain.cleaning import clean_records
from ml.posttrain.code_synth import check_candidate, generate_code_tasks
from ml.posttrain.math_synth import generate_math, verify_solution
from ml.posttrain.preferences import preference_pairs
from ml.posttrain.pruning import semantic_dedup
from ml.posttrain.qa import corpus_questions
from ml.posttrain.records import check_sft_record, write_posttrain_splits
from ml.posttrain.sandbox import SandboxLimits


@dataclasses.dataclass(frozen=True)
class SyntheticDataConfig(StageConfig):
    """n_math / n_code / n_qa: problems generated (chosen per preset: tiny runs in seconds on CPU);
    qa_window_words: words of document text a question is asked over; max_tokens: a chat longer than this
    (prompt and response, chat format) is dropped as ``too_long`` (0 = no limit); dedup_threshold: cosine similarity
    at which a record is a near duplicate (chosen: 0.99 keeps most template variants whose numbers differ);
    heldout_fraction / val_fraction: by id (not published, chosen); sandbox_*: limits per code check."""

    n_math: int = 300
    n_code: int = 40
    n_qa: int = 60
    qa_window_words: int = 40
    dedup_threshold: float = 0.99
    max_tokens: int = 0
    seed: int = 0
    heldout_fraction: float = 0.1
    val_fraction: float = 0.05
    sandbox_cpu_seconds: int = 5
    sandbox_wall_seconds: float = 20.0

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # tiny: 9.1 s on the shared 2-core CPU (17.5 s under load average 7-8), mostly the 40 + 13 sandbox runs
        "tiny": {"n_math": 300, "n_code": 40, "n_qa": 60, "qa_window_words": 30, "max_tokens": 256},
        "small": {"n_math": 20_000, "n_code": 2_000, "n_qa": 5_000, "qa_window_words": 200},
        "8b": {"n_math": 200_000, "n_code": 20_000, "n_qa": 50_000, "qa_window_words": 2_000},
        "70b": {"n_math": 200_000, "n_code": 20_000, "n_qa": 50_000, "qa_window_words": 2_000},
        "405b": {"n_math": 200_000, "n_code": 20_000, "n_qa": 50_000, "qa_window_words": 2_000},
    }

    def __post_init__(self) -> None:
        name = type(self).__name__
        if min(self.n_math, self.n_code, self.n_qa) < 0 or self.n_math + self.n_code + self.n_qa == 0:
            raise ConfigError(
                f"{name}: n_math={self.n_math}, n_code={self.n_code} and n_qa={self.n_qa} must be >= 0, "
                "not all 0"
            )
        if not 0.0 < self.dedup_threshold <= 1.0:
            raise ConfigError(f"{name}.dedup_threshold must be in (0, 1], got {self.dedup_threshold}")
        if self.max_tokens < 0:
            raise ConfigError(f"{name}.max_tokens must be >= 0 (0 = no limit), got {self.max_tokens}")
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


def _length_filter(
    records: list[dict[str, Any]], max_tokens: int, count_tokens: Callable[[dict[str, Any]], int] | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    if not max_tokens or count_tokens is None:
        return records, []
    kept, dropped = [], []
    for r in records:
        n = count_tokens(r)
        if n > max_tokens:
            dropped.append(
                {"id": r["id"], "drop_reason": "too_long", "drop_detail": f"{n} tokens > {max_tokens}"}
            )
        else:
            kept.append(r)
    return kept, dropped


def build_synthetic_data(
    cfg: SyntheticDataConfig,
    out_dir: Path | str,
    qa_docs: Sequence[tuple[str, str]] = (),
    count_tokens: Callable[[dict[str, Any]], int] | None = None,
) -> dict[str, Any]:
    """Write ``train.jsonl``, ``val.jsonl``, ``heldout.jsonl``, ``prefs/{train,val,heldout}.jsonl``,
    ``dropped.jsonl`` and ``report.json``; ``qa_docs`` are the held-out (id, text) documents questions are
    asked over; ``count_tokens(record)`` is a chat's length for ``cfg.max_tokens``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records, dropped = _verified_records(cfg)
    records += corpus_questions(qa_docs, cfg.n_qa, cfg.seed, cfg.qa_window_words)
    records = [check_sft_record(r, f"synthetic {r['id']}") for r in records]
    by_id: dict[str, dict[str, Any]] = {}
    for r in records:  # the same problem twice (same id) is kept once
        by_id.setdefault(r["id"], r)
    unique = list(by_id.values())
    kept, tone_dropped, _ = clean_records(unique)
    kept, near = semantic_dedup(kept, cfg.dedup_threshold)
    dropped += [
        {"id": r["id"], "drop_reason": r["drop_reason"], "drop_detail": r["drop_detail"]}
        for r in [*tone_dropped, *near]
    ]
    kept, too_long = _length_filter(kept, cfg.max_tokens, count_tokens)
    dropped += too_long
    splits = write_posttrain_splits(kept, out_dir, cfg.heldout_fraction, cfg.val_fraction, cfg.seed)
    limits = SandboxLimits(cpu_seconds=cfg.sandbox_cpu_seconds, wall_seconds=cfg.sandbox_wall_seconds)
    pairs, pair_counts = preference_pairs(kept, limits)
    pref_splits = write_posttrain_splits(
        pairs, out_dir / "prefs", cfg.heldout_fraction, cfg.val_fraction, cfg.seed
    )
    atomic_write_text(out_dir / "dropped.jsonl", "".join(json.dumps(d) + "\n" for d in dropped))
    report = {
        "generated": cfg.n_math + cfg.n_code + cfg.n_qa,
        "qa_generated": sum(1 for r in records if r.get("family") == "qa"),
        "duplicates": len(records) - len(unique),
        "kept_by_family": dict(Counter(r["family"] for r in kept)),
        "dropped_by_reason": dict(Counter(d["drop_reason"] for d in dropped)),
        "splits": splits,
        "pairs": dict(pair_counts),
        "pref_splits": pref_splits,
    }
    atomic_write_text(out_dir / "report.json", json.dumps(report, indent=2))
    return report
