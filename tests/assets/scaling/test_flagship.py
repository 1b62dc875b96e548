"""The flagship's forecast-vs-actual comparison: relative errors of what was forecast, the rest named."""

import json

import pytest

from assets.scaling.flagship import FlagshipRun, compare, forecast_vs_actual


def test_compare_gives_relative_errors_and_skips_what_was_not_forecast():
    record = {"final_val_loss": 4.0, "mc_accuracy": 0.5}
    both = compare({"expected_loss": 4.2, "expected_accuracy": 0.4}, record)
    assert both["val_loss"] == {"forecast": 4.2, "actual": 4.0, "rel_error": pytest.approx(0.05)}
    assert both["accuracy"]["rel_error"] == pytest.approx(0.2)
    assert list(compare({"expected_loss": 4.2}, record)) == ["val_loss"]


def test_check_names_the_quantity_without_a_forecast(tmp_path):
    report = {
        "compare": compare({"expected_loss": 4.04}, {"final_val_loss": 4.0, "mc_accuracy": 0.5}),
        "not_forecast": {"accuracy": "sigmoid: accuracy does not vary over the 6 points (all 0.375)"},
        "max_rel_error": 0.5,
        "warn_rel_error": 0.02,
    }
    (tmp_path / "flagship.json").write_text(json.dumps(report))
    result = forecast_vs_actual(FlagshipRun("scaling_flagship", "p", tmp_path, "md5"))
    assert result.passed and result.metadata["worst_rel_error"].value == pytest.approx(0.01)
    assert "does not vary" in result.metadata["accuracy_not_forecast"].value
