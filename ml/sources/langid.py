"""py3langid's classifier with its feature walk compiled: the same ``(language, probability)``, bit for bit.

py3langid scores a text by walking its UTF-8 bytes through a DFA whose accepting states are byte n-gram
features, counting each feature (``visit_counts``, a Python loop: ~80% of its time per document), then
``log1p(counts) @ table[features] + prior`` over the features in order of first appearance. Here the walk is
one numba kernel that returns the same features in the same order with the same counts, and the scoring
lines below are py3langid's own (``LanguageIdentifier._raw_score`` / ``_decide`` / ``classify``), so the
float32 sums run in the same order on the same inputs. ``tests/ml/sources/test_langid.py`` checks equality
with ``py3langid`` on real and adversarial texts. Without numba, py3langid's ``classify`` is used as is.
"""

from __future__ import annotations

import math
from array import array
from functools import cache
from typing import Any

import numpy as np

try:
    import numba
except ImportError:  # pragma: no cover - numba ships with the project; py3langid alone still works
    numba = None


def _kernel(fn):
    return numba.njit(cache=True, nogil=True)(fn) if numba is not None else fn


@_kernel
def _nb_visits(nextmove, rowbase, output, text, n_features):  # pragma: no cover - compiled
    """Features met walking ``text`` (uint8) in order of first appearance, and their counts."""
    counts = np.zeros(n_features, dtype=np.int64)
    order = np.empty(len(text), dtype=np.int64)
    k = 0
    state = 0
    for i in range(len(text)):
        state = nextmove[rowbase[state] + text[i]]
        f = output[state]
        if f >= 0:
            if counts[f] == 0:
                order[k] = f
                k += 1
            counts[f] += 1
    features = order[:k].copy()
    return features, counts[features]


class CompiledLanguageId:
    """``classify(text) -> (language, confidence)`` equal to ``py3langid``'s identifier it wraps."""

    def __init__(self, identifier: Any):
        self.identifier = identifier
        nextmove = identifier.tk_nextmove
        self.nextmove = np.frombuffer(nextmove, dtype=nextmove.typecode) if isinstance(nextmove, array) else (
            np.asarray(nextmove))  # fmt: skip
        self.rowbase = np.asarray(identifier._rowbase, dtype=np.int64)
        self.output = np.asarray(identifier.tk_output, dtype=np.int64)
        self.n_features = int(identifier.nb_ptc.shape[0])

    def _raw_score(self, encoded: bytes) -> np.ndarray:
        ident = self.identifier
        features, counts = _nb_visits(self.nextmove, self.rowbase, self.output,
                                      np.frombuffer(encoded, dtype=np.uint8), self.n_features)  # fmt: skip
        if len(features):
            idx = features.astype(np.intp)
            return np.log1p(counts.astype(np.float32)) @ ident.nb_ptc[idx] + ident.nb_pc
        fill = 0.0 if ident._norm_probs else _raw_floor()
        return np.full(len(ident.nb_classes), fill, dtype=np.float32)

    def _decide(self, text: str | bytes) -> np.ndarray:
        ident = self.identifier
        encoded = ident._encode(text)
        scores = self._raw_score(encoded)
        if ident._norm_probs:
            scores *= 1.0 / math.sqrt(len(encoded) or 1)
            np.exp(scores - scores.max(), out=scores)
            scores /= scores.sum()
        for i, j in ident._alias_pairs:
            if ident._norm_probs:
                scores[i] += scores[j]
                scores[j] = 0.0
            else:
                scores[i] = max(scores[i], scores[j])
                scores[j] = _raw_floor()
        return scores

    def classify(self, text: str | bytes) -> tuple[str, float]:
        if numba is None:
            return self.identifier.classify(text)
        scores = self._decide(text)
        i = int(scores.argmax())
        conf = float(scores[i])
        if self.identifier.min_confidence is not None and conf < self.identifier.min_confidence:
            return "und", conf
        return self.identifier.nb_classes[i], conf


@cache
def _raw_floor() -> float:
    from py3langid.langid import RAW_FLOOR

    return RAW_FLOOR


@cache
def language_identifier() -> CompiledLanguageId:
    """py3langid's shipped model with normalised probabilities, loaded once per process."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier  # model ships inside the package

    return CompiledLanguageId(LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True))
