"""The synthetic SFT set: verified, cleaned, split by id, and trainable."""

from __future__ import annotations

import json

import pytest

from ml.config import ConfigError
from ml.posttrain.records import check_preference_record, check_sft_record, read_jsonl, split_of
from ml.posttrain.sandbox import backend
from ml.posttrain.synthetic import SyntheticDataConfig, build_synthetic_data

pytestmark = pytest.mark.skipif(backend() != "bwrap", reason="bubblewrap not installed")


def test_build_writes_verified_splits(tmp_path):
    cfg = SyntheticDataConfig(n_math=30, n_code=8, n_qa=0, heldout_fraction=0.2, val_fraction=0.1)
    report = build_synthetic_data(cfg, tmp_path)
    assert report == {
        "generated": 38,
        "qa_generated": 0,
        "duplicates": 0,
        "kept_by_family": {
            "linear": 10,
            "shop": 10,
            "fractions": 10,
            "clamp_scale": 2,
            "every_kth": 2,
            "running_sum": 1,
            "count_multiples": 1,
        },
        # two code tasks differ from an earlier one of their family only in a constant (cosine >= 0.99)
        "dropped_by_reason": {"near_duplicate": 2},
        "splits": {"train": 28, "val": 1, "heldout": 7},
        # two code mutations (a literal + 1) still pass their tests: no pair for them
        "pairs": {"pairs": 34, "pair_mutation_passes": 2},
        "pref_splits": {"train": 28, "val": 1, "heldout": 5},
    }
    assert json.loads((tmp_path / "report.json").read_text()) == report
    splits = {s: read_jsonl(tmp_path / f"{s}.jsonl", check_sft_record) for s in ("train", "val", "heldout")}
    assert {len(v) for v in splits.values()} and all(
        split_of(r["id"], 0.2) == "heldout" for r in splits["heldout"]
    )
    assert all(split_of(r["id"], 0.2) == "train" for r in splits["train"] + splits["val"])
    prefs = {s: read_jsonl(tmp_path / "prefs" / f"{s}.jsonl", check_preference_record) for s in splits}
    for split, recs in prefs.items():  # a pair shares its record's split
        assert {r["id"] for r in recs} <= {r["id"] for r in splits[split]}


def test_corpus_questions_and_the_length_limit(tmp_path):
    docs = [
        (
            "doc-a",
            "The quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat near the door.",
        ),
        (
            "doc-b",
            "Tokens are counted per document and every drop carries its reason with the measured value.",
        ),
    ]
    cfg = SyntheticDataConfig(
        n_math=3, n_code=0, n_qa=2, qa_window_words=12, heldout_fraction=0.0, val_fraction=0.0, max_tokens=60
    )
    words = lambda r: len(" ".join(m["content"] for m in r["messages"]).split())  # noqa: E731
    report = build_synthetic_data(cfg, tmp_path, docs, words)
    assert report["kept_by_family"] == {"linear": 1, "fractions": 1, "qa": 2}
    assert report["dropped_by_reason"] == {"too_long": 1} and report["pairs"] == {"pairs": 4}
    dropped = [json.loads(line) for line in (tmp_path / "dropped.jsonl").read_text().splitlines()]
    assert dropped == [
        {"id": "math-adcf4ee9f844d60c", "drop_reason": "too_long", "drop_detail": "71 tokens > 60"}
    ]
    qa = [r for r in read_jsonl(tmp_path / "train.jsonl", check_sft_record) if r["family"] == "qa"]
    assert [(r["id"], r["answer"]) for r in qa] == [
        ("qa-ae670ccd040b69da", "drop"),
        ("qa-50706aa6009f0e6e", "while"),
    ]
    assert qa[1]["messages"][1]["content"] == 'The word after "the lazy dog" is while.\nAnswer: while'


def test_unverifiable_tasks_are_dropped_with_the_reason(tmp_path):
    report = build_synthetic_data(
        SyntheticDataConfig(n_math=3, n_code=2, sandbox_wall_seconds=0.001), tmp_path
    )
    assert report["dropped_by_reason"] == {"code_unverified": 2}
    dropped = [json.loads(line) for line in (tmp_path / "dropped.jsonl").read_text().splitlines()]
    assert [d["drop_detail"].split(":")[0] for d in dropped] == ["timeout", "timeout"]
    with pytest.raises(ConfigError, match="n_math=0, n_code=0 and n_qa=0 must be >= 0, not all 0"):
        SyntheticDataConfig(n_math=0, n_code=0, n_qa=0)
    with pytest.raises(ConfigError, match="max_tokens must be >= 0"):
        SyntheticDataConfig(max_tokens=-1)
