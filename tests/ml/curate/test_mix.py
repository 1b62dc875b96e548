import pandas as pd
import pytest

from ml.config import ConfigError
from ml.curate.mix import PAPER_MIX, MixConfig, mix_gate, plot_mix, realize_mix

COUNTS = {"general": 100, "math_reasoning": 50, "code": 40, "multilingual": 10}


def _table(counts=COUNTS, chars=400) -> pd.DataFrame:
    labels = [c for c, n in counts.items() for _ in range(n)]
    return pd.DataFrame({"id": [f"d{i}" for i in range(len(labels))], "cls": labels, "n_chars": chars,
                         "text": "x"})  # fmt: skip


def test_hits_paper_mix_exactly_by_docs():
    mixed, report = realize_mix(_table(), "cls", MixConfig(unit="docs"))
    # T = 200 docs: general 100 (as is), math 50 (as is), code 34 of 40, multilingual 16 = 10 + 6 repeats
    assert mixed["cls"].value_counts().to_dict() == {
        "general": 100,
        "math_reasoning": 50,
        "code": 34,
        "multilingual": 16,
    }
    assert {c: v["realized"] for c, v in report["classes"].items()} == PAPER_MIX
    assert (
        report["classes"]["multilingual"]["weight"] == 1.6
        and report["classes"]["multilingual"]["repeats"] == 2
    )
    assert report["classes"]["code"]["weight"] == 0.85
    ml = mixed[mixed["cls"] == "multilingual"]
    assert ml["repeat"].value_counts().to_dict() == {0: 10, 1: 6}
    assert ml.loc[ml["repeat"] == 1, "id"].isin(ml.loc[ml["repeat"] == 0, "id"]).all()
    assert report["total_units"] == 200 and not report["capped"]


def test_tokens_unit_and_determinism():
    df = _table()
    df["n_chars"] = [400 + 40 * (i % 5) for i in range(len(df))]  # 100..140 tokens per doc
    a, rep = realize_mix(df, "cls", MixConfig(unit="tokens", seed=3))
    b, _ = realize_mix(df, "cls", MixConfig(unit="tokens", seed=3))
    assert a.equals(b)
    largest_share = (540 / 4) / rep["total_units"]  # within one document of every target
    for c, v in rep["classes"].items():
        assert abs(v["realized"] - PAPER_MIX[c]) <= largest_share


def test_empty_class_renormalises_and_cap_limits_upsampling():
    counts = {"general": 100, "math_reasoning": 50, "code": 40}
    mixed, report = realize_mix(_table(counts), "cls", MixConfig(unit="docs"))
    assert report["empty_classes"] == ["multilingual"]
    assert report["classes"]["multilingual"]["selected"] == 0
    assert len(mixed) == 190
    assert mixed["cls"].value_counts().to_dict() == {
        "general": 103,
        "math_reasoning": 52,
        "code": 35,
    }  # /0.92
    capped, report = realize_mix(
        _table({**COUNTS, "multilingual": 8}), "cls", MixConfig(unit="docs", max_upsample=1.0)
    )
    # multilingual 8 docs at 8% caps the corpus at 100 docs: 50 / 25 / 17 / 8, nothing repeated
    assert report["capped"] and report["total_units"] == 100
    assert capped["cls"].value_counts().to_dict() == {
        "general": 50,
        "math_reasoning": 25,
        "code": 17,
        "multilingual": 8,
    }
    assert capped["repeat"].max() == 0


def test_untargeted_classes_are_reported_and_left_out():
    df = pd.concat([_table(), _table({"spam": 5}).assign(id=lambda d: "s" + d["id"])], ignore_index=True)
    mixed, report = realize_mix(df, "cls", MixConfig(unit="docs"))
    assert report["untargeted_classes"] == ["spam"] and "spam" not in set(mixed["cls"])


def test_plot_and_errors():
    _, report = realize_mix(_table(), "cls", MixConfig(unit="docs"))
    assert plot_mix(report).startswith(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(KeyError, match="'klass'"):
        realize_mix(_table(), "klass", MixConfig())
    with pytest.raises(ValueError, match="no documents in any target class"):
        realize_mix(_table({"other": 3}), "cls", MixConfig())
    with pytest.raises(ConfigError, match="unit"):
        MixConfig(unit="bytes")
    assert MixConfig.from_dict({"targets": {"a": 1, "b": 3}}).targets == {"a": 1, "b": 3}


def test_class_too_small_to_fill_its_share_is_left_out_not_shrinking_the_corpus():
    # 1 math doc cannot fill min_fill=0.5 of a 25% share of 181 docs even at 4x: it is left out and the
    # other targets (0.50/0.17/0.08 → 2/3, 0.2267, 0.1067) share the corpus, whose size stays the input's.
    counts = {"general": 100, "math_reasoning": 1, "code": 40, "multilingual": 40}
    mixed, report = realize_mix(_table(counts), "cls", MixConfig(unit="docs"))
    assert report["insufficient_classes"] == ["math_reasoning"]
    assert report["total_units"] == 181 and not report["capped"]
    assert mixed["cls"].value_counts().to_dict() == {"general": 121, "code": 41, "multilingual": 19}
    assert report["classes"]["math_reasoning"]["selected"] == 0
    with pytest.raises(ConfigError, match="min_fill"):
        MixConfig(min_fill=1.5)


def test_gate_judges_the_configured_targets_and_names_unfilled_classes():
    _, full = realize_mix(_table(), "cls", MixConfig(unit="docs"))
    gate = mix_gate(full)
    assert (gate["passed"], gate["severity"], gate["max_abs_gap"], gate["unfilled_classes"]) == (
        True,
        "ok",
        0.0,
        [],
    )

    counts = {"general": 100, "math_reasoning": 50, "code": 40}  # no multilingual documents
    _, report = realize_mix(_table(counts), "cls", MixConfig(unit="docs"))
    ml = report["classes"]["multilingual"]
    assert (ml["target"], ml["applied_target"], ml["realized"]) == (0.08, 0.0, 0.0)
    general = report["classes"]["general"]
    assert general["target"] == 0.5 and general["applied_target"] == 0.5 / 0.92
    assert report["unfilled_classes"] == ["multilingual"]
    gate = mix_gate(report)
    assert (gate["passed"], gate["severity"]) == (False, "warn")
    assert gate["gaps"]["multilingual"] == -0.08 and gate["gaps"]["general"] == 103 / 190 - 0.5
    assert gate["summary"].endswith("; unfilled: multilingual (their share went to the other classes)")
    assert gate["summary"].startswith(
        "realized docs: general 54.2% (target 50%), math_reasoning 27.4% (target 25%)"
    )
    _, strict = realize_mix(_table(counts), "cls", MixConfig(unit="docs", unfillable="fail"))
    assert mix_gate(strict)["severity"] == "error"
    assert plot_mix(report).startswith(b"\x89PNG")  # configured targets, "multilingual\n(unfilled)" tick
    # every class filled but a realized share off its target (e.g. documents too large to split): an error
    off = {**full, "classes": {**full["classes"], "code": {**full["classes"]["code"], "realized": 0.25}}}
    assert mix_gate(off)["severity"] == "error" and mix_gate(off)["max_abs_gap"] == 0.25 - 0.17
    with pytest.raises(ConfigError, match="unfillable"):
        MixConfig(unfillable="ignore")
