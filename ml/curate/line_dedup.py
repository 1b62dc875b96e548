"""Line-level dedup à la ccNet (Llama 3 paper §3.1.1: remove lines appearing more than 6 times
in each bucket of 30M docs).

Documents are taken in order and cut into buckets of ``bucket_size`` consecutive documents. In a bucket every
line is normalised (lowercase, digits → 0, Unicode punctuation and control characters removed, whitespace
collapsed, as ccNet's ``normalize_for_dedup`` does) and hashed to a 64-bit xxhash; only these 8-byte hashes
are counted, never the lines. A line whose hash occurs more than ``max_occurrences`` times in the bucket
(counting every occurrence, also repeats inside one document) is removed from every document of the bucket:
navigation menus, cookie notices and footers go, the text around them stays.

Deliberate difference from ccNet (``keep_headings``, on by default): a section heading — a line of at most
four upper-case words and nothing else, such as a man page's ``NAME``, ``SYNOPSIS``, ``SEE ALSO`` or
``BEZEICHNUNG`` — is structure, not boilerplate: it is never counted or removed. ccNet's rule would strip
every man page of its headings, since they are the most repeated lines of all.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import xxhash

from ml.config import ConfigError, StageConfig
from ml.curate.steps import StepResult, empty_dropped, make_dropped


@dataclass(frozen=True)
class LineDedupConfig(StageConfig):
    """ccNet-style line dedup settings."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"bucket_size": 2_000},  # chosen: the tiny crawl fits in one bucket
        "small": {"bucket_size": 200_000},  # chosen: one bucket per ~1 GB of text on one machine
        "8b": {"bucket_size": 30_000_000},  # Llama 3 paper §3.1.1
        "70b": {"bucket_size": 30_000_000},  # Llama 3 paper §3.1.1
        "405b": {"bucket_size": 30_000_000},  # Llama 3 paper §3.1.1
    }

    max_occurrences: int = 6  # §3.1.1: lines appearing more than 6 times in a bucket are removed
    bucket_size: int = 30_000_000  # §3.1.1: buckets of 30M documents
    min_line_chars: int = 1  # ccNet: every non-empty normalised line counts (raise to spare short lines)
    min_doc_chars: int = 1  # chosen: only docs left with no text are dropped; later filters judge length
    keep_headings: bool = True  # chosen: upper-case section headings are structure (module docstring)

    def __post_init__(self) -> None:
        for name in ("max_occurrences", "bucket_size", "min_line_chars", "min_doc_chars"):
            if getattr(self, name) < 1:
                raise ConfigError(f"LineDedupConfig.{name}: {getattr(self, name)} must be >= 1")


_DIGITS = re.compile(r"\d")
_SPACES = re.compile(r"\s+")


@cache
def _strip_table() -> dict[int, None]:
    """Code points removed before hashing: Unicode punctuation (P*) and control/format chars (Cc, Cf)."""
    return {
        cp: None
        for cp in range(sys.maxunicode + 1)
        if unicodedata.category(chr(cp))[0] == "P" or unicodedata.category(chr(cp)) in ("Cc", "Cf")
        if chr(cp) not in "\t\n\r "
    }


def normalize_line(line: str) -> str:
    """ccNet dedup normalisation: lowercase, digits → 0, punctuation/controls removed, whitespace collapsed."""
    line = _DIGITS.sub("0", line.lower())
    line = line.translate(_strip_table())
    return _SPACES.sub(" ", line).strip()


def line_hash(normalized: str) -> int:
    """64-bit xxhash of a normalised line (as an unsigned int)."""
    return xxhash.xxh64_intdigest(normalized.encode("utf-8", "surrogatepass"))


def is_heading(line: str) -> bool:
    """A section heading: 1–4 words of upper-case letters only (``NAME``, ``SEE ALSO``, ``ÜBERSICHT``)."""
    words = line.split()
    return 0 < len(words) <= 4 and all(w.isalpha() and w.isupper() for w in words)


def _doc_hashes(text: str, min_chars: int, keep_headings: bool = False) -> np.ndarray:
    """Hashes (uint64) of the lines of ``text``; lines too short to consider, and headings when
    ``keep_headings``, get 0 (never removed)."""
    lines = text.split("\n")
    hashes = np.zeros(len(lines), dtype=np.uint64)
    for i, line in enumerate(lines):
        if keep_headings and is_heading(line):
            continue
        norm = normalize_line(line)
        if len(norm) >= min_chars:
            hashes[i] = line_hash(norm) or 1  # 0 is reserved for "not considered"
    return hashes


def _remove_frequent_lines(texts: list[str], cfg: LineDedupConfig) -> tuple[list[str], np.ndarray, int]:
    """``(new texts, lines removed per doc, lines seen)``: per bucket of ``cfg.bucket_size`` docs, lines
    whose hash occurs more than ``cfg.max_occurrences`` times are cut."""
    new_texts: list[str] = []
    removed_counts = np.zeros(len(texts), dtype=np.int64)
    lines_in = 0
    for start in range(0, len(texts), cfg.bucket_size):
        # pass 1: 8-byte hashes per line, counted over the bucket
        bucket = [
            _doc_hashes(t, cfg.min_line_chars, cfg.keep_headings)
            for t in texts[start : start + cfg.bucket_size]
        ]
        all_hashes = np.concatenate(bucket) if bucket else np.zeros(0, np.uint64)
        lines_in += int(all_hashes.size)
        uniq, counts = np.unique(all_hashes[all_hashes != 0], return_counts=True)
        frequent = uniq[counts > cfg.max_occurrences]
        del all_hashes, uniq, counts
        # pass 2: re-split each text and drop its frequent lines
        for j, hashes in enumerate(bucket):
            drop = np.isin(hashes, frequent)
            text = texts[start + j]
            if drop.any():
                lines = text.split("\n")
                text = "\n".join(line for line, d in zip(lines, drop, strict=True) if not d).strip()
            removed_counts[start + j] = int(drop.sum())
            new_texts.append(text)
    return new_texts, removed_counts, lines_in


def line_dedup(df: pd.DataFrame, cfg: LineDedupConfig) -> StepResult:
    """Remove lines seen more than ``max_occurrences`` times per bucket; adds ``lines_removed``.

    Updates ``text`` (and ``n_chars``/``n_words`` when present). Documents left with fewer than
    ``min_doc_chars`` characters are dropped with reason ``empty_after_line_dedup``.
    """
    for col in ("id", "url", "text"):
        if col not in df.columns:
            raise KeyError(f"line_dedup: input lacks column {col!r}; has {', '.join(df.columns)}")
    texts = df["text"].astype(str).tolist()
    new_texts, removed_counts, lines_in = _remove_frequent_lines(texts, cfg)

    out = df.copy()
    out["text"] = new_texts
    out["lines_removed"] = removed_counts
    chars_in = sum(len(t) for t in texts)
    chars_out = sum(len(t) for t in new_texts)
    if "n_chars" in out.columns:
        out["n_chars"] = np.array([len(t) for t in new_texts], dtype=np.int64)
    if "n_words" in out.columns:
        out["n_words"] = np.array([len(t.split()) for t in new_texts], dtype=np.int64)
    short = np.array([len(t) < cfg.min_doc_chars for t in new_texts], dtype=bool)
    kept = out[~short].reset_index(drop=True)
    dropped = (
        make_dropped(
            out[short],
            "empty_after_line_dedup",
            out.loc[short, "lines_removed"].map(lambda n: f"{n} lines removed"),
        )
        if short.any()
        else empty_dropped()
    )
    lines_removed = int(removed_counts.sum())
    stats = {
        "lines_in": lines_in,
        "lines_removed": lines_removed,
        "fraction_lines_removed": lines_removed / lines_in if lines_in else 0.0,
        "chars_in": chars_in,
        "chars_removed": chars_in - chars_out,
        "fraction_chars_removed": (chars_in - chars_out) / chars_in if chars_in else 0.0,
        "buckets": -(-len(texts) // cfg.bucket_size),
    }
    return StepResult(kept=kept, dropped=dropped, stats=stats)
