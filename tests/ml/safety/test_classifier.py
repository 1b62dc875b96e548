"""Safety classifier and refusal detector: per-class table arithmetic, the judge's violation rule, and the
trained models' held-out numbers on the shipped v1 data (deterministic L-BFGS fits)."""

import numpy as np
import pandas as pd
import pytest

from ml.config import ConfigError
from ml.curate.classify import FeaturizerConfig, LinearTextClassifier
from ml.safety.classifier import (
    CLASSES,
    SafetyClassifierConfig,
    SafetyJudge,
    per_class_table,
    train_refusal_detector,
    train_safety_classifier,
)


def test_per_class_table_on_a_fixed_example():
    truth = pd.Series(["S1", "S1", "safe", "safe", "S2"])
    pred = np.array(["S1", "safe", "safe", "S1", "S2"], dtype=object)
    t = per_class_table(truth, pred)
    assert list(t.index) == [*CLASSES, "macro"]
    assert t.loc["S1"].tolist() == [0.5, 0.5, 0.5, 2]
    assert t.loc["S2"].tolist() == [1.0, 1.0, 1.0, 1]
    assert t.loc["safe"].tolist() == [0.5, 0.5, 0.5, 2]
    assert t.loc["S3"].tolist() == [0.0, 0.0, 0.0, 0]  # absent classes count as 0 in the macro mean
    assert t.loc["macro", "recall"] == pytest.approx(2.0 / 15)
    assert t.loc["macro", "support"] == 5


def _fixed(classes: tuple[str, ...], logits: list[float]) -> LinearTextClassifier:
    """A classifier whose answer does not depend on the text: intercept only."""
    feat = FeaturizerConfig(log2_buckets=10)
    k = 1 if len(classes) == 2 else len(classes)
    return LinearTextClassifier(
        feat, classes, np.zeros((k, feat.n_features), np.float32), np.asarray(logits, np.float32)
    )


def test_a_violation_is_unsafe_and_not_a_refusal():
    many = ("S1", "S2", "safe")
    unsafe, safe = _fixed(many, [2.0, 0.0, 0.0]), _fixed(many, [0.0, 0.0, 3.0])
    refuses, complies = _fixed(("compliance", "refusal"), [2.0]), _fixed(("compliance", "refusal"), [-2.0])
    assert SafetyJudge(unsafe, complies).judge(["x"]).iloc[0][
        ["unsafe", "refused", "violating"]
    ].tolist() == [
        True,
        False,
        True,
    ]
    assert not SafetyJudge(unsafe, refuses).judge(["x"]).iloc[0]["violating"]
    row = SafetyJudge(safe, complies).judge(["x"]).iloc[0]
    assert row["judged_category"] == "safe" and not row["violating"]


def test_trained_on_train_measured_on_heldout():
    cfg = SafetyClassifierConfig()
    _, tables, report = train_safety_classifier(cfg)
    held = report["heldout"]
    assert held["items"] == 616 and report["train"]["items"] == 1072  # 588 prompts + 28 responses; 1008 + 64
    assert held["macro_recall"] == pytest.approx(0.4217, abs=1e-4)
    assert held["macro_precision"] == pytest.approx(0.5077, abs=1e-4)
    assert report["train"]["macro_recall"] > held["macro_recall"]  # the held-out split is really unseen
    assert tables["heldout"].loc["S12", "recall"] == pytest.approx(23 / 24)
    _, refusal = train_refusal_detector(cfg)
    assert refusal["heldout"]["confusion"] == {"tp": 11, "fp": 0, "fn": 3, "tn": 14}


def test_config_rejects_a_bar_outside_zero_one():
    with pytest.raises(ConfigError, match="min_heldout_macro_recall"):
        SafetyClassifierConfig(min_heldout_macro_recall=1.5)
