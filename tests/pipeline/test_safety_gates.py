"""The safety and FP8 gates on made-up artifacts: a regression beyond the margin, a rate over its bound,
a broken analyser and an FP8 model past its quality bound fail; the honest cases pass."""

import json

import pandas as pd

from assets.inference.fp8 import fp8_model_layers, fp8_model_quality
from assets.safety.evals import (
    safety_evals_analysers_work,
    safety_evals_group_regressions,
    safety_evals_no_regression,
    safety_evals_within_bounds,
)
from dagster_project.artifacts import FP8Checkpoint, SafetyEvals
from ml.safety.metrics import compare_rates, rate_table


def _results(vr_hits: int, frr_hits: int) -> pd.DataFrame:
    """10 adversarial and 10 borderline S1 prompts, the first ``vr_hits`` / ``frr_hits`` violated / refused."""
    rows = [("S1", "en", "single", "adversarial", i < vr_hits, False) for i in range(10)]
    rows += [("S1", "en", "single", "borderline", False, i < frr_hits) for i in range(10)]
    return pd.DataFrame(rows, columns=["category", "lang", "variant", "kind", "violated", "refused"])


def _evals(tmp_path, current: pd.DataFrame, previous: pd.DataFrame | None, bounds=None) -> SafetyEvals:
    table = rate_table(current, "category")
    report = {
        "headline": {"vr": table.loc["all", "vr"], "frr": table.loc["all", "frr"], "injection_success": 0.0},
        "bounds": bounds or {"vr": 1.0, "frr": 1.0, "injection_success": 1.0},
        "previous": {"model_version": "v-old"} if previous is not None else None,
    }
    (tmp_path / "report.json").write_text(json.dumps(report))
    if previous is not None:
        compare_rates(table, rate_table(previous, "category"), 0.15, 0.15).to_parquet(
            tmp_path / "comparison_category.parquet"
        )
    return SafetyEvals(asset="safety_evals", partition="p", path=tmp_path, md5="x")


def test_a_made_up_regression_fails_the_gate(tmp_path):
    evals = _evals(
        tmp_path, current=_results(vr_hits=4, frr_hits=1), previous=_results(vr_hits=1, frr_hits=1)
    )
    res = safety_evals_no_regression(evals)
    assert not res.passed and res.description == "vr all: 0.100 -> 0.400 (+0.300)"
    assert not safety_evals_group_regressions(evals).passed  # S1 rose too (a warning)


def test_a_rise_within_the_margin_and_a_first_evaluation_pass(tmp_path):
    assert safety_evals_no_regression(_evals(tmp_path, _results(2, 2), _results(1, 1))).passed
    first = safety_evals_no_regression(_evals(tmp_path, _results(9, 9), None))
    assert first.passed and first.description == "no previous model version evaluated"


def test_a_rate_over_its_bound_fails(tmp_path):
    bounds = {"vr": 0.1, "frr": 0.25, "injection_success": 0.25}
    res = safety_evals_within_bounds(_evals(tmp_path, _results(3, 2), None, bounds))
    assert not res.passed and res.description == "vr 0.300 > 0.1"


def test_a_broken_analyser_fails_its_gate(tmp_path):
    pd.DataFrame({"sample": ["insecure/a.py", "safe/a.py"], "ok": [False, True]}).to_parquet(
        tmp_path / "analyser_self_check.parquet"
    )
    res = safety_evals_analysers_work(
        SafetyEvals(asset="safety_evals", partition="p", path=tmp_path, md5="x")
    )
    assert not res.passed and "insecure/a.py" in res.description


def test_fp8_gates(tmp_path):
    quality = {"ppl_increase": 0.05, "score_ks": 0.02, "max_ppl_increase": 0.02, "max_score_ks": 0.1}
    (tmp_path / "quality.json").write_text(json.dumps(quality))
    (tmp_path / "fp8").mkdir()
    record = {"scale_ub": 1200.0, "skip_first_layers": 1, "skip_last_layers": 1, "use_scaled_mm": True}
    (tmp_path / "fp8" / "fp8_config.json").write_text(
        json.dumps(record | {"fp8_layers": [1, 2], "high_precision_layers": [0, 3]})
    )
    handle = FP8Checkpoint(asset="fp8_model", partition="p", path=tmp_path, md5="x")
    res = fp8_model_quality(handle)
    assert not res.passed and res.description == "ppl_increase 0.0500 > 0.02"
    assert fp8_model_layers(handle).passed
    (tmp_path / "fp8" / "fp8_config.json").write_text(
        json.dumps(record | {"fp8_layers": [0, 1, 2], "high_precision_layers": [3]})
    )
    assert not fp8_model_layers(handle).passed  # the first layer must stay high precision
