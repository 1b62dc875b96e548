"""People's quality labels (ml/resources/quality_annotations): the file, its loader, the agreement metric,
the sampling behind it, and the teacher chosen on its dev split measured on its test split."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from ml.config import ConfigError
from ml.curate.annotated import (
    MAX_TEXT_CHARS,
    SOURCE_TYPES,
    AnnotationError,
    agreement,
    annotation_record,
    annotations_path,
    load_annotations,
    sample_for_annotation,
    source_type,
    split_rows,
    text_id,
)
from ml.curate.quality import (
    SIGNALS,
    QualityConfig,
    document_signals,
    reference_lm,
    teacher_scores,
)


def good_row(text: str = "A sentence that explains something.", **over) -> dict:
    row = {
        "id": text_id(text),
        "url": "http://127.0.0.1/man/en/man1/ls.1.html",
        "lang": "en",
        "source_type": "man",
        "n_chars": len(text),
        "split": "dev",
        "label": 1,
        "reason": "explains",
        "text": text,
    }
    return row | over


def write_rows(path, rows) -> None:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ("{not json", "Expecting property name"),
        (good_row(text="other") | {"extra": 1}, r"missing field\(s\) \[\], unknown field\(s\) \['extra'\]"),
        (good_row(text="other", label=2), "label must be 0 \\(bad\\) or 1 \\(good\\), got 2"),
        (good_row(text="other", label=True), "label must be 0"),
        (good_row(text="other", split="train"), "split must be one of"),
        (good_row(text="other", source_type="blog"), "source_type must be one of"),
        (good_row(text="other") | {"id": "0" * 40}, "id 0{40} is not the SHA-1 of the text"),
        (good_row(), "duplicate id"),
        (good_row(text="x" * (MAX_TEXT_CHARS + 1)), "text has 6001 characters, more than 6000"),
        (good_row(text="other", n_chars=2), "n_chars must be an integer >= len\\(text\\) = 5"),
        (good_row(text="other", reason=" "), "reason must be a non-empty string"),
    ],
)
def test_loader_names_file_and_line_of_a_bad_row(tmp_path, bad, problem):
    path = tmp_path / "v9.jsonl"
    write_rows(path, [good_row(), "", bad])  # blank line 2 is skipped, the bad row is line 3
    with pytest.raises(AnnotationError, match=f"^{re.escape(str(path))}:3: {problem}") as err:
        load_annotations(path)
    assert err.value.path == path and err.value.line == 3


def test_loader_reads_a_valid_file_and_rejects_an_empty_or_missing_one(tmp_path):
    path = tmp_path / "ok.jsonl"
    write_rows(path, [good_row(), good_row(text="Licence text.", label=0, split="test")])
    df = load_annotations(path)
    assert df["label"].tolist() == [1, 0] and df["split"].tolist() == ["dev", "test"]
    write_rows(path, [""])
    with pytest.raises(AnnotationError, match=f"^{re.escape(str(path))}:0: no annotated documents"):
        load_annotations(path)
    with pytest.raises(AnnotationError, match="cannot read"):
        load_annotations(tmp_path / "missing.jsonl")


def test_agreement_hand_computed():
    # good scores {0.8, 0.5}, bad {0.5, 0.2}: pairs (0.8>0.5) (0.8>0.2) (0.5=0.5 → 1/2) (0.5>0.2) → 3.5/4
    m = agreement([1, 1, 0, 0], [0.8, 0.5, 0.5, 0.2], threshold=0.5)
    assert (m["n"], m["n_good"], m["n_bad"]) == (4, 2, 2)
    assert m["roc_auc"] == 0.875
    # kept (score >= 0.5): both good and one bad → precision 2/3, recall 1, F1 0.8, accuracy 3/4
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == 1.0
    assert m["f1"] == pytest.approx(0.8) and m["accuracy"] == 0.75
    assert m["confusion"] == {"tp": 2, "fp": 1, "fn": 0, "tn": 1} and m["threshold"] == 0.5
    # perplexity-like scores: lower is better; same ranking, same AUC, no threshold metrics
    p = agreement([1, 1, 0, 0], [10.0, 20.0, 20.0, 40.0], higher_is_better=False)
    assert p == {"n": 4, "n_good": 2, "n_bad": 2, "roc_auc": 0.875}
    assert math.isnan(agreement([1, 1], [0.1, 0.2])["roc_auc"])
    with pytest.raises(ValueError, match="2 labels but 3 scores"):
        agreement([1, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="higher-is-better"):
        agreement([1, 0], [1.0, 2.0], threshold=1.5, higher_is_better=False)


def test_shipped_annotation_file():
    df = load_annotations()  # validates every row: fields, label, split, SHA-1 id, unique ids, ≤ 6000 chars
    assert annotations_path().name == "v1.jsonl" and len(df) >= 300 and df["id"].is_unique
    counts = df.groupby(["split", "label"]).size().to_dict()
    assert counts == {("dev", 0): 60, ("dev", 1): 109, ("test", 0): 54, ("test", 1): 115}
    assert (df["lang"] == "en").sum() == 322
    assert set(df["source_type"]) == set(SOURCE_TYPES) - {"other"}
    assert (df.loc[df["source_type"] == "copyright", "label"] == 0).all()  # the rubric: licences are bad
    assert df["reason"].str.len().min() > 10
    assert len(split_rows(df, "test", ("en",))) == 161


def test_source_types_from_urls():
    base = "http://127.0.0.1:8000/"
    assert [
        source_type(base + p)
        for p in (
            "copyright/tar.txt",
            "pypi/regex/",
            "man/en/man1/du.1.html",
            "man/en/man1/gcloud_sql_instances_list.1.html",
            "docs/tex/doc/tutorial.tex.txt",
            "docs/usr-share-doc/python-sympy-doc/html/modules/abc.html",
            "docs/usr-share-doc/maxima-doc/html/maxima_1.html",
            "docs/usr-share-doc/valgrind/html/faq.html",
            "robots.txt",
        )
    ] == [
        "copyright",
        "readme",
        "man",
        "man_gcloud",
        "tex_source",
        "math_docs",
        "texinfo",
        "html_docs",
        "other",
    ]


def test_sampling_is_seeded_stratified_and_pairs_splits():
    n = 40
    df = pd.DataFrame(
        {
            "id": [f"d{i:02d}" for i in range(n)],
            "url": [
                f"http://h/copyright/p{i}.txt" if i < 20 else f"http://h/man/de/man1/c{i}.1.html"
                for i in range(n)
            ],
            "lang": ["en"] * 20 + ["de"] * 20,
            "text": [f"text {i}" for i in range(n)],
        }
    )
    ppl = np.arange(n, dtype=float)[::-1]  # d39 has the lowest perplexity
    a = sample_for_annotation(df, ppl, {"copyright": 4, "readme": 3}, n_other_lang=5, seed=3)
    b = sample_for_annotation(df, ppl, {"copyright": 4, "readme": 3}, n_other_lang=5, seed=3)
    assert a.equals(b) and len(a) == 9  # no English readme in the frame: that quota draws nothing
    cop, other = a[a["source_type"] == "copyright"], a[a["lang"] == "de"]
    assert len(cop) == 4 and len(other) == 5
    # one pick from each of 4 equal perplexity bins of the 20 copyright files (perplexity 39..20)
    assert [int(p // 5) for p in sorted(cop["perplexity"])] == [4, 5, 6, 7]
    for group in (cop, other):
        splits = group["split"].tolist()
        assert all(sorted(splits[i : i + 2]) == ["dev", "test"] for i in range(0, len(splits) - 1, 2))
    row = a.iloc[0].copy()
    row["text"] = "é" * 7000
    rec = annotation_record(row, 0, "licence")
    assert len(rec["text"]) == MAX_TEXT_CHARS and rec["n_chars"] == 7000 and rec["id"] == text_id("é" * 6000)


def test_document_signals_hand_computed():
    lm, _ = reference_lm(("pydoc_topics",))
    text = (
        "Copyright 2020 Example. All rights reserved.\n"
        "\n"
        "This sentence has exactly nine words and ends here.\n"
        "short line"
    )
    x = document_signals([text, ""], lm, max_chars=1000, max_tokens=100)
    assert x.shape == (2, len(SIGNALS))
    # words (letters only): copyright example all rights reserved this sentence has exactly nine words
    # and ends here short line = 16; legal: copyright, rights, reserved = 3
    assert x[0, 1] == pytest.approx(3 / 16)
    assert x[0, 2] == pytest.approx(math.log1p(17))  # whitespace tokens, "2020" included
    # sentence-like lines: only the 9-word one (51 chars) of 44 + 51 + 10 non-empty characters
    assert x[0, 3] == pytest.approx(51 / 105)
    assert x[1].tolist() == [-math.log(len(lm.vocab)), 0.0, 0.0, 0.0]  # empty text: uniform fluency
    assert document_signals([text], lm, max_chars=10, max_tokens=100)[0, 2] == pytest.approx(math.log1p(1))


def test_teacher_config_errors():
    assert QualityConfig().teacher == "signals" and QualityConfig().annotations_version == 1
    with pytest.raises(ConfigError, match="QualityConfig.teacher must be one of"):
        QualityConfig(teacher="llm")
    with pytest.raises(ConfigError, match="set annotations_version"):
        QualityConfig(annotations_version=0)
    assert QualityConfig(teacher="perplexity", annotations_version=0).annotations_version == 0


@pytest.mark.slow
def test_signals_teacher_beats_the_perplexity_teacher_on_the_test_split():
    """Measured on the held-back test split (English); the signals teacher saw only the dev split."""
    test = split_rows(load_annotations(), "test", ("en",))
    texts, y = test["text"].tolist(), test["label"].to_numpy()
    cfg = QualityConfig.from_preset("tiny")
    new, ppl, info = teacher_scores(texts, cfg)
    old, ppl_old, _ = teacher_scores(texts, cfg.replace(teacher="perplexity"))
    assert np.array_equal(ppl, ppl_old) and np.array_equal(old, -ppl)
    assert info["signals"]["fit_docs"] == len(split_rows(load_annotations(), "dev", ("en",))) == 161
    auc_new, auc_old = agreement(y, new)["roc_auc"], agreement(y, old)["roc_auc"]
    assert auc_new > auc_old
