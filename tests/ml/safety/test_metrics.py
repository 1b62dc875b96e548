"""VR/FRR arithmetic on a fixed table whose rates are computed by hand below."""

import math

import pandas as pd
import pytest

from ml.safety.metrics import compare_rates, rate_table, rate_tables, regressions

# category, lang, variant, kind, violated, refused
ROWS = [
    ("S1", "en", "single", "adversarial", True, False),
    ("S1", "en", "single", "adversarial", False, True),
    ("S1", "de", "multi_turn", "adversarial", False, True),
    ("S1", "de", "single", "adversarial", True, False),
    ("S1", "en", "single", "borderline", False, True),
    ("S1", "en", "tool_use", "borderline", False, False),
    ("S10", "en", "tool_use", "adversarial", True, False),
    ("S10", "fr", "single", "adversarial", False, True),
    ("S10", "fr", "single", "borderline", False, False),
    ("S10", "fr", "multi_turn", "borderline", False, False),
    ("S10", "de", "single", "borderline", False, True),
    ("S10", "de", "single", "borderline", False, True),
]
RESULTS = pd.DataFrame(ROWS, columns=["category", "lang", "variant", "kind", "violated", "refused"])


def test_rates_per_category_by_hand():
    t = rate_table(RESULTS, "category")
    assert list(t.index) == ["S1", "S10", "all"]
    # S1: 2 of 4 adversarial violated; 1 of 2 borderline refused
    assert t.loc["S1"].tolist() == [4, 2, 0.5, 2, 1, 0.5]
    # S10: 1 of 2 adversarial violated; 2 of 4 borderline refused
    assert t.loc["S10"].tolist() == [2, 1, 0.5, 4, 2, 0.5]
    # all: 3 of 6 violated, 3 of 6 refused
    assert t.loc["all"].tolist() == [6, 3, 0.5, 6, 3, 0.5]


def test_rates_per_language_and_variant_by_hand():
    tables = rate_tables(RESULTS)
    lang = tables["lang"]
    assert list(lang.index) == ["de", "en", "fr", "all"]
    assert lang.loc["de", ["vr", "frr"]].tolist() == [0.5, 1.0]  # 1/2 violated; 2/2 refused
    assert lang.loc["en", ["vr", "frr"]].tolist() == [pytest.approx(2 / 3), 0.5]  # 2/3; 1/2
    assert lang.loc["fr", "vr"] == 0.0 and lang.loc["fr", "frr"] == 0.0  # 0/1; 0/2
    variant = tables["variant"]
    assert variant.loc["single", ["n_adversarial", "violations", "n_borderline", "refusals"]].tolist() == [
        4,
        2,
        4,
        3,
    ]
    assert variant.loc["multi_turn", "vr"] == 0.0 and variant.loc["multi_turn", "frr"] == 0.0
    assert variant.loc["tool_use", "vr"] == 1.0 and variant.loc["tool_use", "frr"] == 0.0


def test_a_group_without_items_of_a_kind_has_nan_rate():
    only_adv = RESULTS[RESULTS["kind"] == "adversarial"]
    t = rate_table(only_adv, "category")
    assert math.isnan(t.loc["S1", "frr"]) and t.loc["S1", "n_borderline"] == 0


def test_comparison_flags_a_regression_beyond_the_margin():
    current = rate_table(RESULTS, "category")
    better = RESULTS.assign(violated=False, refused=False)
    previous = rate_table(better, "category")  # vr 0 and frr 0 everywhere
    cmp = compare_rates(current, previous, vr_margin=0.05, frr_margin=0.6)
    assert cmp.loc["S1", "vr_delta"] == 0.5 and bool(cmp.loc["S1", "vr_regressed"])
    assert cmp.loc["S1", "frr_delta"] == 0.5 and not bool(cmp.loc["S1", "frr_regressed"])  # 0.5 <= 0.6
    assert regressions(cmp) == [
        "vr S1: 0.000 -> 0.500 (+0.500)",
        "vr S10: 0.000 -> 0.500 (+0.500)",
        "vr all: 0.000 -> 0.500 (+0.500)",
    ]
    same = compare_rates(current, current, vr_margin=0.0, frr_margin=0.0)
    assert regressions(same) == [] and (same["vr_delta"] == 0).all()


def test_comparison_with_a_new_group_never_regresses():
    current = rate_table(RESULTS, "category")
    previous = rate_table(RESULTS[RESULTS["category"] == "S1"], "category")
    cmp = compare_rates(current, previous, vr_margin=0.0, frr_margin=0.0)
    assert math.isnan(cmp.loc["S10", "vr_previous"]) and not bool(cmp.loc["S10", "vr_regressed"])


def test_bad_results_name_the_problem():
    with pytest.raises(ValueError, match="refused"):
        rate_table(RESULTS.drop(columns="refused"), "lang")
    with pytest.raises(ValueError, match="benign"):
        rate_table(RESULTS.assign(kind="benign"), "lang")
