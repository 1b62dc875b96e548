"""The synthetic SFT set: verified, cleaned, split by id, and trainable."""

from __future__ import annotations

import json

import pytest

from ml.config import ConfigError
from ml.posttrain.records import check_sft_record, read_jsonl, split_of
from ml.posttrain.sandbox import backend
from ml.posttrain.synthetic import SyntheticDataConfig, build_synthetic_data

pytestmark = pytest.mark.skipif(backend() != "bwrap", reason="bubblewrap not installed")


def test_build_writes_verified_splits(tmp_path):
    cfg = SyntheticDataConfig(n_math=30, n_code=8, heldout_fraction=0.2, val_fraction=0.1)
    report = build_synthetic_data(cfg, tmp_path)
    assert report == {
        "generated": 38,
        "duplicates": 0,
        "kept_by_family": {
            "linear": 10,
            "shop": 10,
            "fractions": 10,
            "clamp_scale": 2,
            "every_kth": 2,
            "running_sum": 2,
            "count_multiples": 2,
        },
        "dropped_by_reason": {},
        "splits": {"train": 28, "val": 2, "heldout": 8},
    }
    assert json.loads((tmp_path / "report.json").read_text()) == report
    splits = {s: read_jsonl(tmp_path / f"{s}.jsonl", check_sft_record) for s in ("train", "val", "heldout")}
    assert {len(v) for v in splits.values()} and all(
        split_of(r["id"], 0.2) == "heldout" for r in splits["heldout"]
    )
    assert all(split_of(r["id"], 0.2) == "train" for r in splits["train"] + splits["val"])


def test_unverifiable_tasks_are_dropped_with_the_reason(tmp_path):
    report = build_synthetic_data(
        SyntheticDataConfig(n_math=3, n_code=2, sandbox_wall_seconds=0.001), tmp_path
    )
    assert report["dropped_by_reason"] == {"code_unverified": 2}
    dropped = [json.loads(line) for line in (tmp_path / "dropped.jsonl").read_text().splitlines()]
    assert [d["drop_detail"].split(":")[0] for d in dropped] == ["timeout", "timeout"]
    with pytest.raises(ConfigError, match="n_math=0 and n_code=0"):
        SyntheticDataConfig(n_math=0, n_code=0)
