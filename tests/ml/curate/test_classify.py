"""Hashed featurizer, split, metrics, and the pickle-free save/load of the linear text classifier."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.utils import murmurhash3_32

from ml.curate.classify import (
    FeaturizerConfig,
    HashedFeaturizer,
    LinearTextClassifier,
    ModelFileError,
    TrainConfig,
    binary_metrics,
    bucket_of,
    fit_linear,
    flat_metrics,
    multiclass_metrics,
    split_by_document,
)

CATS = [
    "the cat purrs on the warm sofa",
    "a kitten chases the cat toy",
    "my cat naps and purrs all day",
    "cats purr when the kitten is warm",
    "the old cat sleeps on a sofa",
    "kitten and cat purr together",
    "a warm cat naps near the kitten",
    "the cat purrs softly at night",
    "every kitten becomes a cat",
    "purring cat on the sofa again",
]
ROCKETS = [
    "the rocket engine burns liquid fuel",
    "orbital launch of a heavy rocket",
    "fuel tanks feed the engine",
    "the booster lands after launch",
    "rocket thrust lifts the payload",
    "engine ignition before launch",
    "payload reaches orbit on the booster",
    "liquid oxygen fuels the rocket",
    "a second stage engine burns",
    "the launch pad holds the rocket",
]


def toy_model() -> tuple[LinearTextClassifier, list[str], np.ndarray, np.ndarray, np.ndarray]:
    texts = CATS + ROCKETS
    y = np.array(["cats"] * 10 + ["rockets"] * 10, dtype=object)
    train, held = split_by_document(y, texts, 0.2, seed=0)
    feat = FeaturizerConfig(log2_buckets=12, char_ngrams=(3, 4))
    model = fit_linear([texts[i] for i in train], y[train], feat, TrainConfig(c=10.0), seed=0)
    return model, texts, y, train, held


def test_featurizer_is_deterministic_and_uses_murmur_buckets():
    cfg = FeaturizerConfig(log2_buckets=18, char_ngrams=(0, 0))  # words only
    x1 = HashedFeaturizer(cfg).transform(["hello"])
    x2 = HashedFeaturizer(cfg).transform(["hello"])
    assert x1.shape == (1, 2**19)
    # |murmur3_32("hello", seed=0)| mod 2**18 = 260679; one feature, log1p(1) then L2 norm -> 1.0
    assert x1.indices.tolist() == [260679] == [bucket_of("hello", "word", cfg)]
    assert x1.data.tolist() == [1.0]
    assert (x1 != x2).nnz == 0
    both = FeaturizerConfig(log2_buckets=18)
    x = HashedFeaturizer(both).transform(["Hello, world! Hello again."] * 2)
    assert (x[0] != x[1]).nnz == 0
    assert bucket_of("hello", "word", both) in x[0].indices
    assert bucket_of(" he", "char", both) == 2**18 + abs(murmurhash3_32(" he", seed=0)) % 2**18
    assert bucket_of(" he", "char", both) in x[0].indices
    np.testing.assert_allclose(x.multiply(x).sum(axis=1).A.ravel(), [1.0, 1.0], rtol=1e-6)


def test_featurizer_config_rejects_bad_values():
    with pytest.raises(ValueError, match="log2_buckets"):
        FeaturizerConfig(log2_buckets=40)
    with pytest.raises(ValueError, match="both be disabled"):
        FeaturizerConfig(word_ngrams=(0, 0), char_ngrams=(0, 0))


def test_split_is_stratified_and_keeps_duplicates_together():
    labels = ["a"] * 6 + ["b"] * 4
    texts = ["x1", "x1", "x2", "x3", "x4", "x5", "y1", "y2", "y3", "y4"]  # "x1" twice
    train, held = split_by_document(labels, texts, 0.25, seed=0)
    assert sorted(train.tolist() + held.tolist()) == list(range(10))
    # class a: 5 distinct texts -> round(1.25) = 1 held out; class b: 4 distinct -> round(1.0) = 1
    assert len({texts[i] for i in held if labels[i] == "a"}) == 1
    assert len({texts[i] for i in held if labels[i] == "b"}) == 1
    assert [labels[i] for i in held].count("b") == 1
    assert (0 in held) == (1 in held)  # the duplicated "x1" rows stay on one side
    assert (split_by_document(labels, texts, 0.25, seed=0)[1] == held).all()


def test_binary_metrics_hand_computed():
    m = binary_metrics([1, 1, 0, 0], [0.9, 0.4, 0.6, 0.1], threshold=0.5)
    assert m["confusion"] == {"tp": 1, "fp": 1, "fn": 1, "tn": 1}
    assert (m["precision"], m["recall"], m["f1"], m["accuracy"]) == (0.5, 0.5, 0.5, 0.5)
    assert m["roc_auc"] == 0.75  # positive > negative in 3 of 4 pairs


def test_multiclass_metrics_hand_computed():
    m = multiclass_metrics(["a", "a", "b", "c"], ["a", "b", "b", "b"], ["a", "b", "c"])
    assert m["accuracy"] == 0.5
    assert m["confusion"] == {
        "a": {"a": 1, "b": 1, "c": 0},
        "b": {"a": 0, "b": 1, "c": 0},
        "c": {"a": 0, "b": 1, "c": 0},
    }
    assert m["per_class"]["b"] == {"precision": 1 / 3, "recall": 1.0, "f1": 0.5, "support": 1}
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert flat_metrics({"x": m})["x/per_class/a/recall"] == 0.5


def test_toy_separable_set_reaches_accuracy_one_on_held_out():
    model, texts, y, train, held = toy_model()
    assert len(held) == 4 and len(train) == 16
    assert model.classes == ("cats", "rockets")
    pred = model.predict([texts[i] for i in held])
    assert multiclass_metrics(y[held], pred, model.classes)["accuracy"] == 1.0
    assert model.meta["train_docs"] == 16


def test_save_load_gives_identical_predictions(tmp_path):
    model, texts, *_ = toy_model()
    model.save(tmp_path / "m")
    loaded = LinearTextClassifier.load(tmp_path / "m")
    assert loaded.classes == model.classes and loaded.featurizer == model.featurizer
    assert np.array_equal(loaded.predict_proba(texts), model.predict_proba(texts))
    assert json.loads((tmp_path / "m" / "model.json").read_text())["featurizer"]["char_ngrams"] == [3, 4]


def test_tampered_or_truncated_files_fail_naming_the_file(tmp_path):
    model, *_ = toy_model()
    d = model.save(tmp_path / "m")
    weights = d / "weights.safetensors"
    blob = weights.read_bytes()
    weights.write_bytes(blob[: len(blob) // 2])  # truncated
    with pytest.raises(ModelFileError, match=r"weights\.safetensors: SHA-256 .* truncated or modified"):
        LinearTextClassifier.load(d)
    flipped = bytearray(blob)
    flipped[-5] ^= 0xFF  # one weight changed
    weights.write_bytes(bytes(flipped))
    with pytest.raises(ModelFileError, match=r"weights\.safetensors"):
        LinearTextClassifier.load(d)
    weights.write_bytes(blob)
    (d / "model.json").write_text('{"format": "llama-lifecycle/linear-text-classi')  # truncated JSON
    with pytest.raises(ModelFileError, match=r"model\.json: not valid JSON"):
        LinearTextClassifier.load(d)
    with pytest.raises(ModelFileError, match=r"model\.json: model config file does not exist"):
        LinearTextClassifier.load(tmp_path / "nowhere")
