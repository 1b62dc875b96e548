"""Domain teacher rules (code / math / multilingual / general) and the student classifier step."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.config import ConfigError
from ml.curate.classify import ModelFileError
from ml.curate.domain import (
    DomainConfig,
    DomainModel,
    classify_domain,
    domain_scores,
    line_kind,
    teacher_domains,
    train_domain_classifier,
)
from ml.curate.quality import QualityModel

C_SNIPPET = """#include <stdio.h>
int main(void) {
    int total = 0;
    for (int i = 0; i < 10; i++) {
        total += i;
    }
    printf("%d\\n", total);
    return 0;
}"""
MATH = """The quadratic equation a x^2 + b x + c = 0 has two roots.
They are given by x = (-b ± √(b^2 - 4ac)) / (2a).
Theorem. If the discriminant b^2 - 4ac is negative, both roots are complex.
Proof. The square root of a negative number is imaginary, so neither root is real.
This result is taught in most schools."""
FRENCH = """Le village se trouve au bord d'une rivière calme, entouré de champs et de forêts.
Chaque samedi, les habitants se retrouvent sur la place du marché pour acheter du pain."""
PROSE = """The river runs slowly through the old town, past the market and the church.
In spring the banks are covered with flowers, and children play near the water."""
FAST = {"log2_buckets": 14, "char_ngrams": (3, 4), "max_chars": 2000}


def frame(texts: list[str], langs: list[str], **extra) -> pd.DataFrame:
    n = len(texts)
    return pd.DataFrame(
        {
            "id": [f"d{i}" for i in range(n)],
            "url": [f"http://x/{i}" for i in range(n)],
            "text": texts,
            "lang": langs,
            "fetch_time": ["2024-01-01"] * n,
            "source": ["test"] * n,
            **extra,
        }
    )


@pytest.mark.parametrize(
    "line, kind",
    [
        ("$ ls -la /tmp", "code"),
        ("-v, --verbose   explain what is being done", "code"),
        ("--color[=WHEN]", "code"),
        ("import numpy as np", "code"),
        ("def area(radius):", "code"),
        ("    total += i;", "code"),
        ("ls [OPTION]... [FILE]...", "code"),  # SYNOPSIS line: 8 of 24 characters are code punctuation
        ("E = m c^2 for a body at rest", "math"),
        ("Let α be the angle between the two vectors.", "math"),
        ("Lemma 2 follows from the definition.", "math"),
        ("(%i1) integrate(x^2, x);", "math"),  # a Maxima REPL line: mathematics written as code
        (">>> sqrt(8)", "math"),
        ("these expressions, $F_r$ and $F_r^*$, sum to zero", "math"),
        ("See the manual for more details.", "prose"),
        ("### Installation", "prose"),
        ("a well-known, user-friendly tool (and/or library)", "prose"),
        ("You may prepare derivative works of the software.", "prose"),
    ],
)
def test_line_kind(line, kind):
    assert line_kind(line) == kind


def test_domain_scores_hand_counted():
    cfg = DomainConfig()
    assert domain_scores(C_SNIPPET, cfg) == (1.0, 0.0, 0.0)  # all 9 lines are code, no math term
    # 4 of 5 lines carry math markers; 4 of its 54 words are math terms (quadratic, equation, Theorem, Proof)
    assert domain_scores(MATH, cfg) == (0.0, 0.8, 4 / 54)
    # the ===== ruler and the blank line are skipped: 1 code line ($ prompt) of 3
    assert domain_scores("Title\n=====\nSome prose here.\n\n$ make install", cfg) == (1 / 3, 0.0, 0.0)
    assert domain_scores("", cfg) == (0.0, 0.0, 0.0)


def test_prose_about_mathematics_is_math_by_its_vocabulary():
    text = (
        "The determinant of a square matrix is zero exactly when its columns are dependent.\n"
        "The integral of a derivative recovers the function up to a constant.\n"
        "This chapter explains how to read the reference pages.\n"
    )
    code, lines, vocab = domain_scores(text, DomainConfig())
    # determinant, matrix, integral, derivative: 4 of 35 words; no line has math notation or a math word
    assert (code, lines, vocab) == (0.0, 0.0, 4 / 35)
    assert teacher_domains(frame([text], ["en"]), DomainConfig())["domain"].tolist() == ["math_reasoning"]


def test_teacher_labels_code_math_multilingual_general():
    df = frame([C_SNIPPET, MATH, FRENCH, PROSE], ["en", "en", "fr", "en"])
    labels = teacher_domains(df, DomainConfig())
    assert labels["domain"].tolist() == ["code", "math_reasoning", "multilingual", "general"]
    assert labels["code_score"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert labels["math_score"].tolist() == [0.0, 0.8, 0.0, 0.0]
    assert labels["math_vocab"].tolist() == [0.0, 4 / 54, 0.0, 0.0]


def test_domain_config_presets_and_errors():
    assert DomainConfig.from_preset("tiny").max_chars == 4000
    assert DomainConfig.from_preset("small").log2_buckets == 19
    with pytest.raises(ConfigError, match="DomainConfig.code_threshold"):
        DomainConfig.from_dict({"code_threshold": 0.0})


def test_teacher_lang_score_threshold():
    df = frame([FRENCH, FRENCH], ["fr", "fr"], lang_score=[0.95, 0.3])
    labels = teacher_domains(df, DomainConfig())  # default min_lang_score 0.5
    assert labels["domain"].tolist() == ["multilingual", "general"]  # unsure language id: judged by text
    assert teacher_domains(df, DomainConfig(min_lang_score=0.0))["domain"].tolist() == ["multilingual"] * 2
    assert (
        teacher_domains(df.drop(columns="lang_score"), DomainConfig())["domain"].tolist()
        == ["multilingual"] * 2
    )
    with pytest.raises(ValueError, match="lang_score"):
        teacher_domains(df.assign(lang_score=[-170.0, -20.0]), DomainConfig(min_lang_score=0.5))
    with pytest.raises(ValueError, match="lacks column"):
        teacher_domains(df.drop(columns="lang"), DomainConfig())


NAMES = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta"]
TOWNS = ["Oxford", "Lyon", "Bergen", "Porto", "Graz", "Turku", "Cork", "Delft"]


def toy_domain_corpus(with_math: bool = True) -> pd.DataFrame:
    texts, langs = [], []
    for i, (name, town) in enumerate(zip(NAMES, TOWNS, strict=True)):
        texts.append(
            f"#include <stdlib.h>\nint {name}_step(int x) {{\n    int y = x * {i + 2};\n"
            f"    return y + {i};\n}}\nstatic int {name}_count = {i};"
        )
        langs.append("en")
        if with_math:
            texts.append(
                f"Theorem {i}. For every integer n > {i}, the sum 1 + 2 + ... + n = n (n + 1) / 2.\n"
                f"Proof. By induction on n; the equation holds for n = {i + 1} and the step adds n + 1."
            )
            langs.append("en")
        texts.append(
            f"La ville de {town} est connue pour son vieux pont et ses marchés du dimanche.\n"
            f"Les visiteurs aiment se promener le long du fleuve et goûter la cuisine locale."
        )
        langs.append("fr")
        texts.append(
            f"The town of {town} is known for its old bridge and its busy Sunday markets.\n"
            f"Visitors like to walk along the river and taste the local food in small cafés."
        )
        langs.append("en")
    return frame(texts, langs)


def test_train_domain_classifier_held_out_and_classify():
    df = toy_domain_corpus()
    cfg = DomainConfig.from_dict({**FAST, "held_out_fraction": 0.25})
    model, report = train_domain_classifier(df, cfg)
    assert report["teacher"]["class_counts"] == {
        "general": 8,
        "code": 8,
        "math_reasoning": 8,
        "multilingual": 8,
    }
    assert model.classifier.classes == ("code", "general", "math_reasoning", "multilingual")
    held = report["student"]["held_out"]
    assert (report["student"]["train_docs"], held["n"]) == (24, 8)
    assert held["accuracy"] == 1.0
    assert all(held["confusion"][c][c] == 2 for c in model.classifier.classes)
    assert held["per_class"]["math_reasoning"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}

    result = classify_domain(df, model, cfg)
    assert result.dropped.empty and len(result.kept) == len(df)
    assert result.kept["lang"].tolist() == df["lang"].tolist()
    assert result.kept["domain"].tolist() == teacher_domains(df, cfg)["domain"].tolist()
    assert ((result.kept["domain_confidence"] > 0.25) & (result.kept["domain_confidence"] <= 1)).all()
    assert {k: v for k, v in result.stats.items() if k.startswith("domain_docs/")} == {
        "domain_docs/general": 8,
        "domain_docs/code": 8,
        "domain_docs/math_reasoning": 8,
        "domain_docs/multilingual": 8,
    }


def test_missing_class_is_reported_and_model_roundtrips(tmp_path):
    df = toy_domain_corpus(with_math=False)
    cfg = DomainConfig.from_dict(FAST)
    model, report = train_domain_classifier(df, cfg)
    assert report["teacher"]["classes_untrainable"] == ["math_reasoning"]
    assert model.classifier.classes == ("code", "general", "multilingual")
    model.save(tmp_path / "dom")
    loaded = DomainModel.load(tmp_path / "dom")
    d1, c1 = model.predict(df["text"])
    d2, c2 = loaded.predict(df["text"])
    assert d1.tolist() == d2.tolist() and np.array_equal(c1, c2)
    with pytest.raises(ModelFileError, match="not a quality model"):
        QualityModel.load(tmp_path / "dom")
