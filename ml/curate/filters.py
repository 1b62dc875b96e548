"""Heuristic quality filters (Llama 3 paper §3.1.1: duplicated n-gram coverage, dirty-word counting,
token-distribution KL).

datatrove-style: one class per rule with ``filter(doc) -> bool | (False, reason)``; ``heuristic_filter`` runs
them in order over a DataFrame (a doc is dropped by the first rule it fails, every rule's score is kept as
a column on kept docs). The paper publishes no thresholds; the defaults below follow the Gopher rules
(Rae et al. 2021, "Scaling Language Models", appendix A) where a rule exists there, else say "chosen".

The Gopher rules count as datatrove's ``GopherRepetitionFilter``/``GopherQualityFilter`` (the reference
FineWeb used) count: whitespace words, symbol-only words left out of length and mean word length, and for
repeated lines, paragraphs and n-grams only the repeated occurrences, as a fraction of the document's
characters. ``tests/ml/curate/test_datatrove_agreement.py`` checks equal decisions on real documents.
"""

from __future__ import annotations

import abc
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache, cached_property, lru_cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

try:
    import numba
except ImportError:  # pragma: no cover - numba ships with the project; the kernel then runs as Python
    numba = None

from ml.config import ConfigError, StageConfig
from ml.curate.steps import StepResult, empty_dropped

RESOURCES = Path(__file__).resolve().parent.parent / "resources"
WORDLIST_DIR = RESOURCES / "wordlists"
STOPWORD_DIR = RESOURCES / "stopwords"
FILTER_ORDER: tuple[str, ...] = (
    "length", "alpha_ratio", "mean_word_length", "symbol_ratio", "ellipsis_lines", "bullet_lines",
    "stop_words", "dup_lines", "dup_ngram_coverage", "dirty_words", "kl_outlier",
)  # fmt: skip
# Rules whose score is NaN when they do not apply to a document's language (counted as skipped).
LANGUAGE_RULES = {"stop_words": "stop_word_count", "kl_outlier": "kl_div"}


@dataclass(frozen=True)
class FilterConfig(StageConfig):
    """Thresholds of the heuristic filters; a doc failing any enabled rule is dropped."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # tiny: the local web's man pages and READMEs are short; Gopher's 50-word floor would drop most.
        "tiny": {"min_words": 20},
        "small": {},
        "8b": {},
        "70b": {},
        "405b": {},
    }

    enabled: tuple[str, ...] = FILTER_ORDER  # rules run in this order; the first failing one is the reason
    min_words: int = 50  # Gopher: 50 <= words <= 100,000
    max_words: int = 100_000  # Gopher
    min_mean_word_length: float = 3.0  # Gopher: mean word length in [3, 10] characters
    max_mean_word_length: float = 10.0  # Gopher
    # Languages written without spaces between words: each CJK character counts as a word (runs of other
    # characters stay one word), so length, mean word length and n-grams measure them like spaced text.
    char_word_langs: tuple[str, ...] = ("ja", "zh", "yue", "wuu")
    char_word_mean_length: tuple[float, float] = (1.0, 4.0)  # chosen: ja/zh man pages measure 1.3-2.3
    min_stop_words: int = 2  # Gopher: >= 2 of the language's stop words (en: the, be, to, of, and, ...)
    stop_words_dir: str = ""  # "" = ml/resources/stopwords (<lang>.txt); no list: rule skipped, counted
    min_alpha_word_frac: float = 0.8  # Gopher: >= 80% of words contain an alphabetic character
    max_symbol_word_ratio: float = 0.1  # Gopher: '#' or ellipsis to word ratio <= 0.1
    max_ellipsis_line_frac: float = 0.3  # Gopher: <= 30% of lines end with an ellipsis
    max_bullet_line_frac: float = 0.9  # Gopher: <= 90% of lines start with a bullet
    max_dup_para_frac: float = 0.3  # Gopher: duplicate paragraphs <= 30% of paragraphs
    max_dup_para_char_frac: float = 0.2  # Gopher: chars in duplicate paragraphs <= 20% of the doc's chars
    max_dup_line_frac: float = 0.3  # Gopher: duplicate lines <= 30% of lines
    max_dup_line_char_frac: float = 0.2  # Gopher: chars in duplicate lines <= 20% of the doc's chars
    max_top_ngram_frac: tuple[float, ...] = (0.20, 0.18, 0.16)  # Gopher: top 2-, 3-, 4-gram char coverage
    max_dup_ngram_frac: tuple[float, ...] = (0.15, 0.14, 0.13, 0.12, 0.11, 0.10)  # Gopher: dup 5..10-grams
    max_dirty_word_ratio: float = 0.01  # chosen: > 1 listed word per 100 words is adult/spam, not prose
    min_dirty_words: int = 3  # chosen: one or two swear words in an essay or a quote never drop it
    wordlist_dir: str = ""  # "" = ml/resources/wordlists (<lang>.txt); languages without a list: no penalty
    kl_unit: str = "char"  # chosen: character unigrams are stable on short docs (word unigrams are sparse)
    max_kl: float = 1.0  # chosen: nats; prose sits at 0.02-0.3 vs its language, dumps/tables/base64 > 1
    kl_top_fraction: float = 0.0  # chosen: 0 = absolute threshold only; e.g. 0.01 also drops the top 1%/lang
    # chosen: a character-unigram reference from fewer docs is a handful of pages' vocabulary, not the
    # language's; a language under this count is not scored (counted as skipped/kl_outlier/<lang>).
    kl_min_docs: int = 100
    kl_smoothing: float = 0.5  # chosen: additive smoothing of the reference counts (Jeffreys prior)

    def __post_init__(self) -> None:
        unknown = [f for f in self.enabled if f not in FILTER_ORDER]
        if unknown:
            raise ConfigError(
                f"FilterConfig.enabled: unknown filter(s) {unknown}; valid: {', '.join(FILTER_ORDER)}"
            )
        if len(self.max_top_ngram_frac) != 3:
            raise ConfigError("FilterConfig.max_top_ngram_frac: needs 3 values (n = 2, 3, 4)")
        lo, hi = self.char_word_mean_length
        if not 0 < lo <= hi:
            raise ConfigError(
                f"FilterConfig.char_word_mean_length: {self.char_word_mean_length} is not 0 < lo <= hi"
            )
        if len(self.max_dup_ngram_frac) != 6:
            raise ConfigError("FilterConfig.max_dup_ngram_frac: needs 6 values (n = 5..10)")
        if self.kl_unit not in ("char", "word"):
            raise ConfigError(f"FilterConfig.kl_unit: {self.kl_unit!r} is not 'char' or 'word'")
        if not 0.0 <= self.kl_top_fraction < 1.0:
            raise ConfigError(f"FilterConfig.kl_top_fraction: {self.kl_top_fraction} is not in [0, 1)")


# ---------------------------------------------------------------------------------------------- documents

_TOKEN = re.compile(r"\w+")
_BULLETS = ("•", "-")  # Gopher / datatrove: a line "starts with a bullet point"
_ELLIPSES = ("...", "…")
_ASCII_SYMBOLS = frozenset("$+<=>^`|~")  # symbols datatrove counts with punctuation in "symbol-only words"
_PARAGRAPH_BREAK = re.compile(r"\n{2,}")
_LINE_BREAK = re.compile(r"\n+")
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"  # kana, CJK ideographs
_CHAR_WORD = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")  # one CJK character, or a run of anything else


@lru_cache(maxsize=1 << 17)  # words repeat: each distinct word is classified once
def is_symbol_word(word: str) -> bool:
    """A word made only of punctuation, ASCII symbols or control characters (Gopher excludes these words
    from the word count and the mean word length)."""
    return all(
        unicodedata.category(ch)[0] == "P" or ch in _ASCII_SYMBOLS or unicodedata.category(ch) == "Cc"
        for ch in word
    )


@lru_cache(maxsize=1 << 17)
def has_alpha(word: str) -> bool:
    """A word with at least one alphabetic character (``str.isalpha``)."""
    return any(ch.isalpha() for ch in word)


class Doc:
    """Lazily split view of one document (shared by every filter so each split happens once)."""

    def __init__(self, text: str, lang: str = "und", char_words: bool = False):
        self.text = text
        self.lang = lang
        self.char_words = char_words  # CJK characters are words (no spaces between words)
        self.word_sep = 0 if char_words else 1  # characters between the words of an n-gram

    @classmethod
    def from_row(cls, row: Mapping[str, Any], cfg: FilterConfig | None = None) -> Doc:
        lang = str(row.get("lang", "und"))
        return cls(str(row["text"]), lang, char_words=cfg is not None and lang in cfg.char_word_langs)

    @cached_property
    def words(self) -> list[str]:  # Gopher's words: whitespace-separated, punctuation attached
        return _CHAR_WORD.findall(self.text) if self.char_words else self.text.split()

    @cached_property
    def content_words(self) -> list[str]:  # words with at least one non-symbol character
        return [w for w in self.words if not is_symbol_word(w)]

    @cached_property
    def word_counts(self) -> Counter[str]:  # each distinct word once: per-word rules run on these
        return Counter(self.words)

    @cached_property
    def content_word_stats(self) -> tuple[int, int]:  # (number, total characters) of the content words
        number = chars = 0
        for w, k in self.word_counts.items():
            if not is_symbol_word(w):
                number += k
                chars += k * len(w)
        return number, chars

    @cached_property
    def tokens(self) -> list[str]:  # lowercased \w+ tokens for word lists and word-KL
        return _TOKEN.findall(self.text.lower())

    @cached_property
    def lines(self) -> list[str]:  # every line as str.splitlines gives it (blank lines included)
        return self.text.splitlines()


def _above(value: float, limit: float, reason: str) -> tuple[str, str] | None:
    """``(reason, "value > limit")`` when a score exceeds its limit, else None."""
    return (reason, f"{value:.3f} > {limit}") if value > limit else None


def _line_frac(doc: Doc, hit: Callable[[str], bool]) -> float:
    """Share of the document's lines for which ``hit`` holds (0 for no lines)."""
    return sum(1 for line in doc.lines if hit(line)) / len(doc.lines) if doc.lines else 0.0


class HeuristicFilter(abc.ABC):
    """A rule: ``scores(doc)`` → named numbers (kept as columns), ``check(scores)`` → (reason, detail) or None."""

    name: ClassVar[str]

    def __init__(self, cfg: FilterConfig):
        self.cfg = cfg

    @abc.abstractmethod
    def scores(self, doc: Doc) -> dict[str, float]:
        """The rule's measurements of ``doc`` (kept as columns on kept documents)."""

    @abc.abstractmethod
    def check(self, scores: Mapping[str, float], doc: Doc) -> tuple[str, str] | None:
        """``(reason, detail)`` when the document fails the rule, else None."""

    def filter(self, doc: Doc | Mapping[str, Any]) -> bool | tuple[bool, str]:
        """datatrove protocol: True to keep, ``(False, reason)`` to drop."""
        doc = doc if isinstance(doc, Doc) else Doc.from_row(doc, self.cfg)
        verdict = self.check(self.scores(doc), doc)
        return True if verdict is None else (False, verdict[0])


class LengthFilter(HeuristicFilter):
    """Gopher: 50 <= words <= 100,000, symbol-only words not counted."""

    name = "length"

    def scores(self, doc: Doc) -> dict[str, float]:
        return {"n_words": doc.content_word_stats[0]}

    def check(self, s: Mapping[str, float], doc: Doc) -> tuple[str, str] | None:
        if s["n_words"] < self.cfg.min_words:
            return "too_short", f"{int(s['n_words'])} words < {self.cfg.min_words}"
        if s["n_words"] > self.cfg.max_words:
            return "too_long", f"{int(s['n_words'])} words > {self.cfg.max_words}"
        return None


class AlphaRatioFilter(HeuristicFilter):
    name = "alpha_ratio"

    def scores(self, doc: Doc) -> dict[str, float]:
        n = len(doc.words)
        alpha = sum(k for w, k in doc.word_counts.items() if has_alpha(w))
        return {"alpha_word_frac": alpha / n if n else 0.0}

    def check(self, s: Mapping[str, float], doc: Doc) -> tuple[str, str] | None:
        if s["alpha_word_frac"] < self.cfg.min_alpha_word_frac:
            return "alpha_ratio", f"{s['alpha_word_frac']:.3f} < {self.cfg.min_alpha_word_frac}"
        return None


class MeanWordLengthFilter(HeuristicFilter):
    """Gopher: mean length of the non-symbol words in [3, 10] characters."""

    name = "mean_word_length"

    def scores(self, doc: Doc) -> dict[str, float]:
        number, chars = doc.content_word_stats
        return {"mean_word_length": chars / number if number else 0.0}

    def check(self, s: Mapping[str, float], doc: Doc) -> tuple[str, str] | None:
        m, cfg = s["mean_word_length"], self.cfg
        lo, hi = (
            cfg.char_word_mean_length
            if doc.char_words
            else (cfg.min_mean_word_length, cfg.max_mean_word_length)
        )
        if not lo <= m <= hi:
            return "mean_word_length", f"{m:.2f} not in [{lo}, {hi}]"
        return None


class SymbolRatioFilter(HeuristicFilter):
    name = "symbol_ratio"

    def scores(self, doc: Doc) -> dict[str, float]:
        n = max(len(doc.words), 1)
        hashes = doc.text.count("#")
        ellipses = sum(doc.text.count(e) for e in _ELLIPSES)
        return {"symbol_word_ratio": max(hashes, ellipses) / n}

    def check(self, s: Mapping[str, float], doc: Doc) -> tuple[str, str] | None:
        return _above(s["symbol_word_ratio"], self.cfg.max_symbol_word_ratio, "symbol_ratio")


class EllipsisLinesFilter(HeuristicFilter):
    name = "ellipsis_lines"

    def scores(self, doc: Doc) -> dict[str, float]:
        return {"ellipsis_line_frac": _line_frac(doc, lambda line: line.rstrip().endswith(_ELLIPSES))}

    def check(self, s: Mapping[str, float], doc: Doc) -> tuple[str, str] | None:
        return _above(s["ellipsis_line_frac"], self.cfg.max_ellipsis_line_frac, "ellipsis_lines")


class BulletLinesFilter(HeuristicFilter):
    name = "bullet_lines"

    def scores(self, doc: Doc) -> dict[str, float]:
        return {"bullet_line_frac": _line_frac(doc, lambda line: line.lstrip().startswith(_BULLETS))}

    def check(self, s: Mapping[str, float], doc: Doc) -> tuple[str, str] | None:
        return _above(s["bullet_line_frac"], self.cfg.max_bullet_line_frac, "bullet_lines")


class StopWordsFilter(HeuristicFilter):
    """Gopher: a document holds at least ``min_stop_words`` distinct stop words of its language (whole words,
    case as written). Languages without a stop-word list score NaN: the rule is skipped and counted."""

    name = "stop_words"

    def scores(self, doc: Doc) -> dict[str, float]:
        stop = load_wordlist(doc.lang, self.cfg.stop_words_dir or str(STOPWORD_DIR))
        if not stop:
            return {"stop_word_count": float("nan")}
        return {"stop_word_count": len(stop.intersection(doc.words))}

    def check(self, s: Mapping[str, float], doc: Doc) -> tuple[str, str] | None:
        n = s["stop_word_count"]
        if not math.isnan(n) and n < self.cfg.min_stop_words:
            return "stop_words", f"{int(n)} distinct stop words < {self.cfg.min_stop_words}"
        return None


def duplicate_elements(elements: list[str]) -> tuple[int, int]:
    """``(count, chars)`` of the elements equal to an earlier one: only repeats count, never the first."""
    seen: set[str] = set()
    count = chars = 0
    for el in elements:
        if el in seen:
            count += 1
            chars += len(el)
        else:
            seen.add(el)
    return count, chars


class DupLinesFilter(HeuristicFilter):
    """Gopher: paragraphs (split at blank lines) and lines that repeat an earlier one, as a fraction of all
    paragraphs / lines and of the document's characters."""

    name = "dup_lines"

    def scores(self, doc: Doc) -> dict[str, float]:
        n_chars = max(len(doc.text), 1)
        paragraphs = _PARAGRAPH_BREAK.split(doc.text.strip())
        lines = _LINE_BREAK.split(doc.text)
        para_dups, para_chars = duplicate_elements(paragraphs)
        line_dups, line_chars = duplicate_elements(lines)
        return {
            "dup_para_frac": para_dups / len(paragraphs),
            "dup_para_char_frac": para_chars / n_chars,
            "dup_line_frac": line_dups / len(lines),
            "dup_line_char_frac": line_chars / n_chars,
        }

    def check(self, s: Mapping[str, float], doc: Doc) -> tuple[str, str] | None:
        cfg = self.cfg
        limits = (
            ("dup_paragraphs", "dup_para_frac", cfg.max_dup_para_frac),
            ("dup_paragraphs", "dup_para_char_frac", cfg.max_dup_para_char_frac),
            ("dup_lines", "dup_line_frac", cfg.max_dup_line_frac),
            ("dup_lines", "dup_line_char_frac", cfg.max_dup_line_char_frac),
        )
        for reason, key, limit in limits:
            if s[key] > limit:
                return reason, f"{key}={s[key]:.3f} > {limit}"
        return None


def top_ngram_char_frac(words: list[str], n: int, n_chars: int, sep: int = 1) -> float:
    """Gopher: characters of the most frequent n-gram (words joined by ``sep`` characters) times its count,
    over the document's characters; ties go to the n-gram seen first. An n-gram that occurs once scores 0."""
    if len(words) < n or n_chars <= 0:
        return 0.0
    gram, count = Counter(zip(*(words[i:] for i in range(n)), strict=False)).most_common(1)[0]
    if count < 2:
        return 0.0
    return (sum(len(w) for w in gram) + (n - 1) * sep) * count / n_chars


def dup_ngram_char_frac(words: list[str], n: int, n_chars: int) -> float:
    """Gopher: characters of the n-grams that repeat an earlier n-gram, over the document's characters.

    Only repeated occurrences count (the first occurrence is the original text); after a repeat the scan
    jumps past it, so overlapping repeats are not counted twice (datatrove's ``find_all_duplicate``).
    """
    if n_chars <= 0:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    repeated, i, last = 0, 0, len(words) - n
    while i <= last:
        gram = tuple(words[i : i + n])
        if gram in seen:
            repeated += sum(len(w) for w in gram)
            i += n
        else:
            seen.add(gram)
            i += 1
    return repeated / n_chars


def _kernel(fn):
    """``fn`` compiled by numba when it is installed; else ``fn`` itself (same results, slower)."""
    return numba.njit(cache=True, nogil=True)(fn) if numba is not None else fn


@_kernel
def _dup_ngram_chars(gram_ids, ends, n):  # pragma: no cover - compiled
    """:func:`dup_ngram_char_frac`'s scan on n-gram ids (``ends[i]``: characters of the n-gram at ``i``)."""
    seen = np.zeros(len(gram_ids), dtype=np.bool_)
    repeated, i = 0, 0
    while i < len(gram_ids):
        g = gram_ids[i]
        if seen[g]:
            repeated += ends[i]
            i += n
        else:
            seen[g] = True
            i += 1
    return repeated


def ngram_char_fracs(words: list[str], n_chars: int, sep: int = 1) -> dict[str, float]:
    """``top{2,3,4}gram_frac`` and ``dup{5..10}gram_frac`` of :func:`top_ngram_char_frac` and
    :func:`dup_ngram_char_frac`, equal to theirs, on integer n-gram ids (``tests/ml/curate/test_filters.py``).

    An n-gram's id is the dense rank of the pair (id of its first n-1 words, id of its last word), so equal
    n-grams, and only they, share an id; counts and first positions come from ``np.unique``.
    """
    out = {f"top{n}gram_frac": 0.0 for n in (2, 3, 4)} | {f"dup{n}gram_frac": 0.0 for n in range(5, 11)}
    if n_chars <= 0 or len(words) < 2:
        return out
    index = {w: i for i, w in enumerate(dict.fromkeys(words))}
    word_ids = np.fromiter(map(index.__getitem__, words), dtype=np.int64, count=len(words))
    starts = np.concatenate(([0], np.cumsum(np.fromiter(map(len, words), dtype=np.int64, count=len(words)))))
    grams = word_ids
    for n in range(2, min(len(words), 10) + 1):
        key = grams[:-1] * len(index) + word_ids[n - 1 :]
        uniq, first, grams, counts = np.unique(
            key, return_index=True, return_inverse=True, return_counts=True
        )
        chars = (
            starts[n:] - starts[: len(starts) - n]
        )  # characters of the words of the n-gram at each position
        if n <= 4:
            best = int(counts.max())
            if best >= 2:
                pos = int(
                    first[counts == best].min()
                )  # the most frequent n-gram seen first (Counter's tie rule)
                out[f"top{n}gram_frac"] = (int(chars[pos]) + (n - 1) * sep) * best / n_chars
        else:
            out[f"dup{n}gram_frac"] = int(_dup_ngram_chars(grams.astype(np.int64), chars, n)) / n_chars
    return out


class DupNgramFilter(HeuristicFilter):
    name = "dup_ngram_coverage"

    def scores(self, doc: Doc) -> dict[str, float]:
        return ngram_char_fracs(doc.words, len(doc.text), doc.word_sep)

    def check(self, s: Mapping[str, float], doc: Doc) -> tuple[str, str] | None:
        limits = {f"top{n}gram_frac": t for n, t in zip((2, 3, 4), self.cfg.max_top_ngram_frac, strict=True)}
        limits.update(
            {f"dup{n}gram_frac": t for n, t in zip(range(5, 11), self.cfg.max_dup_ngram_frac, strict=True)}
        )
        for key, limit in limits.items():
            if s[key] > limit:
                return "dup_ngram_coverage", f"{key}={s[key]:.3f} > {limit}"
        return None


@cache
def load_wordlist(lang: str, directory: str = "") -> frozenset[str]:
    """Words of ``<directory>/<lang>.txt`` (one per line, ``#`` comments), casefolded; empty if no list."""
    path = Path(directory or WORDLIST_DIR) / f"{lang}.txt"
    if not re.fullmatch(r"[a-z]{2,3}(-[A-Za-z]+)?", lang) or not path.is_file():
        return frozenset()
    words = (
        line.split("#", 1)[0].strip().casefold() for line in path.read_text(encoding="utf-8").splitlines()
    )
    return frozenset(w for w in words if w)


class DirtyWordsFilter(HeuristicFilter):
    """Share of tokens found in the doc language's word list; languages without a list are not penalised."""

    name = "dirty_words"

    def scores(self, doc: Doc) -> dict[str, float]:
        words = load_wordlist(doc.lang, self.cfg.wordlist_dir)
        if not words or not doc.tokens:
            return {"dirty_word_count": 0, "dirty_word_ratio": 0.0}
        count = sum(1 for t in doc.tokens if t in words)
        return {"dirty_word_count": count, "dirty_word_ratio": count / len(doc.tokens)}

    def check(self, s: Mapping[str, float], doc: Doc) -> tuple[str, str] | None:
        cfg = self.cfg
        if s["dirty_word_count"] >= cfg.min_dirty_words and s["dirty_word_ratio"] > cfg.max_dirty_word_ratio:
            return "dirty_words", f"{int(s['dirty_word_count'])} words, ratio {s['dirty_word_ratio']:.3f}"
        return None


# ---------------------------------------------------------------------------------------------- KL divergence


def unit_counts(doc: Doc, unit: str) -> Counter[str]:
    """Counts of the doc's units (lowercased ``\\w+`` tokens, or non-space characters) in order of first
    appearance: what ``Counter`` of the unit list gives, counted without building the list."""
    if unit == "word":
        return Counter(doc.tokens)
    counts = Counter(doc.text)
    for ch in [ch for ch in counts if ch.isspace()]:
        del counts[ch]  # deleting keeps the order of the others
    return counts


@dataclass(frozen=True)
class UnigramReference:
    """Corpus unigram counts of one language (characters or words)."""

    counts: Mapping[str, int]
    total: int
    n_docs: int

    def log_prob(self, unit: str, smoothing: float) -> float:
        v = len(self.counts) + 1  # +1: one bucket for units never seen in the corpus
        return math.log((self.counts.get(unit, 0) + smoothing) / (self.total + smoothing * v))


def fit_kl_reference(df: pd.DataFrame, cfg: FilterConfig) -> dict[str, UnigramReference]:
    """Per-language unigram references from ``df`` (``text``, ``lang``); languages under ``kl_min_docs`` left out."""
    counts: dict[str, Counter[str]] = {}
    n_docs: Counter[str] = Counter()
    langs = df["lang"].astype(str) if "lang" in df.columns else pd.Series(["und"] * len(df))
    for text, lang in zip(df["text"].astype(str), langs, strict=True):
        counts.setdefault(lang, Counter()).update(unit_counts(Doc(text, lang), cfg.kl_unit))
        n_docs[lang] += 1
    return {
        lang: UnigramReference(counts=dict(c), total=sum(c.values()), n_docs=n_docs[lang])
        for lang, c in sorted(counts.items())
        if n_docs[lang] >= cfg.kl_min_docs
    }


def kl_divergence(doc: Doc, ref: UnigramReference, unit: str, smoothing: float) -> float:
    """KL(P_doc || Q_corpus) in nats over unigrams; P is the doc's empirical distribution."""
    c = unit_counts(doc, unit)
    n = sum(c.values())
    if n == 0:
        return 0.0
    return float(sum((k / n) * (math.log(k / n) - ref.log_prob(u, smoothing)) for u, k in c.items()))


class KLOutlierFilter(HeuristicFilter):
    """Docs whose unigram distribution is far from their language's corpus distribution (outlier tokens)."""

    name = "kl_outlier"

    def __init__(self, cfg: FilterConfig, reference: Mapping[str, UnigramReference],
                 top_thresholds: Mapping[str, float] | None = None):  # fmt: skip
        super().__init__(cfg)
        self.reference = reference
        self.top_thresholds = dict(top_thresholds or {})

    def scores(self, doc: Doc) -> dict[str, float]:
        ref = self.reference.get(doc.lang)
        if ref is None:
            return {"kl_div": float("nan")}
        return {"kl_div": kl_divergence(doc, ref, self.cfg.kl_unit, self.cfg.kl_smoothing)}

    def check(self, s: Mapping[str, float], doc: Doc) -> tuple[str, str] | None:
        kl = s["kl_div"]
        if math.isnan(kl):
            return None
        if kl > self.cfg.max_kl:
            return "kl_outlier", f"kl={kl:.3f} > {self.cfg.max_kl}"
        top = self.top_thresholds.get(doc.lang)
        if top is not None and kl > top:
            return "kl_outlier", f"kl={kl:.3f} > top-{self.cfg.kl_top_fraction} threshold {top:.3f}"
        return None


# ---------------------------------------------------------------------------------------------- the step

_SIMPLE: dict[str, type[HeuristicFilter]] = {
    f.name: f
    for f in (LengthFilter, AlphaRatioFilter, MeanWordLengthFilter, SymbolRatioFilter, EllipsisLinesFilter,
              BulletLinesFilter, StopWordsFilter, DupLinesFilter, DupNgramFilter, DirtyWordsFilter)
}  # fmt: skip


def build_filters(
    cfg: FilterConfig, reference: Mapping[str, UnigramReference] | None = None
) -> list[HeuristicFilter]:
    """Enabled filters in ``cfg.enabled`` order (the KL filter needs a reference; empty if None)."""
    return [
        KLOutlierFilter(cfg, reference or {}) if name == "kl_outlier" else _SIMPLE[name](cfg)
        for name in cfg.enabled
    ]


def _kl_top_thresholds(docs: list[Doc], scores: list[dict[str, float]], fraction: float) -> dict[str, float]:
    """Per language, the KL value above which the top ``fraction`` of its scored docs lie."""
    by_lang: dict[str, list[float]] = {}
    for d, s in zip(docs, scores, strict=True):
        if not math.isnan(s["kl_div"]):
            by_lang.setdefault(d.lang, []).append(s["kl_div"])
    return {lang: float(np.quantile(v, 1.0 - fraction)) for lang, v in sorted(by_lang.items())}


def _first_failures(
    docs: list[Doc], scores: list[dict[str, float]], filters: list[HeuristicFilter]
) -> tuple[list[tuple[str, str] | None], Counter[str]]:
    """The first failing rule's ``(reason, detail)`` per doc (None: kept) and how often each reason fails."""
    fails: Counter[str] = Counter()
    verdicts: list[tuple[str, str] | None] = []
    for d, s in zip(docs, scores, strict=True):
        first = None
        for f in filters:
            v = f.check(s, d)
            if v is not None:
                fails[v[0]] += 1
                first = first or v
        verdicts.append(first)
    return verdicts, fails


def _skipped(docs: list[Doc], scores: list[dict[str, float]], filters: list[HeuristicFilter]) -> Counter[str]:
    """``skipped/<rule>/<lang>``: docs a language-dependent rule could not score (no list, no reference)."""
    skipped: Counter[str] = Counter()
    for f in filters:
        key = LANGUAGE_RULES.get(f.name)
        if key is None:
            continue
        for d, s in zip(docs, scores, strict=True):
            if math.isnan(s[key]):
                skipped[f"skipped/{f.name}/{d.lang}"] += 1
    return skipped


def heuristic_filter(
    df: pd.DataFrame, cfg: FilterConfig, reference: Mapping[str, UnigramReference] | None = None
) -> StepResult:
    """Score every doc with every enabled rule, drop it on the first failing rule (reason + detail).

    ``reference``: per-language unigram counts for the KL rule; fitted on ``df`` when None (pass one fitted
    on the whole corpus when running shard by shard). Stats: ``fails/<reason>`` counts every rule a doc
    fails (a doc can fail several), drops are counted once under the first reason; ``skipped/<rule>/<lang>``
    counts docs of languages a rule does not apply to (no stop-word list, too few docs for a KL reference).
    """
    for col in ("id", "url", "text"):
        if col not in df.columns:
            raise KeyError(f"heuristic_filter: input lacks column {col!r}; has {', '.join(df.columns)}")
    if reference is None and "kl_outlier" in cfg.enabled:
        reference = fit_kl_reference(df, cfg)
    filters = build_filters(cfg, reference)
    langs = df["lang"].astype(str).tolist() if "lang" in df.columns else ["und"] * len(df)
    docs = [
        Doc(t, lang, char_words=lang in cfg.char_word_langs)
        for t, lang in zip(df["text"].astype(str), langs, strict=True)
    ]
    scores = [{k: v for f in filters for k, v in f.scores(d).items()} for d in docs]
    kl = next((f for f in filters if isinstance(f, KLOutlierFilter)), None)
    if kl is not None and cfg.kl_top_fraction > 0:
        kl.top_thresholds = _kl_top_thresholds(docs, scores, cfg.kl_top_fraction)
    verdicts, fails = _first_failures(docs, scores, filters)

    drop = np.array([v is not None for v in verdicts], dtype=bool)
    score_frame = pd.DataFrame(scores, index=df.index)
    kept = df.drop(columns=[c for c in score_frame.columns if c in df.columns]).join(score_frame)[~drop]
    kept = kept.reset_index(drop=True)
    if drop.any():
        rows = df[drop]
        dropped = pd.DataFrame({
            "id": rows["id"].to_numpy(), "url": rows["url"].to_numpy(),
            "reason": [v[0] for v in verdicts if v is not None],
            "detail": [v[1] for v in verdicts if v is not None],
        })  # fmt: skip
    else:
        dropped = empty_dropped()
    stats: dict[str, float | int] = {f"fails/{r}": n for r, n in sorted(fails.items())}
    stats.update(sorted(_skipped(docs, scores, filters).items()))
    stats["kl_reference_langs"] = len(reference or {})
    return StepResult(kept=kept, dropped=dropped, stats=stats)
