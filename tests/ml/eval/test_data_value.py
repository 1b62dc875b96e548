"""ml/eval/data_value.py: a candidate anneal's scores against the control's, on a fixed case."""

import pandas as pd
import pytest

from ml.eval.data_value import deltas_png, model_scores, noise_floor, value_table, with_noise


def _evals(loss: float, code: float, general: float, acc: float, nll: float) -> dict:
    groups = pd.DataFrame(
        {
            "column": ["all", "domain", "domain"],
            "group": ["all", "code", "general"],
            "loss": [loss, code, general],
            "tokens": [300, 100, 200],
            "docs": [3, 1, 2],
        }
    )
    return {"heldout_loss": loss, "groups": groups, "mc": {"accuracy": acc, "normalized_nll": nll}}


def test_deltas_are_candidate_minus_control_per_metric_and_class():
    candidate = model_scores(_evals(5.25, 4.5, 5.625, 0.375, 2.0))
    control = model_scores(_evals(5.5, 5.0, 5.75, 0.25, 2.25))
    assert candidate == {
        "heldout_loss": 5.25,
        "mc_accuracy": 0.375,
        "mc_normalized_nll": 2.0,
        "class_loss": {"code": 4.5, "general": 5.625},
    }
    control["class_loss"]["multilingual"] = 6.0  # a class only the control was scored on
    table = value_table(candidate, control)
    assert table["metric"].tolist() == [
        "heldout_loss",
        "mc_accuracy",
        "mc_normalized_nll",
        "heldout_loss[code]",
        "heldout_loss[general]",
        "heldout_loss[multilingual]",
    ]
    assert table["delta"].tolist()[:5] == [-0.25, 0.125, -0.25, -0.5, -0.125]
    assert pd.isna(table["delta"].iloc[5]) and table["control"].iloc[5] == 6.0
    assert deltas_png(table, "code")[:8] == b"\x89PNG\r\n\x1a\n"


def test_scores_need_per_class_loss_and_mc():
    with pytest.raises(ValueError, match="needs held-out loss per group and MC scores"):
        model_scores({"heldout_loss": 5.0, "mc": {"accuracy": 0.3, "normalized_nll": 2.0}})


def test_the_noise_floor_is_the_largest_repeat_delta_and_marks_deltas_beyond_it():
    control = model_scores(_evals(5.5, 5.0, 5.75, 0.25, 2.25))
    repeats = [
        model_scores(_evals(5.25, 5.125, 5.75, 0.25, 2.5)),
        model_scores(_evals(5.625, 5.0, 5.5, 0.5, 2.25)),
    ]
    noise = noise_floor(repeats, control)
    assert noise == {
        "heldout_loss": 0.25,
        "mc_accuracy": 0.25,
        "mc_normalized_nll": 0.25,
        "heldout_loss[code]": 0.125,
        "heldout_loss[general]": 0.25,
    }
    assert noise_floor([], control) == {}
    table = with_noise(value_table(model_scores(_evals(5.0, 5.0, 5.75, 0.375, 2.25)), control), noise)
    assert table["beyond_noise"].tolist() == [True, False, False, False, False]  # 0.5 > 0.25, 0.125 <= 0.25
    assert table["noise"].tolist() == [0.25, 0.25, 0.25, 0.125, 0.25]
