"""ml/tokens/resample.py: copies per weight, the candidate share, and the same validation documents."""

import numpy as np
import pandas as pd
import pytest

from ml.tokens.resample import (
    class_token_sample,
    class_weights,
    long_doc_weights,
    quality_weights,
    realized_shares,
    resample,
    share_weights,
)


def corpus() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [f"d{i}" for i in range(8)],
            "text": ["x" * n for n in (400, 4000, 400, 800, 400, 400, 1200, 400)],
            "domain": ["general", "general", "code", "code", "general", "multilingual", "general", "code"],
            "quality_score": [0.1, 0.9, 0.5, 0.8, 0.2, 0.3, 0.95, 0.4],
            "repeat": [0, 0, 0, 1, 0, 0, 0, 0],
        }
    )


def test_whole_weights_copy_rows_with_distinct_repeat_indices():
    df = corpus()
    out = resample(df, np.array([1, 3, 0, 2, 1, 1, 1, 1], dtype=float))
    assert out["id"].value_counts().to_dict() == {
        "d1": 3,
        "d3": 2,
        "d0": 1,
        "d4": 1,
        "d5": 1,
        "d6": 1,
        "d7": 1,
    }
    assert sorted(out[out["id"] == "d1"]["repeat"]) == [0, 2, 4]  # period = max repeat + 1 = 2
    assert sorted(out[out["id"] == "d3"]["repeat"]) == [1, 3]
    frac = resample(df, np.full(8, 0.5), seed=3)
    assert frac["id"].is_unique and 0 < len(frac) < 8


def test_weights_for_long_documents_quality_and_classes():
    df = corpus()
    assert long_doc_weights(df, 300, 3.0).tolist() == [1, 3, 1, 1, 1, 1, 3, 1]  # 1,200 chars = 300 tokens
    assert quality_weights(df, 0.25, 2.0).tolist() == [1, 2, 1, 1, 1, 1, 2, 1]
    assert class_weights(df, {"code": 2.0}).tolist() == [1, 1, 2, 2, 1, 1, 1, 2]


def test_the_candidate_class_gets_its_share_of_the_tokens():
    df = corpus()
    w = share_weights(df, "code", 0.3)
    tokens = df["text"].str.len() / 4
    assert (tokens * w)[df["domain"] == "code"].sum() / (tokens * w).sum() == pytest.approx(0.3)
    assert realized_shares(df) == pytest.approx(
        {"code": 400 / 2000, "general": 1500 / 2000, "multilingual": 100 / 2000}
    )
    with pytest.raises(ValueError, match="no document of domain='math_reasoning'"):
        share_weights(df, "math_reasoning", 0.3)


def test_the_share_can_be_counted_in_real_tokens():
    df = corpus()
    w = share_weights(df, "code", 0.3, class_tokens={"code": 100, "general": 600, "multilingual": 100})
    # 0.3 / 0.7 * 700 / 100 = 3 copies of each code document, the others once
    assert w.tolist() == pytest.approx([1, 1, 3, 3, 1, 1, 1, 3])
    with pytest.raises(ValueError, match="no document of domain='code'"):
        share_weights(df, "code", 0.3, class_tokens={"general": 600})


def test_a_class_token_sample_meets_each_class_target_within_a_document():
    df = corpus()
    keep = (df["id"] == "d6").to_numpy()  # held out: weight 1, not counted
    class_tokens = {"general": 1200, "code": 400, "multilingual": 100}  # outside keep, chars / 4
    targets = {"code": 600, "general": 1300, "multilingual": 100}
    w = class_token_sample(df, targets, class_tokens, keep=keep)
    assert w[keep].tolist() == [1.0] and set(w) <= {1.0, 2.0}
    tokens = (w * df["text"].str.len() / 4)[~keep]
    # whole copies, then documents while they bring the class closer: code 400 + 200, general 1200 + 100
    assert tokens.groupby(df["domain"][~keep]).sum().to_dict() == {
        "code": 600.0,
        "general": 1300.0,
        "multilingual": 100.0,
    }
    assert w[df["id"] == "d1"].tolist() == [1.0]  # 1,000 tokens would overshoot general's last 100
    with pytest.raises(ValueError, match="no training document or token of domain='math_reasoning'"):
        class_token_sample(df, {"math_reasoning": 10}, class_tokens)
