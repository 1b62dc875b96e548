"""fastText-style linear document classifier: hashed n-gram features → logistic regression.

Shared by the quality classifier (:mod:`ml.curate.quality`) and the domain classifier (:mod:`ml.curate.domain`).

* Features: word unigrams+bigrams and character n-grams (within words, fastText's subwords), hashed into
  ``2**log2_buckets`` buckets per family (scikit-learn's ``HashingVectorizer``, MurmurHash3 seed 0, so a
  token's bucket never depends on the data or the library version), log-scaled counts, L2-normalised rows.
  Nothing is fitted: the featurizer is fully described by :class:`FeaturizerConfig`.
* Model: (multinomial) logistic regression fitted by L-BFGS. This is fastText's linear softmax without its
  low-rank embedding bottleneck; L-BFGS is deterministic and needs no learning-rate schedule, and it fits
  ~10^4 sparse documents in seconds. Scoring is one sparse mat-vec per document, done in batches, so it
  scales linearly with the corpus and runs anywhere numpy runs.
* Persistence without pickle: ``model.json`` (featurizer, classes, shapes, SHA-256 of the weights, metadata)
  plus ``weights.safetensors`` (``coef``, ``intercept``). Loading checks the hash, so a tampered or truncated
  file fails with :class:`ModelFileError` naming the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import xxhash
from safetensors import SafetensorError
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.utils import murmurhash3_32

from ml.io import atomic_write_bytes, atomic_write_text

MODEL_FORMAT = "llama-lifecycle/linear-text-classifier"
MODEL_VERSION = 1
CONFIG_FILE = "model.json"
WEIGHTS_FILE = "weights.safetensors"
TOKEN_PATTERN = r"(?u)\w+|[^\w\s]"  # words and single punctuation marks (code and math keep their symbols)


class ModelFileError(ValueError):
    """A saved model file is missing, corrupt, tampered with or inconsistent; the message names the file."""

    def __init__(self, path: Path | str, problem: str):
        self.path = Path(path)
        super().__init__(f"{path}: {problem}")


# --------------------------------------------------------------------------------------------- features


@dataclass(frozen=True)
class FeaturizerConfig:
    """Hashed n-gram features; ``(0, 0)`` disables a family. Saved verbatim into ``model.json``."""

    log2_buckets: int = 18  # buckets per family; 2 families → 2**19 columns (brief: 2^18–2^20)
    word_ngrams: tuple[int, int] = (1, 2)  # fastText ``-wordNgrams 2``
    char_ngrams: tuple[int, int] = (3, 5)  # fastText subwords use 3..6; 5 keeps the cost down
    max_chars: int = 8000  # featurize the first N characters of a document (cost cap)
    lowercase: bool = True

    def __post_init__(self) -> None:
        if not 10 <= self.log2_buckets <= 24:
            raise ValueError(f"FeaturizerConfig.log2_buckets must be in [10, 24], got {self.log2_buckets}")
        for name in ("word_ngrams", "char_ngrams"):
            lo, hi = getattr(self, name)
            if (lo, hi) != (0, 0) and not 1 <= lo <= hi:
                raise ValueError(f"FeaturizerConfig.{name} must be (0, 0) or 1 <= lo <= hi, got {(lo, hi)}")
        if self.word_ngrams == (0, 0) and self.char_ngrams == (0, 0):
            raise ValueError("FeaturizerConfig: word_ngrams and char_ngrams cannot both be disabled")
        if self.max_chars <= 0:
            raise ValueError(f"FeaturizerConfig.max_chars must be > 0, got {self.max_chars}")

    @property
    def n_buckets(self) -> int:
        return 1 << self.log2_buckets

    @property
    def n_features(self) -> int:
        return 2 * self.n_buckets  # columns [0, B) words, [B, 2B) characters

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeaturizerConfig:
        d = dict(d)
        for k in ("word_ngrams", "char_ngrams"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


def bucket_of(token: str, family: str, cfg: FeaturizerConfig) -> int:
    """Column of one (already lowercased) n-gram: ``|murmur3_32(token, seed=0)| mod B`` (+B for characters)."""
    offset = {"word": 0, "char": cfg.n_buckets}[family]
    return offset + abs(murmurhash3_32(token, seed=0)) % cfg.n_buckets


class HashedFeaturizer:
    """Texts → sparse ``(N, n_features)`` float32 CSR matrix; stateless and deterministic."""

    def __init__(self, cfg: FeaturizerConfig):
        self.cfg = cfg
        common = dict(
            n_features=cfg.n_buckets,
            alternate_sign=False,
            norm=None,
            lowercase=cfg.lowercase,
            dtype=np.float32,
        )
        self._word = (
            HashingVectorizer(
                analyzer="word", token_pattern=TOKEN_PATTERN, ngram_range=cfg.word_ngrams, **common
            )
            if cfg.word_ngrams != (0, 0)
            else None
        )
        self._char = (
            HashingVectorizer(analyzer="char_wb", ngram_range=cfg.char_ngrams, **common)
            if cfg.char_ngrams != (0, 0)
            else None
        )

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        texts = [t[: self.cfg.max_chars] for t in texts]
        n, b = len(texts), self.cfg.n_buckets
        empty = sp.csr_matrix((n, b), dtype=np.float32)
        words = self._word.transform(texts) if self._word is not None else empty
        chars = self._char.transform(texts) if self._char is not None else empty
        x = sp.hstack([words, chars], format="csr", dtype=np.float32)  # (N, 2B)
        x.data = np.log1p(x.data)  # sublinear term frequency
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())  # (N,)
        norms[norms == 0] = 1.0
        return sp.csr_matrix(sp.diags(1.0 / norms).astype(np.float32) @ x, dtype=np.float32)


# ------------------------------------------------------------------------------------------------ model


@dataclass(frozen=True)
class TrainConfig:
    """Logistic-regression fit settings (inverse L2 strength ``C``, iterations, class weighting)."""

    c: float = 4.0  # chosen: mild L2; hashed tf features are L2-normalised so C≈1–10 is the usual range
    max_iter: int = 300
    class_weight: str | None = "balanced"  # small classes (math, teacher positives) are not swamped


@dataclass(frozen=True)
class LinearStudentFields:
    """Student settings shared by the stage configs that train a ``LinearTextClassifier`` (quality, domain):
    featurizer and fit settings, the held-out split, the seed and the scoring batch."""

    log2_buckets: int = 18
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (3, 5)
    max_chars: int = 8000
    c: float = 4.0
    max_iter: int = 300
    held_out_fraction: float = 0.2
    seed: int = 0
    batch_size: int = 1024

    @property
    def featurizer(self) -> FeaturizerConfig:
        return FeaturizerConfig(self.log2_buckets, self.word_ngrams, self.char_ngrams, self.max_chars)

    @property
    def train(self) -> TrainConfig:
        return TrainConfig(c=self.c, max_iter=self.max_iter, class_weight="balanced")


@dataclass
class LinearTextClassifier:
    """Logistic regression over hashed features. Binary: ``coef`` is ``(1, F)`` and scores ``classes[1]``;
    multi-class: ``coef`` is ``(K, F)`` with a softmax over classes."""

    featurizer: FeaturizerConfig
    classes: tuple[str, ...]
    coef: np.ndarray  # (1 or K, F) float32
    intercept: np.ndarray  # (1 or K,) float32
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        k = 1 if len(self.classes) == 2 else len(self.classes)
        if len(self.classes) < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {list(self.classes)}")
        if self.coef.shape != (k, self.featurizer.n_features) or self.intercept.shape != (k,):
            raise ValueError(
                f"weights have shapes coef {self.coef.shape}, intercept {self.intercept.shape}; expected "
                f"({k}, {self.featurizer.n_features}) and ({k},) for {len(self.classes)} classes"
            )
        self._featurizer = HashedFeaturizer(self.featurizer)

    def features(self, texts: Sequence[str]) -> sp.csr_matrix:
        return self._featurizer.transform(texts)

    def predict_proba_features(self, x: sp.csr_matrix) -> np.ndarray:
        """``(N, K)`` class probabilities for a feature matrix ``(N, F)``."""
        logits = np.asarray(x @ self.coef.T, dtype=np.float64) + self.intercept  # (N, 1 or K)
        if len(self.classes) == 2:
            p1 = 1.0 / (1.0 + np.exp(-logits[:, 0]))  # (N,)
            return np.stack([1.0 - p1, p1], axis=1)
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)

    def predict_proba(self, texts: Sequence[str], batch_size: int = 1024) -> np.ndarray:
        """``(N, K)`` class probabilities, featurizing ``batch_size`` documents at a time."""
        out = [
            self.predict_proba_features(self.features(texts[i : i + batch_size]))
            for i in range(0, len(texts), batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)))

    def predict(self, texts: Sequence[str], batch_size: int = 1024) -> np.ndarray:
        proba = self.predict_proba(texts, batch_size)
        return np.asarray(self.classes, dtype=object)[proba.argmax(axis=1)]

    # -- persistence (no pickle) --------------------------------------------------------------------

    def save(self, directory: Path | str) -> Path:
        """Write ``model.json`` + ``weights.safetensors`` into ``directory``; returns the directory."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {
            "coef": np.ascontiguousarray(self.coef, np.float32),
            "intercept": np.ascontiguousarray(self.intercept, np.float32),
        }
        blob = save_safetensors(tensors)
        atomic_write_bytes(directory / WEIGHTS_FILE, blob)
        config = {
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION,
            "featurizer": self.featurizer.to_dict(),
            "classes": list(self.classes),
            "coef_shape": list(self.coef.shape),
            "weights_file": WEIGHTS_FILE,
            "weights_sha256": hashlib.sha256(blob).hexdigest(),
            "meta": self.meta,
        }
        atomic_write_text(directory / CONFIG_FILE, json.dumps(config, indent=2, sort_keys=True))
        return directory

    @classmethod
    def load(cls, directory: Path | str) -> LinearTextClassifier:
        """Read a model written by :meth:`save`; any problem raises :class:`ModelFileError` naming the file."""
        directory = Path(directory)
        cfg_path, w_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        if not cfg_path.is_file():
            raise ModelFileError(cfg_path, "model config file does not exist")
        try:
            config = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFileError(cfg_path, f"not valid JSON ({exc})") from exc
        if not isinstance(config, dict) or config.get("format") != MODEL_FORMAT:
            raise ModelFileError(cfg_path, f"not a {MODEL_FORMAT} config")
        if config.get("version") != MODEL_VERSION:
            raise ModelFileError(
                cfg_path, f"unsupported version {config.get('version')!r} (want {MODEL_VERSION})"
            )
        missing = [k for k in ("featurizer", "classes", "coef_shape", "weights_sha256") if k not in config]
        if missing:
            raise ModelFileError(cfg_path, f"missing key(s) {', '.join(missing)}")
        if not w_path.is_file():
            raise ModelFileError(w_path, "weights file does not exist")
        blob = w_path.read_bytes()
        digest = hashlib.sha256(blob).hexdigest()
        if digest != config["weights_sha256"]:
            raise ModelFileError(
                w_path,
                f"SHA-256 {digest[:16]}… does not match {config['weights_sha256'][:16]}… recorded in "
                f"{CONFIG_FILE} (file truncated or modified)",
            )
        try:
            tensors = load_safetensors(blob)
            featurizer = FeaturizerConfig.from_dict(config["featurizer"])
        except (SafetensorError, OSError) as exc:
            raise ModelFileError(w_path, f"not a readable safetensors file ({exc})") from exc
        except (TypeError, ValueError) as exc:
            raise ModelFileError(cfg_path, f"bad featurizer config ({exc})") from exc
        if set(tensors) != {"coef", "intercept"}:
            raise ModelFileError(
                w_path, f"expected tensors coef, intercept; found {', '.join(sorted(tensors))}"
            )
        if list(tensors["coef"].shape) != list(config["coef_shape"]):
            raise ModelFileError(
                w_path, f"coef shape {tensors['coef'].shape} != {config['coef_shape']} in config"
            )
        try:
            return cls(
                featurizer,
                tuple(config["classes"]),
                tensors["coef"],
                tensors["intercept"],
                dict(config.get("meta", {})),
            )
        except ValueError as exc:
            raise ModelFileError(cfg_path, str(exc)) from exc


def fit_linear(
    texts: Sequence[str],
    labels: Sequence[str],
    featurizer: FeaturizerConfig,
    train: TrainConfig,
    seed: int = 0,
    meta: dict[str, Any] | None = None,
) -> LinearTextClassifier:
    """Fit logistic regression on ``texts`` labelled ``labels`` (class names, sorted into ``classes``)."""
    labels = np.asarray(labels, dtype=object)
    classes = tuple(sorted(set(labels.tolist())))
    if len(classes) < 2:
        raise ValueError(f"training labels hold {len(classes)} class(es) {list(classes)}; need at least 2")
    x = HashedFeaturizer(featurizer).transform(texts)  # (N, F)
    # Fit on the columns that occur in training only: an all-zero column's L2-optimal weight is exactly 0,
    # so this gives the same model and saves L-BFGS from carrying ~F untouched dimensions.
    active = np.unique(x.indices)  # (F_active,)
    model = LogisticRegression(
        C=train.c, max_iter=train.max_iter, class_weight=train.class_weight, solver="lbfgs", random_state=seed
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # iterations used are reported in meta
        model.fit(x[:, active], labels)
    assert tuple(model.classes_) == classes
    coef = np.zeros((model.coef_.shape[0], featurizer.n_features), dtype=np.float32)  # (1 or K, F)
    coef[:, active] = model.coef_
    info = {
        "n_iter": int(np.max(model.n_iter_)),
        "train_docs": len(labels),
        "active_features": len(active),
        "c": train.c,
        "class_weight": train.class_weight,
        "seed": seed,
    }
    return LinearTextClassifier(
        featurizer, classes, coef, model.intercept_.astype(np.float32), {**info, **(meta or {})}
    )


# ------------------------------------------------------------------------------------- input checks


def require_documents(df: pd.DataFrame, where: str) -> None:
    """Fail naming ``where`` if ``df`` lacks ``id, url, text, lang`` or has null texts."""
    missing = [c for c in ("id", "url", "text", "lang") if c not in df.columns]
    if missing:
        raise ValueError(
            f"{where}: input DataFrame lacks column(s) {', '.join(missing)}; has {list(df.columns)}"
        )
    if df["text"].isna().any():
        raise ValueError(f"{where}: column 'text' has {int(df['text'].isna().sum())} null value(s)")


def lang_mask(df: pd.DataFrame, langs: Sequence[str], min_lang_score: float, where: str) -> np.ndarray:
    """Rows whose ``lang`` is in ``langs`` (all rows if empty) and, when ``min_lang_score > 0``, whose
    ``lang_score`` (a probability in [0, 1]) reaches it."""
    mask = df["lang"].isin(list(langs)).to_numpy() if langs else np.ones(len(df), bool)
    if min_lang_score > 0:
        if "lang_score" not in df.columns:
            raise ValueError(f"{where}: min_lang_score={min_lang_score} needs a 'lang_score' column")
        score = df["lang_score"].to_numpy(dtype=np.float64)
        if np.any((score < 0) | (score > 1)):
            raise ValueError(
                f"{where}: column 'lang_score' must hold probabilities in [0, 1] "
                f"(got min {np.nanmin(score):.3g}, max {np.nanmax(score):.3g})"
            )
        mask &= score >= min_lang_score
    return mask


# ------------------------------------------------------------------------------------ splits and metrics


def text_key(text: str) -> int:
    """64-bit hash of whitespace-normalised text: identical documents share a key (and a split side)."""
    return xxhash.xxh64_intdigest(" ".join(text.split()).encode("utf-8"))


def split_by_document(
    labels: Sequence[Any], texts: Sequence[str], held_out_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/held-out split of row indices; documents with identical text stay on one side.

    Per class, distinct texts are shuffled with ``seed`` and ``round(fraction * n)`` of them (at least one
    when the class has ≥ 2 distinct texts) go to held-out. Returns sorted ``(train_idx, held_out_idx)``.
    """
    if not 0.0 < held_out_fraction < 1.0:
        raise ValueError(f"held_out_fraction must be in (0, 1), got {held_out_fraction}")
    labels = np.asarray(labels, dtype=object)
    if len(labels) != len(texts):
        raise ValueError(f"{len(labels)} labels but {len(texts)} texts")
    keys = np.fromiter((text_key(t) for t in texts), dtype=np.uint64, count=len(texts))
    rng = np.random.default_rng(seed)
    held = np.zeros(len(labels), dtype=bool)
    for c in sorted(set(labels.tolist()), key=str):
        rows = np.flatnonzero(labels == c)
        groups = np.unique(keys[rows])  # sorted → deterministic before shuffling
        rng.shuffle(groups)
        n_held = round(held_out_fraction * len(groups))
        n_held = min(max(n_held, 1 if len(groups) >= 2 else 0), len(groups) - 1)
        held[rows[np.isin(keys[rows], groups[:n_held])]] = True
    return np.flatnonzero(~held), np.flatnonzero(held)


def binary_metrics(y_true: Sequence[int], score: Sequence[float], threshold: float = 0.5) -> dict[str, Any]:
    """Precision/recall/F1/accuracy at ``threshold``, ROC AUC, and the confusion counts (positive = 1)."""
    y = np.asarray(y_true, dtype=int)
    s = np.asarray(score, dtype=np.float64)
    pred = (s >= threshold).astype(int)
    auc = float(roc_auc_score(y, s)) if len(set(y.tolist())) == 2 else math.nan
    return {
        "n": len(y),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "accuracy": float(accuracy_score(y, pred)) if len(y) else math.nan,
        "roc_auc": auc,
        "confusion": {
            "tp": int(((pred == 1) & (y == 1)).sum()),
            "fp": int(((pred == 1) & (y == 0)).sum()),
            "fn": int(((pred == 0) & (y == 1)).sum()),
            "tn": int(((pred == 0) & (y == 0)).sum()),
        },
    }


def multiclass_metrics(
    y_true: Sequence[str], y_pred: Sequence[str], classes: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support, and ``confusion[true][pred]`` counts."""
    classes = list(classes)
    y_t, y_p = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    cm = confusion_matrix(y_t, y_p, labels=classes) if len(y_t) else np.zeros((len(classes),) * 2, int)
    per_class = {}
    for i, c in enumerate(classes):
        tp, predicted, support = int(cm[i, i]), int(cm[:, i].sum()), int(cm[i, :].sum())
        p = tp / predicted if predicted else 0.0
        r = tp / support if support else 0.0
        per_class[c] = {
            "precision": p,
            "recall": r,
            "f1": 2 * p * r / (p + r) if p + r else 0.0,
            "support": support,
        }
    return {
        "n": len(y_t),
        "accuracy": float(np.trace(cm) / cm.sum()) if cm.sum() else math.nan,
        "per_class": per_class,
        "confusion": {t: {p: int(cm[i, j]) for j, p in enumerate(classes)} for i, t in enumerate(classes)},
    }


def flat_metrics(report: dict[str, Any], prefix: str = "") -> dict[str, float | int]:
    """Flatten a nested report into ``a/b/c`` → number (strings and lists are skipped), for metric loggers."""
    out: dict[str, float | int] = {}
    for k, v in report.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_metrics(v, f"{name}/"))
        elif isinstance(v, bool):
            out[name] = int(v)
        elif isinstance(v, int | float | np.integer | np.floating):
            out[name] = v.item() if isinstance(v, np.generic) else v
    return out
