"""Quality teacher (Kneser-Ney n-gram LM on Python's reference text) and the student classifier step."""

from __future__ import annotations

import math
from pydoc_data.topics import topics

import numpy as np
import pandas as pd
import pytest

from ml.config import ConfigError
from ml.curate.classify import ModelFileError
from ml.curate.quality import (
    NGramLM,
    QualityConfig,
    QualityModel,
    lm_sentences,
    lm_tokens,
    reference_documents,
    reference_lm,
    score_quality,
    teacher_perplexity,
    train_quality_classifier,
)

FLUENT = (
    "When a function is called, the arguments are evaluated from left to right and bound to the "
    "parameter names of the function. If a parameter has a default value, the argument may be omitted, "
    "in which case the default value is used. The function then returns the value of its return "
    "statement, or None if the end of the function body is reached."
)
BOILERPLATE = (
    "Home | Products | Pricing | Blog | Careers | Contact\n"
    "Login   Sign up   Cart (0)\n"
    "Follow us: Twitter Facebook Instagram YouTube LinkedIn\n"
    "Privacy Policy | Terms of Use | Cookie Settings | Sitemap\n"
    "© 2024 Acme Widgets GmbH. All rights reserved."
)
FAST = {"reference_sources": ("pydoc_topics",), "log2_buckets": 14, "char_ngrams": (3, 4), "max_chars": 2000}


def test_lm_tokens_lowercase_digits_and_punctuation_runs():
    assert lm_tokens("Hello, World 2024!!!!") == ["hello", ",", "world", "0000", "!", "!", "!"]
    assert lm_sentences("a b c\n\n  \nd e f g", max_tokens=5) == [["a", "b", "c"], ["d", "e"]]


def test_kneser_ney_bigram_perplexity_hand_computed():
    lm = NGramLM.fit([["a", "b"], ["a", "c"]], order=2, discount=0.5, min_count=1)
    # continuation counts N1+(.w): a=1 (<s>), b=1, c=1, </s>=2 (after b, c); total 5 over 4 types
    # P1(w) = max(N1+ - 0.5, 0)/5 + 0.5*4/5 * 1/5 (uniform over a, b, c, </s>, <unk>)
    np.testing.assert_allclose(lm.unigram, [0.0, 0.38, 0.08, 0.18, 0.18, 0.18])  # <s> </s> <unk> a b c
    # P(a|<s>) = 1.5/2 + 0.25*0.18 = 0.795; P(b|a) = 0.5/2 + 0.5*0.18 = 0.34; P(</s>|b) = 0.5 + 0.5*0.38 = 0.69
    assert lm.perplexity([["a", "b"]]) == pytest.approx((0.795 * 0.34 * 0.69) ** (-1 / 3), rel=1e-12)
    # "d" is <unk>: P(<unk>|a) = 0 + 0.5*0.08 = 0.04; context <unk> unseen -> P(</s>) = P1(</s>) = 0.38
    assert lm.perplexity([["a", "d"]]) == pytest.approx((0.795 * 0.04 * 0.38) ** (-1 / 3), rel=1e-12)
    # two sentences pool their tokens
    both = (0.795 * 0.34 * 0.69 * 0.795 * 0.04 * 0.38) ** (-1 / 6)
    assert lm.doc_perplexities([[["a", "b"], ["a", "d"]], []])[0] == pytest.approx(both, rel=1e-12)
    assert math.isnan(lm.doc_perplexities([[["a", "b"]], []])[1])


def test_kneser_ney_unknown_words_share_the_unk_mass():
    lm = NGramLM.fit([["a", "b"], ["a", "c"]], order=2, discount=0.5, min_count=2)
    assert list(lm.vocab) == ["<s>", "</s>", "<unk>", "a"] and lm.unk_types == 2  # b, c are rare
    # every unigram has N1+ = 1 of 3: P1 = 0.5/3 + 0.5*3/3 * 1/3 = 1/3
    # P(a|<s>) = 0.75 + 0.25/3 = 5/6; P(b|a) = (0.75 + 0.25/3) / 2 rare types = 5/12; P(</s>|<unk>) = 5/6
    assert lm.perplexity([["a", "b"]]) == pytest.approx((5 / 6 * 5 / 12 * 5 / 6) ** (-1 / 3), rel=1e-12)


def test_reference_text_is_python_reference_topics():
    docs = reference_documents(("pydoc_topics",))
    assert len(docs) == len(topics) and docs[0] == topics[sorted(topics)[0]]
    lm, info = reference_lm(("pydoc_topics",))
    assert (
        info["reference_docs"] == len(topics) and info["lm_order"] == 3 and info["lm_vocab"] == len(lm.vocab)
    )


def test_teacher_ranks_fluent_prose_below_boilerplate():
    lm, _ = reference_lm(("pydoc_topics",))
    fluent, boiler = teacher_perplexity([FLUENT, BOILERPLATE], lm, max_tokens=1000)
    assert fluent < boiler


def nav_page(i: int) -> str:
    return (
        f"Home | Shop | Deals {i} | Account | Wishlist | Help\n"
        f"Sign in   Register   Basket ({i})\n"
        f"Category {i}: Shoes Bags Hats Socks Gloves Scarves\n"
        f"Newsletter | Imprint | Cookies | Track order #{1000 + i}\n"
        f"Copyright {2000 + i} Shopfront Ltd. All rights reserved."
    )


def toy_corpus() -> pd.DataFrame:
    keys = sorted(topics)[:10]
    texts = [topics[k][:1500] for k in keys] + [nav_page(i) for i in range(10)]
    texts += ["Le chat dort sur le canapé pendant que la pluie tombe doucement sur la ville endormie."] * 2
    n = len(texts)
    return pd.DataFrame(
        {
            "id": [f"d{i}" for i in range(n)],
            "url": [f"http://x/{i}" for i in range(n)],
            "text": texts,
            "lang": ["en"] * 20 + ["fr"] * 2,
            "fetch_time": ["2024-01-01"] * n,
            "source": ["test"] * n,
        }
    )


@pytest.mark.parametrize("teacher", ["signals", "perplexity"])
def test_train_quality_classifier_learns_teacher_labels_and_filters(teacher):
    df = toy_corpus()
    cfg = QualityConfig.from_dict(
        {
            **FAST,
            "teacher": teacher,
            "positive_fraction": 0.5,
            "negative_fraction": 0.5,
            "held_out_fraction": 0.2,
            "teacher_min_tokens": 10,
        }
    )
    model, report = train_quality_classifier(df, cfg)
    t = report["teacher"]
    assert (t["docs_eligible"], t["docs_positive"], t["docs_negative"]) == (20, 10, 10)
    assert t["teacher"] == teacher and t["score_positive_min"] > t["score_negative_max"]
    held = report["student"]["held_out"]
    assert (report["student"]["train_docs"], held["n"]) == (16, 4)
    assert held["accuracy"] == 1.0 and held["roc_auc"] == 1.0 and held["confusion"]["tp"] == 2
    # the unseen documents are the 4 held-out ones (there is no unlabelled middle at 0.5 + 0.5)
    assert report["agreement"]["unseen_docs"] == 4

    result = score_quality(df, model, cfg)
    assert set(result.dropped["id"]) == {f"d{i}" for i in range(10, 20)}  # every navigation page
    assert set(result.dropped["reason"]) == {"low_quality"}
    assert result.dropped["detail"].str.startswith("quality_score=").all()
    assert {"d20", "d21"} <= set(result.kept["id"])  # French: out of scope, kept
    assert result.stats["quality_docs_out_of_scope"] == 2 and len(result.kept) == 12
    assert (result.kept["quality_score"] >= 0).all() and "quality_score" in result.kept

    weighted = score_quality(df, model, cfg.replace(mode="weight", weight_floor=0.2))
    assert weighted.dropped.empty and len(weighted.kept) == 22
    w, s = weighted.kept["quality_weight"].to_numpy(), weighted.kept["quality_score"].to_numpy()
    np.testing.assert_allclose(w[:20], 0.2 + 0.8 * s[:20])
    assert w[20:].tolist() == [1.0, 1.0]


def test_quality_model_save_load_roundtrip(tmp_path):
    df = toy_corpus()
    cfg = QualityConfig.from_dict(
        {**FAST, "positive_fraction": 0.5, "negative_fraction": 0.5, "teacher_min_tokens": 10}
    )
    model, _ = train_quality_classifier(df, cfg)
    model.save(tmp_path / "q")
    loaded = QualityModel.load(tmp_path / "q")
    assert np.array_equal(loaded.score(df["text"]), model.score(df["text"]))
    assert loaded.classifier.meta["teacher"]["reference_sources"] == ["pydoc_topics"]
    (tmp_path / "q" / "weights.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ModelFileError, match="weights.safetensors"):
        QualityModel.load(tmp_path / "q")


def test_quality_config_presets_and_errors():
    assert QualityConfig.from_preset("tiny").max_chars == 4000
    assert QualityConfig.from_preset("small").log2_buckets == 19
    with pytest.raises(ConfigError, match="QualityConfig.mode"):
        QualityConfig(mode="drop")
    with pytest.raises(ConfigError, match="thresold"):
        QualityConfig.from_dict({"thresold": 0.3})
    with pytest.raises(ValueError, match="lacks column"):
        train_quality_classifier(pd.DataFrame({"id": [], "text": []}), QualityConfig())
    df = toy_corpus().assign(lang_score=5.0)
    with pytest.raises(ValueError, match="lang_score"):
        train_quality_classifier(df, QualityConfig.from_dict({**FAST, "min_lang_score": 0.5}))
    with pytest.raises(ValueError, match="labelled 0 positive"):
        train_quality_classifier(toy_corpus().assign(lang="de"), QualityConfig.from_dict(FAST))


@pytest.mark.slow
def test_default_teacher_with_stdlib_docstrings_ranks_fluent_prose_first():
    lm, info = reference_lm()  # pydoc topics + stdlib docstrings: parses the stdlib sources (~10 s)
    assert info["reference_sources"] == ["pydoc_topics", "stdlib_docstrings"] and info[
        "reference_docs"
    ] > len(topics)
    fluent, boiler = teacher_perplexity([FLUENT, BOILERPLATE], lm, max_tokens=1000)
    assert fluent < boiler
