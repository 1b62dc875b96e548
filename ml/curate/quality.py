"""Model-based quality filter: a cheap hashed-n-gram classifier distilled from a quality teacher.

Two teachers, chosen by ``QualityConfig.teacher``; both are offline and download nothing.

``"perplexity"``. An interpolated Kneser-Ney word n-gram language model
(order 3, fixed discount 0.75, unigram level interpolated with a uniform distribution; words seen
fewer than 2 times form the ``<unk>`` class and an unknown word costs ``P(<unk>|h)`` divided by the
number of such rare words) is trained on curated reference English that ships with
Python itself: the Python Language Reference topics in ``pydoc_data.topics`` and the docstrings of the
standard-library modules (read with ``ast`` from the interpreter's stdlib sources, never imported;
doctest lines dropped, exact duplicates removed). Text is lowercased, digits are mapped to ``0``,
tokens are words and single punctuation marks, every non-empty line is one sentence (``<s> … </s>``).
The teacher scores a document by its per-token perplexity over its first ``teacher_max_tokens`` tokens
(lower is better). Measured against people's labels (``ml/resources/quality_annotations``, see
:mod:`ml.curate.annotated`) it rewards licence boilerplate: formulaic legal English is fluent to an LM
trained on docstrings, and a generated stub is as fluent as a manual.

``"signals"`` (the default). A logistic regression over four signals, each aimed at a failure the
rubric names, computed on a document's first ``teacher_max_chars`` characters (the length annotated
texts are kept at, so the corpus and the annotated set are measured alike):

* ``reference_fluency``: minus the log perplexity under the reference LM above (fluent prose scores high);
* ``legal_density``: the fraction of words from a fixed legal vocabulary (``LEGAL_TERMS``: copyright,
  licence, warranty, liability, ...), which licence texts and copyright files are made of;
* ``log_words``: ``log(1 + words)``: near-empty pages, pointers and generated stubs say little;
* ``prose_fraction``: the share of characters in sentence-like lines (at least ``PROSE_MIN_WORDS`` words,
  ending in ``. : ! ?``), low for indexes, tables of contents, listings and bare signatures.

Signals are standardised and the weights fitted (L2, ``C = judge_c``) on the ``dev`` split of the
annotated set in ``teacher_langs``: people's good/bad judgements against a written rubric play the role
of the Llama-2 quality judgements that Llama 3's classifiers are trained on (paper §3.1.1). The ``test``
split never touches the teacher; it is where both teachers and the student are measured.

Either teacher scores the eligible documents (``lang`` in ``teacher_langs``, by default English only,
and at least ``teacher_min_tokens`` tokens); the ``positive_fraction`` with the best score are labelled
positive and the ``negative_fraction`` with the worst negative; the middle is not used for training.
This mirrors the "would this be referenced by Wikipedia?" fastText classifier of Llama 3 paper §3.1.1.

Language choice: an English LM says nothing about the fluency of German or Japanese text, so the
teacher labels English documents only. The student (the hashed-n-gram logistic regression of
:mod:`ml.curate.classify`) still gives every document a ``quality_score``, but only documents whose
``lang`` is in ``scope_langs`` (English by default) can be dropped or down-weighted; the rest keep
weight 1.0 and are counted as out of scope (§3.1.1 filters each language with its own models).

Student: P(positive) from the classifier is ``quality_score``; it is cheap at scale (one sparse mat-vec
per document) where the teacher is not. The training report gives held-out precision/recall/F1/AUC
against the teacher labels, the teacher/student rank agreement on documents not used for training, and
(``annotated``) how teacher and student agree with people on the annotated ``test`` split: ROC AUC, and
the student's precision/recall/F1 of the "good" class at the filter ``threshold``.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import math
import re
import sysconfig
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from ml.config import ConfigError, StageConfig
from ml.curate.annotated import agreement, annotations_path, load_annotations, split_rows
from ml.curate.classify import (
    LinearStudentFields,
    LinearTextClassifier,
    ModelFileError,
    binary_metrics,
    fit_linear,
    lang_mask,
    require_documents,
    split_by_document,
)
from ml.curate.steps import StepResult, empty_dropped, make_dropped

TEACHER_DESCRIPTIONS = {
    "perplexity": (
        "Perplexity under an interpolated Kneser-Ney word n-gram LM trained on Python's own curated reference "
        "text (pydoc_data.topics + standard-library docstrings); lowest-perplexity fraction of English "
        "documents labelled positive, highest-perplexity fraction negative."
    ),
    "signals": (
        "Logistic regression over reference-LM fluency, legal-vocabulary density, log length and prose-line "
        "fraction, fitted to people's good/bad labels (dev split of the annotated set); best-scoring "
        "fraction of English documents labelled positive, worst-scoring fraction negative."
    ),
}
TEACHERS = tuple(TEACHER_DESCRIPTIONS)
SIGNALS = ("reference_fluency", "legal_density", "log_words", "prose_fraction")
# words licence texts and copyright files are made of (lowercase; matched as whole words)
LEGAL_TERMS = frozenset(
    "copyright copyrighted copyrights license licence licensed licenses licences licensing licensor "
    "warranty warranties liability liable merchantability infringement noninfringement redistribute "
    "redistributed redistribution redistributions permission permitted disclaimer disclaimed disclaims "
    "damages sublicense gpl lgpl agpl mpl apache bsd mit spdx granted rights reserved".split()
)
PROSE_MIN_WORDS = 8  # a sentence-like line has at least this many words and ends in . : ! ?
REFERENCE_SOURCES: tuple[str, ...] = ("pydoc_topics", "stdlib_docstrings")
POSITIVE, NEGATIVE = "positive", "negative"
BOS, EOS, UNK = "<s>", "</s>", "<unk>"
MODES = ("filter", "weight")


@dataclass(frozen=True)
class QualityConfig(LinearStudentFields, StageConfig):
    """Teacher, student and scoring settings for the quality classifier."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"log2_buckets": 18, "max_chars": 4000, "teacher_max_tokens": 1000, "max_teacher_docs": 5000},
        "small": {
            "log2_buckets": 19,
            "max_chars": 16000,
            "teacher_max_tokens": 4000,
            "max_teacher_docs": 50000,
        },
    }

    teacher: str = "signals"  # "signals" (fitted to people's labels) or "perplexity" (reference LM only)
    annotations_version: int = 1  # quality_annotations/v<N>.jsonl in ml/resources; 0 = none
    teacher_max_chars: int = 6000  # signals read the first N characters (= the annotated texts' length)
    judge_c: float = 1.0  # chosen: sklearn's default L2; 5-fold CV AUC on dev moved < 0.002 over C = 0.1..10
    # reference n-gram LM (chosen: order 3 / D=0.75 are the textbook KN defaults, Chen & Goodman)
    reference_sources: tuple[str, ...] = REFERENCE_SOURCES
    lm_order: int = 3
    lm_discount: float = 0.75
    lm_min_count: int = 2  # rarer reference words become <unk>, so <unk> has a real probability
    teacher_langs: tuple[str, ...] = ("en",)
    min_lang_score: float = 0.0  # when > 0, also require lang_score >= this (lang_score must be in [0, 1])
    teacher_max_tokens: int = 2000  # perplexity over the first N tokens (cost cap)
    teacher_min_tokens: int = 20  # shorter documents are too noisy to label
    positive_fraction: float = 0.3  # chosen: top/bottom 30% leaves a clear margin between the classes
    negative_fraction: float = 0.3
    max_teacher_docs: int = 20000  # seeded sample of eligible documents the teacher scores
    # student settings (log2_buckets, n-grams, c, max_iter, split, seed, batch): LinearStudentFields
    # scoring
    mode: str = "filter"  # "filter": drop in-scope docs below threshold; "weight": add quality_weight
    threshold: float = 0.3  # chosen: on a sample of local man pages, READMEs and HTML docs 0.3 drops 28% of
    # English docs (about negative_fraction); 0.5, the decision boundary, drops 46%
    weight_floor: float = 0.1  # weight mode: quality_weight = floor + (1 - floor) * quality_score
    scope_langs: tuple[str, ...] = ("en",)  # empty tuple = every language is in scope

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"QualityConfig.mode must be one of {MODES}, got {self.mode!r}")
        if self.teacher not in TEACHERS:
            raise ConfigError(f"QualityConfig.teacher must be one of {TEACHERS}, got {self.teacher!r}")
        if self.teacher == "signals" and self.annotations_version < 1:
            raise ConfigError(
                "QualityConfig.teacher='signals' is fitted to annotations: set annotations_version"
            )
        if self.teacher_max_chars <= 0 or self.judge_c <= 0:
            raise ConfigError("QualityConfig.teacher_max_chars and judge_c must be > 0")
        if not (0 < self.positive_fraction < 1 and 0 < self.negative_fraction < 1):
            raise ConfigError("QualityConfig.positive_fraction and negative_fraction must be in (0, 1)")
        if self.positive_fraction + self.negative_fraction > 1:
            raise ConfigError("QualityConfig.positive_fraction + negative_fraction must be <= 1")
        if not (0 <= self.threshold <= 1 and 0 <= self.weight_floor <= 1):
            raise ConfigError("QualityConfig.threshold and weight_floor must be in [0, 1]")
        unknown = sorted(set(self.reference_sources) - set(REFERENCE_SOURCES))
        if unknown or not self.reference_sources:
            raise ConfigError(
                f"QualityConfig.reference_sources: unknown {unknown}; choose from {REFERENCE_SOURCES}"
            )


# --------------------------------------------------------------------------- n-gram language model

_LM_TOKEN = re.compile(r"\w+|[^\w\s]")
_DIGIT = re.compile(r"\d")
_PUNCT_RUN = re.compile(r"([^\w\s])\1{3,}")


def lm_tokens(line: str) -> list[str]:
    """Lowercased words and punctuation marks, digits mapped to ``0``, runs of one mark (``=====``)
    cut to three so ruler lines do not dominate a document's perplexity."""
    return _LM_TOKEN.findall(_PUNCT_RUN.sub(r"\1\1\1", _DIGIT.sub("0", line.lower())))


def lm_sentences(text: str, max_tokens: int | None = None) -> list[list[str]]:
    """One token list per non-empty line, stopping once ``max_tokens`` tokens are collected."""
    out: list[list[str]] = []
    total = 0
    for line in text.splitlines():
        toks = lm_tokens(line)
        if not toks:
            continue
        if max_tokens is not None and total + len(toks) > max_tokens:
            toks = toks[: max_tokens - total]
            if toks:
                out.append(toks)
            break
        out.append(toks)
        total += len(toks)
    return out


def _lookup(keys: np.ndarray, values: np.ndarray, query: np.ndarray, default: float) -> np.ndarray:
    """``values[keys == q]`` for each query (keys sorted), ``default`` where a query is absent."""
    i = np.searchsorted(keys, query)
    i_clip = np.minimum(i, len(keys) - 1)
    found = (i < len(keys)) & (keys[i_clip] == query) if len(keys) else np.zeros(len(query), bool)
    return np.where(found, values[i_clip] if len(keys) else default, default)


@dataclass
class NGramLM:
    """Interpolated Kneser-Ney word n-gram LM (Chen & Goodman 1998, one fixed discount ``D``).

    ``P_k(w|h) = max(c_k(hw) - D, 0) / c_k(h•) + D * N1+(h•) / c_k(h•) * P_{k-1}(w|h')`` where ``c_k`` is the
    raw count at the highest order and the continuation count ``N1+(•hw)`` below it; an unseen context
    backs off entirely (``P_k = P_{k-1}``); ``P_0`` is uniform over the vocabulary minus ``<s>``.
    An out-of-vocabulary word gets ``P(<unk>|h) / unk_types``: ``<unk>`` is the class of the ``unk_types``
    rare training words, spread uniformly, so text full of unknown words does not look fluent.
    n-grams are int64 keys ``sum(id_i * V**(k-1-i))``, looked up with binary search, so scoring is
    vectorised.
    """

    order: int
    discount: float
    vocab: dict[str, int]  # <s>=0, </s>=1, <unk>=2, then words sorted
    unigram: np.ndarray  # (V,) P_1(w)
    ngram_keys: list[np.ndarray]  # [k-2] for k = 2..order: sorted k-gram keys
    ngram_alpha: list[np.ndarray]  # discounted relative frequency of each k-gram
    context_keys: list[np.ndarray]  # [k-2]: sorted (k-1)-gram context keys
    context_gamma: list[np.ndarray]  # back-off mass of each context
    unk_types: int = 1  # distinct training words mapped to <unk> (at least 1)

    @classmethod
    def fit(
        cls, sentences: Iterable[list[str]], order: int = 3, discount: float = 0.75, min_count: int = 2
    ) -> NGramLM:
        if order < 1 or not 0.0 <= discount <= 1.0:
            raise ValueError(f"NGramLM: need order >= 1 and 0 <= discount <= 1, got {order}, {discount}")
        sentences = list(sentences)
        counts: dict[str, int] = {}
        for s in sentences:
            for w in s:
                counts[w] = counts.get(w, 0) + 1
        words = sorted(w for w, c in counts.items() if c >= min_count and w not in (BOS, EOS, UNK))
        vocab = {BOS: 0, EOS: 1, UNK: 2} | {w: i + 3 for i, w in enumerate(words)}
        v = len(vocab)
        if v**order >= 2**63:
            raise ValueError(f"NGramLM: vocabulary {v} too large for order {order} int64 keys")
        unk_types = max(1, sum(1 for w, c in counts.items() if c < min_count))
        lm = cls(order, discount, vocab, np.zeros(v), [], [], [], [], unk_types)
        keys = lm._target_keys(sentences)[0]  # [k-1]: (T,) keys of the k-gram ending at each target
        if len(keys[0]) == 0:
            raise ValueError("NGramLM: no tokens to train on")
        uniq = [np.unique(keys[k - 1]) for k in range(1, order + 1)]
        d = discount
        for k in range(order, 0, -1):
            if k == order:
                grams, c = np.unique(keys[k - 1], return_counts=True)  # raw counts
            else:  # continuation counts: distinct left extensions of each k-gram
                grams, c = np.unique(uniq[k] % v**k, return_counts=True)
            c = c.astype(np.float64)
            if k == 1:
                total = c.sum()
                p = np.zeros(v)
                p[grams] = np.maximum(c - d, 0.0) / total
                p[1:] += d * len(grams) / total / (v - 1)  # interpolate with uniform over V \ {<s>}
                lm.unigram = p
                continue
            ctx = grams // v
            ctx_keys, inv = np.unique(ctx, return_inverse=True)
            ctx_total = np.bincount(inv, weights=c)
            ctx_types = np.bincount(inv).astype(np.float64)
            lm.ngram_keys.insert(0, grams)
            lm.ngram_alpha.insert(0, np.maximum(c - d, 0.0) / ctx_total[inv])
            lm.context_keys.insert(0, ctx_keys)
            lm.context_gamma.insert(0, d * ctx_types / ctx_total)
        return lm

    def _target_keys(self, sentences: Sequence[list[str]]) -> tuple[list[np.ndarray], np.ndarray]:
        """Keys of the k-grams (k = 1..order) ending at every predicted token, and each token's sentence."""
        n, unk = self.order, self.vocab[UNK]
        ids: list[int] = []
        sent: list[int] = []
        for j, s in enumerate(sentences):
            ids.extend([0] * (n - 1))
            ids.extend(self.vocab.get(w, unk) for w in s)
            ids.append(1)
            sent.extend([j] * (len(s) + 1))
        seq = np.asarray(ids, dtype=np.int64)  # (L,) padded sentences back to back
        targets = np.flatnonzero(seq != 0)  # every non-<s> position is predicted
        v = len(self.vocab)
        keys = [seq[targets]]
        for k in range(2, n + 1):  # prepend the (k-1)-th previous token; never crosses the padding
            keys.append(seq[targets - (k - 1)] * v ** (k - 1) + keys[-1])
        return keys, np.asarray(sent, dtype=np.int64)

    def token_logprobs(self, sentences: Sequence[list[str]]) -> tuple[np.ndarray, np.ndarray]:
        """Natural-log probability of every predicted token (words and ``</s>``), and its sentence index."""
        keys, sent = self._target_keys(sentences)
        v = len(self.vocab)
        p = self.unigram[keys[0]]  # (T,)
        for k in range(2, self.order + 1):
            gamma = _lookup(self.context_keys[k - 2], self.context_gamma[k - 2], keys[k - 1] // v, 1.0)
            alpha = _lookup(self.ngram_keys[k - 2], self.ngram_alpha[k - 2], keys[k - 1], 0.0)
            p = alpha + gamma * p
        p = np.where(keys[0] == self.vocab[UNK], p / self.unk_types, p)
        return np.log(p), sent

    def perplexity(self, sentences: Sequence[list[str]]) -> float:
        logp, _ = self.token_logprobs(sentences)
        return float(np.exp(-logp.mean())) if len(logp) else math.nan

    def doc_perplexities(self, docs: Sequence[Sequence[list[str]]]) -> np.ndarray:
        """``(N,)`` per-document perplexity (NaN for a document without tokens)."""
        flat = [s for d in docs for s in d]
        owner = np.repeat(np.arange(len(docs)), [len(d) for d in docs])  # sentence → doc
        logp, sent = self.token_logprobs(flat)
        doc = owner[sent] if len(sent) else np.zeros(0, np.int64)
        total = np.bincount(doc, weights=logp, minlength=len(docs))
        count = np.bincount(doc, minlength=len(docs))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, np.exp(-total / np.maximum(count, 1)), np.nan)


# ----------------------------------------------------------------------------------- reference text

_SKIP_STDLIB_DIRS = {
    "test",
    "tests",
    "idlelib",
    "site-packages",
    "dist-packages",
    "turtledemo",
    "__pycache__",
}


def _stdlib_docstrings() -> list[str]:
    """Docstrings of modules, classes and functions in the stdlib sources (parsed, never imported)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs: dict[str, None] = {}
    for path in sorted(root.rglob("*.py")):
        if _SKIP_STDLIB_DIRS.intersection(path.relative_to(root).parts):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # invalid escapes in old sources
                tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc:
                    prose = "\n".join(
                        ln for ln in doc.splitlines() if not ln.lstrip().startswith((">>>", "..."))
                    )
                    docs.setdefault(prose.strip(), None)
    return [d for d in docs if d]


@functools.lru_cache(maxsize=4)
def reference_documents(sources: tuple[str, ...] = REFERENCE_SOURCES) -> tuple[str, ...]:
    """The curated reference text the teacher LM is trained on, in a fixed order."""
    docs: list[str] = []
    for source in sources:
        if source == "pydoc_topics":
            from pydoc_data.topics import topics

            docs.extend(topics[k] for k in sorted(topics))
        elif source == "stdlib_docstrings":
            docs.extend(_stdlib_docstrings())
        else:
            raise ValueError(f"unknown reference source {source!r}; choose from {REFERENCE_SOURCES}")
    return tuple(docs)


@functools.lru_cache(maxsize=4)
def reference_lm(
    sources: tuple[str, ...] = REFERENCE_SOURCES, order: int = 3, discount: float = 0.75, min_count: int = 2
) -> tuple[NGramLM, dict[str, Any]]:
    """The teacher LM and a description of its training text (sources, size, SHA-256)."""
    docs = reference_documents(sources)
    sentences = [s for d in docs for s in lm_sentences(d)]
    lm = NGramLM.fit(sentences, order=order, discount=discount, min_count=min_count)
    sha = hashlib.sha256("\n\x00".join(docs).encode("utf-8")).hexdigest()
    info = {
        "reference_sources": list(sources),
        "reference_docs": len(docs),
        "reference_chars": sum(len(d) for d in docs),
        "reference_tokens": sum(len(s) for s in sentences),
        "reference_sha256": sha,
        "lm": "interpolated Kneser-Ney word n-gram",
        "lm_order": order,
        "lm_discount": discount,
        "lm_min_count": min_count,
        "lm_vocab": len(lm.vocab),
    }
    return lm, info


def teacher_perplexity(
    texts: Sequence[str], lm: NGramLM, max_tokens: int, batch_size: int = 256
) -> np.ndarray:
    """``(N,)`` perplexity of each text's first ``max_tokens`` tokens under ``lm`` (NaN if it has none)."""
    out = [
        lm.doc_perplexities([lm_sentences(t, max_tokens) for t in texts[i : i + batch_size]])
        for i in range(0, len(texts), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros(0)


# ---------------------------------------------------------------------------------- signals teacher

_WORD = re.compile(r"[^\W\d_]+")
_SENTENCE_END = (".", ":", "!", "?")


def _text_signals(text: str) -> tuple[float, float, float]:
    """``legal_density``, ``log_words`` and ``prose_fraction`` of one (already truncated) text."""
    words = [w.lower() for w in _WORD.findall(text)]
    legal = sum(w in LEGAL_TERMS for w in words) / len(words) if words else 0.0
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    prose = sum(len(ln) for ln in lines if len(ln.split()) >= PROSE_MIN_WORDS and ln.endswith(_SENTENCE_END))
    total = sum(len(ln) for ln in lines)
    return legal, math.log1p(len(text.split())), prose / total if total else 0.0


def document_signals(texts: Sequence[str], lm: NGramLM, max_chars: int, max_tokens: int) -> np.ndarray:
    """``(N, len(SIGNALS))`` signals of each text's first ``max_chars`` characters (columns in ``SIGNALS``
    order). A text without tokens has the fluency of a uniform guess over the LM's vocabulary."""
    cut = [t[:max_chars] for t in texts]
    fluency = -np.log(teacher_perplexity(cut, lm, max_tokens))
    fluency = np.where(np.isnan(fluency), -math.log(len(lm.vocab)), fluency)
    rest = np.array([_text_signals(t) for t in cut], dtype=np.float64).reshape(len(cut), 3)
    return np.column_stack([fluency, rest])


@dataclass(frozen=True)
class SignalsJudge:
    """Logistic regression on standardised signals: ``P(good) = sigmoid(w · (x - mean) / scale + b)``."""

    mean: np.ndarray  # (S,)
    scale: np.ndarray  # (S,)
    weights: np.ndarray  # (S,)
    bias: float

    def score(self, signals: np.ndarray) -> np.ndarray:
        """``(N,)`` probability that people would call each document good."""
        z = (signals - self.mean) / self.scale @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-z))

    @classmethod
    def fit(cls, signals: np.ndarray, labels: np.ndarray, c: float) -> SignalsJudge:
        if len(set(np.asarray(labels).tolist())) != 2:
            raise ValueError("SignalsJudge.fit: need both good (1) and bad (0) documents")
        mean, scale = signals.mean(axis=0), signals.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        lr = LogisticRegression(C=c, max_iter=1000).fit((signals - mean) / scale, labels)
        return cls(mean, scale, lr.coef_[0].astype(np.float64), float(lr.intercept_[0]))


def fit_signals_teacher(cfg: QualityConfig, lm: NGramLM) -> tuple[SignalsJudge, dict[str, Any]]:
    """The ``signals`` teacher fitted on the ``dev`` split of the annotated set (``teacher_langs`` only)."""
    path = annotations_path(cfg.annotations_version)
    dev = split_rows(load_annotations(path), "dev", cfg.teacher_langs)
    x = document_signals(dev["text"].tolist(), lm, cfg.teacher_max_chars, cfg.teacher_max_tokens)
    y = dev["label"].to_numpy()
    judge = SignalsJudge.fit(x, y, cfg.judge_c)
    info = {
        "annotations": path.name,
        "fit_docs": len(dev),
        "fit_good": int(y.sum()),
        "fit_bad": int(len(y) - y.sum()),
        "judge_c": cfg.judge_c,
        "teacher_max_chars": cfg.teacher_max_chars,
        "weights": dict(zip(SIGNALS, judge.weights.tolist(), strict=True)),
        "bias": judge.bias,
        "fit_roc_auc": agreement(y, judge.score(x))["roc_auc"],
    }
    return judge, info


def teacher_scores(texts: Sequence[str], cfg: QualityConfig) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The configured teacher on ``texts``: ``(score, perplexity, info)`` with higher scores better
    (``-perplexity`` for the perplexity teacher, ``P(good)`` for the signals teacher)."""
    lm, info = reference_lm(tuple(cfg.reference_sources), cfg.lm_order, cfg.lm_discount, cfg.lm_min_count)
    info = {"teacher": cfg.teacher, "description": TEACHER_DESCRIPTIONS[cfg.teacher], **info}
    ppl = teacher_perplexity(texts, lm, cfg.teacher_max_tokens)
    if cfg.teacher == "perplexity":
        return -ppl, ppl, info
    judge, fit = fit_signals_teacher(cfg, lm)
    score = judge.score(document_signals(texts, lm, cfg.teacher_max_chars, cfg.teacher_max_tokens))
    return score, ppl, info | {"signals": fit}


# ------------------------------------------------------------------------------------- student model


@dataclass
class QualityModel:
    """The student: P(teacher-positive) from hashed n-grams. Saved as ``model.json`` + safetensors."""

    classifier: LinearTextClassifier

    def score(self, texts: Sequence[str], batch_size: int = 1024) -> np.ndarray:
        """``(N,)`` quality scores in [0, 1] (probability of the teacher's positive class)."""
        return self.classifier.predict_proba(list(texts), batch_size)[:, 1]

    def save(self, directory: Path | str) -> Path:
        return self.classifier.save(directory)

    @classmethod
    def load(cls, directory: Path | str) -> QualityModel:
        clf = LinearTextClassifier.load(directory)
        if clf.meta.get("task") != "quality" or clf.classes != (NEGATIVE, POSITIVE):
            raise ModelFileError(Path(directory) / "model.json", "not a quality model (task/classes differ)")
        return cls(clf)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3:
        return math.nan
    ra, rb = pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy()
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def teacher_labels(df: pd.DataFrame, cfg: QualityConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Teacher score and label for the eligible documents (a seeded sample of at most
    ``max_teacher_docs``): a frame with ``row`` (position in ``df``), ``score`` (higher is better),
    ``perplexity`` under the reference LM, ``label`` (``positive``/``negative``/``""`` for the unlabelled
    middle), plus the teacher description."""
    require_documents(df, "teacher_labels")
    rows = np.flatnonzero(lang_mask(df, cfg.teacher_langs, cfg.min_lang_score, "teacher_labels"))
    if len(rows) > cfg.max_teacher_docs:
        rows = np.sort(np.random.default_rng(cfg.seed).choice(rows, cfg.max_teacher_docs, replace=False))
    texts = df["text"].to_numpy()[rows].tolist()
    n_tokens = np.array([sum(len(s) for s in lm_sentences(t, cfg.teacher_max_tokens)) for t in texts], int)
    ok = n_tokens >= cfg.teacher_min_tokens
    rows, texts = rows[ok], [t for t, k in zip(texts, ok, strict=True) if k]
    score, ppl, info = teacher_scores(texts, cfg)
    order = np.argsort(-score, kind="stable")  # best first; ties keep document order
    n_pos, n_neg = int(cfg.positive_fraction * len(rows)), int(cfg.negative_fraction * len(rows))
    label = np.full(len(rows), "", dtype=object)
    label[order[:n_pos]] = POSITIVE
    label[order[len(rows) - n_neg :]] = NEGATIVE
    out = pd.DataFrame({"row": rows, "score": score, "perplexity": ppl, "label": label})
    info |= {
        "teacher_langs": list(cfg.teacher_langs),
        "teacher_max_tokens": cfg.teacher_max_tokens,
        "teacher_min_tokens": cfg.teacher_min_tokens,
        "positive_fraction": cfg.positive_fraction,
        "negative_fraction": cfg.negative_fraction,
        "docs_eligible": int(len(rows)),
        "docs_too_short": int((~ok).sum()),
        "docs_positive": n_pos,
        "docs_negative": n_neg,
    }
    if len(rows):
        q = np.quantile(ppl, [0.1, 0.5, 0.9])
        info |= {"perplexity_p10": float(q[0]), "perplexity_p50": float(q[1]), "perplexity_p90": float(q[2])}
        if n_pos and n_neg:
            info |= {
                "score_positive_min": float(score[order[n_pos - 1]]),
                "score_negative_max": float(score[order[len(rows) - n_neg]]),
            }
    return out, info


def annotated_agreement(model: QualityModel, cfg: QualityConfig, split: str = "test") -> dict[str, Any]:
    """Teacher and student against people's labels on one split of the annotated set (``teacher_langs``
    only): ROC AUC of the configured teacher and of the reference-LM perplexity alone, and the student's
    AUC and precision/recall/F1 of the "good" class at the filter ``threshold``."""
    path = annotations_path(cfg.annotations_version)
    rows = split_rows(load_annotations(path), split, cfg.teacher_langs)
    texts, y = rows["text"].tolist(), rows["label"].to_numpy()
    score, ppl, _ = teacher_scores(texts, cfg)
    return {
        "annotations": path.name,
        "split": split,
        "langs": list(cfg.teacher_langs),
        "teacher": agreement(y, score),
        "reference_lm": agreement(y, ppl, higher_is_better=False),
        "student": agreement(y, model.score(texts, cfg.batch_size), cfg.threshold),
    }


def train_quality_classifier(df: pd.DataFrame, cfg: QualityConfig) -> tuple[QualityModel, dict[str, Any]]:
    """Label documents with the configured teacher, fit the student on a document-level split, and
    report held-out precision/recall/F1/AUC against the teacher, teacher/student agreement, and (when
    ``annotations_version`` is set) agreement with people on the annotated test split."""
    labels, teacher = teacher_labels(df, cfg)
    labelled = labels[labels["label"] != ""].reset_index(drop=True)
    counts = labelled["label"].value_counts()
    if counts.get(POSITIVE, 0) < 2 or counts.get(NEGATIVE, 0) < 2:
        raise ValueError(
            f"train_quality_classifier: the teacher labelled {counts.get(POSITIVE, 0)} positive and "
            f"{counts.get(NEGATIVE, 0)} negative documents out of {teacher['docs_eligible']} eligible "
            f"(lang in {list(cfg.teacher_langs)}, >= {cfg.teacher_min_tokens} tokens); need at least 2 of each"
        )
    texts = df["text"].to_numpy()[labelled["row"].to_numpy()].tolist()
    y = labelled["label"].to_numpy()
    train_idx, held_idx = split_by_document(y, texts, cfg.held_out_fraction, cfg.seed)
    meta = {"task": "quality", "teacher": teacher}
    clf = fit_linear([texts[i] for i in train_idx], y[train_idx], cfg.featurizer, cfg.train, cfg.seed, meta)
    model = QualityModel(clf)

    scores = model.score(df["text"].to_numpy()[labels["row"].to_numpy()].tolist(), cfg.batch_size)
    score_of_labelled = scores[labels.index[labels["label"] != ""]]
    is_pos = (y == POSITIVE).astype(int)
    # student vs teacher at the classifier's own decision boundary (0.5); the filter threshold is separate
    held = binary_metrics(is_pos[held_idx], score_of_labelled[held_idx], 0.5)
    train = binary_metrics(is_pos[train_idx], score_of_labelled[train_idx], 0.5)
    # rank agreement on every teacher-scored document the student did not train on (held-out + middle)
    unseen = np.ones(len(labels), bool)
    unseen[labels.index[labels["label"] != ""][train_idx]] = False
    report = {
        "teacher": teacher,
        "student": {
            "model": "logistic regression (L-BFGS) on hashed word 1-2-grams + char n-grams",
            "featurizer": cfg.featurizer.to_dict(),
            "n_iter": clf.meta["n_iter"],
            "train_docs": len(train_idx),
            "held_out_docs": len(held_idx),
            "decision_threshold": 0.5,
            "filter_threshold": cfg.threshold,
            "held_out": held,
            "train": train,
        },
        "agreement": {
            "held_out_accuracy": held["accuracy"],
            "spearman_unseen": _spearman(scores[unseen], labels["score"].to_numpy()[unseen]),
            "unseen_docs": int(unseen.sum()),
        },
    }
    if cfg.annotations_version:
        report["annotated"] = annotated_agreement(model, cfg)
    return model, report


def score_quality(df: pd.DataFrame, model: QualityModel, cfg: QualityConfig) -> StepResult:
    """Add ``quality_score``; ``filter`` mode drops in-scope documents below ``threshold`` (reason
    ``low_quality``), ``weight`` mode keeps every document and adds ``quality_weight``."""
    require_documents(df, "score_quality")
    out = df.copy()
    score = model.score(out["text"].tolist(), cfg.batch_size)
    out["quality_score"] = score
    in_scope = lang_mask(out, cfg.scope_langs, 0.0, "score_quality")
    stats: dict[str, float | int] = {
        "quality_docs_in_scope": int(in_scope.sum()),
        "quality_docs_out_of_scope": int((~in_scope).sum()),
        "quality_score_mean_in_scope": float(score[in_scope].mean()) if in_scope.any() else math.nan,
    }
    if in_scope.any():
        q = np.quantile(score[in_scope], [0.1, 0.5, 0.9])
        stats |= {
            "quality_score_p10": float(q[0]),
            "quality_score_p50": float(q[1]),
            "quality_score_p90": float(q[2]),
        }
    if cfg.mode == "weight":
        out["quality_weight"] = np.where(in_scope, cfg.weight_floor + (1 - cfg.weight_floor) * score, 1.0)
        stats["quality_weight_mean"] = float(out["quality_weight"].mean()) if len(out) else math.nan
        return StepResult(out.reset_index(drop=True), empty_dropped(), stats)
    drop = in_scope & (score < cfg.threshold)
    dropped_rows = out[drop]
    dropped = (
        make_dropped(
            dropped_rows, "low_quality", pd.Series([f"quality_score={s:.4f}" for s in score[drop]], dtype=str)
        )
        if drop.any()
        else empty_dropped()
    )
    stats["quality_dropped_fraction_in_scope"] = float(drop.sum() / in_scope.sum()) if in_scope.any() else 0.0
    return StepResult(out[~drop].reset_index(drop=True), dropped, stats)
