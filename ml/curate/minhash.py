"""Document-level MinHash near-duplicate removal (Llama 3 paper §3.1.1: "global document-level MinHash",
no parameters given).

Pipeline: text -> word n-gram shingles -> one hash per shingle -> MinHash signature (``num_perm`` values) ->
LSH candidates (datasketch ``MinHashLSH``, in memory or in Redis) -> candidate pairs whose Jaccard is >=
``threshold`` -> connected components -> one kept document per cluster. The paper publishes no MinHash
parameter (shingle size, permutations, bands, threshold); every one is a documented ``MinHashConfig`` field.

Verification (``verify``). "exact" (default) recomputes the 64-bit shingle-hash sets of the candidate docs
only and takes their exact Jaccard, so precision is 1 w.r.t. the exact shingle Jaccard (up to 64-bit hash
collisions) and recall is set by the LSH banding alone: ``P(candidate | J) = 1 - (1 - J**rows)**bands``,
0.998 at J = 0.8 for the default 21 bands x 6 rows (``candidate_probability``). "estimate" uses the share of
equal signature values, whose noise (std ~0.035 at J = 0.8, 128 permutations) flips pairs near the threshold.

Tokenization (``words``): the text is lowercased (``str.lower``); a word is a maximal run of ASCII digits,
ASCII lowercase letters, or non-ASCII characters; everything else (whitespace, ASCII punctuation, control
characters) separates words. Scripts without spaces (CJK) therefore give long "words"; per-language dedup
keeps that harmless. A shingle is ``n`` consecutive words joined by one space; a document with
``0 < k < n`` words has the single shingle of all its words, a document without words has no shingle
(it is never a near-duplicate).

Shingle hash (``shingle_hash64``): ``h = sum_i byte_i * P**(len-1-i) mod 2**64`` over the shingle's UTF-8
bytes (a polynomial hash, Horner order), mixed with the 64-bit MurmurHash3 finalizer; ``shingle_hash32``, the
value signatures use, is its top 32 bits. The polynomial form composes over words (H(x " " y) from H(x),
H(y) and |y|), so each word is hashed once. (Polynomial hashes modulo 2**64 have known adversarial
collisions on crafted strings thousands of bytes long; natural text does not produce them.)

Engines (``engine``). "numba": one compiled pass per document (``@njit(cache=True, nogil=True)``) from the
UTF-8 bytes of a batch (joined buffer + offsets): branch-free word boundaries and word hashes, shingle hashes
by composing word hashes, then the ``num_perm``-wide running minimum of the permuted hashes (SIMD over
permutations). ASCII is lowercased on the bytes; a document holding a non-ASCII character that ``str.lower``
changes is lowercased by ``str.lower`` first, so the words are exactly ``words()``'s. "numpy" computes the
same values with prefix sums over whole batches (no numba needed, several times slower).

Signatures are bit-for-bit those of ``datasketch.MinHash(num_perm, seed, scheme=..., hashfunc=shingle_hash32)``
updated with the same shingles: the permutations ``(a, b)`` are drawn from ``np.random.RandomState(seed)``
exactly as datasketch draws them, and the arithmetic replicates its two schemes:

* ``affine32`` (datasketch >= 2.0 default): ``hv = fmix32(h)``, ``phv = a * hv + b mod 2**32``;
* ``legacy`` (datasketch < 2.0): ``phv = ((a * h + b) mod 2**64) mod (2**61 - 1)``, lowest 32 bits
  (the ``mod 2**64`` is numpy's uint64 wraparound, which datasketch also has).
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import redis
from datasketch import LeanMinHash, MinHashLSH

from ml.config import ConfigError, StageConfig
from ml.curate.steps import StepResult, empty_dropped, make_dropped

try:
    import numba
except ImportError:  # the numpy path computes the same values, several times slower
    numba = None

KEEP_RULES = ("longest", "newest", "first")
SCHEMES = ("affine32", "legacy")
STORAGES = ("memory", "redis")
VERIFY_MODES = ("exact", "estimate")
ENGINES = ("auto", "numba", "numpy")

MAX_HASH = (1 << 32) - 1  # datasketch's empty-slot value (both schemes); also the largest hash value
MERSENNE_PRIME = (1 << 61) - 1
_M64 = (1 << 64) - 1

# Polynomial base of the shingle hash: an odd 64-bit constant (2**64 / golden ratio), so it is invertible mod 2**64.
_P = 0x9E3779B97F4A7C15
_P_INV = pow(_P, -1, 1 << 64)
_SPACE = 0x20
# MurmurHash3 finalizer constants (64-bit shingle mix; 32-bit is datasketch's affine32 pre-mix).
_FMIX64 = (33, 0xFF51AFD7ED558CCD, 33, 0xC4CEB9FE1A85EC53, 33)
_FMIX32 = (16, 0x85EBCA6B, 13, 0xC2B2AE35, 16)

_WORD_RE = re.compile("[0-9a-z\u0080-\U0010ffff]+")
# chosen: numpy temporaries (~8 uint64 per byte) of a 256 KB batch stay in cache (measured fastest on man pages);
# the numba kernel needs no temporaries, so its batches only bound the size of the joined UTF-8 buffer.
_NUMPY_BATCH_CHARS = 1 << 18
_NUMBA_BATCH_CHARS = 1 << 24


@dataclass(frozen=True)
class MinHashConfig(StageConfig):
    """MinHash near-dedup settings. The paper publishes none; defaults follow FineWeb/datatrove and datasketch.

    datatrove's ``MinhashConfig`` (used for FineWeb) takes 5-word shingles and 112 hashes in 14 bands of 8
    (candidate threshold ~0.72); datasketch defaults to ``num_perm=128, seed=1``. We keep datasketch's 128
    permutations, band them for recall at ``threshold`` and confirm candidates with the exact Jaccard.
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"tiny": {"batch_size": 64}, "small": {}}

    num_perm: int = 128  # chosen: datasketch default; std of the Jaccard estimate <= 0.5/sqrt(128) = 0.044
    ngram: int = 5  # datatrove/FineWeb MinhashConfig.n_grams
    threshold: float = 0.8  # chosen: Jaccard of the shingle sets at/above which two docs are duplicates
    # LSH bands x rows. chosen for recall at the threshold: P(candidate | J) = 1 - (1 - J**rows)**bands is
    # 0.9983 at J=0.8 for 21 x 6 (126 of 128 values), while only 28% of pairs at J=0.5 and 1.5% at J=0.3 become
    # candidates. 16 x 8 would miss 5.3% of pairs at J=0.8, 18 x 7 1.4%; 32 x 4 misses none but makes 87% of
    # J=0.5 pairs candidates. None/None = datasketch's false-positive/negative optimum for threshold, which for
    # 0.8 @ 128 is 9 x 13 (P(candidate | J=0.8) = 0.40, too strict for dedup).
    bands: int | None = 21
    rows: int | None = 6
    # How candidate pairs are confirmed. "exact": Jaccard of the docs' 64-bit shingle-hash sets (precision 1
    # w.r.t. the exact shingle Jaccard; only candidate docs are re-hashed). "estimate": share of equal
    # signature values (datasketch's MinHash.jaccard; +-0.035 std at J=0.8, so pairs near the threshold flip).
    verify: str = "exact"
    seed: int = 1  # datasketch and datatrove default; every worker must use the same seed
    scheme: str = "affine32"  # datasketch >= 2.0 default (unbiased); "legacy" matches datasketch < 2.0
    keep: str = (
        "longest"  # chosen: the most complete copy survives; "newest" uses fetch_time, "first" row order
    )
    batch_size: int = 256  # docs per numpy signature batch (also capped at ~256 K characters)
    engine: str = (
        "auto"  # "numba" (compiled kernel), "numpy" (same values, slower), "auto": numba if installed
    )
    lsh_storage: str = "memory"  # "redis" when several workers share one index
    redis_host: str = "127.0.0.1"
    redis_port: int = 6379
    redis_prefix: str = "minhash"  # key prefix (datasketch "basename") of the Redis index

    def __post_init__(self) -> None:
        name = type(self).__name__
        if self.num_perm < 2:
            raise ConfigError(f"{name}.num_perm must be >= 2, got {self.num_perm}")
        if self.ngram < 1:
            raise ConfigError(f"{name}.ngram must be >= 1, got {self.ngram}")
        if not 0.0 < self.threshold <= 1.0:
            raise ConfigError(f"{name}.threshold must be in (0, 1], got {self.threshold}")
        if (self.bands is None) != (self.rows is None):
            raise ConfigError(f"{name}: set both bands and rows or neither (got {self.bands}, {self.rows})")
        if self.bands is not None and (
            self.bands < 2 or self.rows < 1 or self.bands * self.rows > self.num_perm
        ):
            raise ConfigError(f"{name}: need bands >= 2, rows >= 1, bands*rows <= num_perm={self.num_perm}")
        for key, value, allowed in (
            ("scheme", self.scheme, SCHEMES),
            ("keep", self.keep, KEEP_RULES),
            ("lsh_storage", self.lsh_storage, STORAGES),
            ("verify", self.verify, VERIFY_MODES),
            ("engine", self.engine, ENGINES),
        ):
            if value not in allowed:
                raise ConfigError(f"{name}.{key}={value!r}; choose one of {', '.join(allowed)}")
        if self.batch_size < 1:
            raise ConfigError(f"{name}.batch_size must be >= 1, got {self.batch_size}")


# ---------------------------------------------------------------------------------------------------------
# Reference (one shingle at a time) definitions: what the vectorized code must reproduce.


def words(text: str) -> list[str]:
    """Lowercased words of ``text`` (see the module docstring for what a word is)."""
    return _WORD_RE.findall(text.lower())


def shingles(text: str, n: int = 5) -> list[str]:
    """Word ``n``-grams of ``text`` joined by single spaces, in text order (duplicates kept)."""
    w = words(text)
    if len(w) <= n:
        return [" ".join(w)] if w else []
    return [" ".join(g) for g in zip(*(w[i:] for i in range(n)), strict=False)]


def _fmix64(h: int) -> int:
    s1, m1, s2, m2, s3 = _FMIX64
    h ^= h >> s1
    h = (h * m1) & _M64
    h ^= h >> s2
    h = (h * m2) & _M64
    return h ^ (h >> s3)


def shingle_hash64(shingle: str | bytes) -> int:
    """The 64-bit hash of one shingle (pure Python): polynomial over its UTF-8 bytes, then fmix64."""
    data = shingle.encode("utf-8", "surrogatepass") if isinstance(shingle, str) else shingle
    h = 0
    for byte in data:
        h = (h * _P + byte) & _M64
    return _fmix64(h)


def shingle_hash32(shingle: str | bytes) -> int:
    """The 32-bit hash of one shingle, the top half of ``shingle_hash64`` (pass it to datasketch as ``hashfunc``)."""
    return shingle_hash64(shingle) >> 32


def permutations(num_perm: int, seed: int, scheme: str = "affine32") -> tuple[np.ndarray, np.ndarray]:
    """datasketch's permutation parameters ``(a, b)``, each ``(num_perm,)`` uint64, drawn the same way."""
    gen = np.random.RandomState(seed)
    if scheme == "legacy":
        ab = [
            (gen.randint(1, MERSENNE_PRIME, dtype=np.uint64), gen.randint(0, MERSENNE_PRIME, dtype=np.uint64))
            for _ in range(num_perm)
        ]
        a, b = np.array(ab, dtype=np.uint64).T
        return a.copy(), b.copy()
    if scheme != "affine32":
        raise ValueError(f"unknown MinHash scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a.astype(np.uint64), b.astype(np.uint64)


# ---------------------------------------------------------------------------------------------------------
# numpy path: whole batches at once with prefix sums (used when numba is missing, and as a cross-check).

_IS_WORD_BYTE = np.zeros(256, dtype=bool)  # on lowercased bytes
_IS_WORD_BYTE[ord("0") : ord("9") + 1] = True
_IS_WORD_BYTE[ord("a") : ord("z") + 1] = True
_IS_WORD_BYTE[0x80:] = True  # every byte of a non-ASCII character's UTF-8 encoding
_ASCII_LOWER = np.arange(256, dtype=np.uint8)
_ASCII_LOWER[ord("A") : ord("Z") + 1] += 32


class _Powers:
    """Cached ``P**k`` and ``P**-k`` mod 2**64 for k < size, grown by doubling."""

    def __init__(self) -> None:
        self.pos = np.ones(1, dtype=np.uint64)
        self.neg = np.ones(1, dtype=np.uint64)

    def ensure(self, size: int) -> None:
        if size <= len(self.pos):
            return
        size = 1 << max(16, (size - 1).bit_length())
        for attr, base in (("pos", _P), ("neg", _P_INV)):
            arr = np.full(size, base, dtype=np.uint64)
            arr[0] = 1
            np.multiply.accumulate(arr, out=arr)  # arr[k] = base**k, wrapping mod 2**64
            setattr(self, attr, arr)


_POWERS = _Powers()


def _fmix_np(h: np.ndarray, consts: tuple[int, ...]) -> np.ndarray:
    """MurmurHash3 finalizer in place on a uint64 (``_FMIX64``) or uint32 (``_FMIX32``) array; wraps."""
    s1, m1, s2, m2, s3 = (h.dtype.type(c) for c in consts)
    h ^= h >> s1
    h *= m1
    h ^= h >> s2
    h *= m2
    h ^= h >> s3
    return h


def _numpy_shingle_hashes(texts: Sequence[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every shingle of ``texts`` (in doc order) and the shingle count of each doc.

    Returns ``(hashes (S,) uint64, counts (D,) int64)``; equals ``shingle_hash64`` over ``shingles(t, n)``.
    """
    encoded = [t.lower().encode("utf-8", "surrogatepass") for t in texts]
    # Docs joined by "\n" with a leading and trailing "\n": every word is bounded by non-word bytes.
    buf = np.frombuffer(b"\n" + b"\n".join(encoded) + b"\n", dtype=np.uint8)  # (B,)
    doc_end = np.cumsum(
        np.fromiter((len(e) + 1 for e in encoded), dtype=np.int64, count=len(encoded))
    )  # (D,)
    _POWERS.ensure(len(buf) + 1)

    is_word = _IS_WORD_BYTE[buf]  # (B,)
    edges = np.flatnonzero(is_word[1:] != is_word[:-1]) + 1  # alternating word starts and ends
    starts, ends = edges[0::2], edges[1::2]  # (W,), word i is buf[starts[i]:ends[i]]

    # Per-word polynomial hash from prefix sums: sum_j byte_j * P**-j, rescaled by P**(end-1).
    prefix = buf.astype(np.uint64)
    prefix *= _POWERS.neg[: len(buf)]
    np.cumsum(prefix, out=prefix)
    word_poly = (prefix[ends - 1] - prefix[starts - 1]) * _POWERS.pos[ends - 1]  # (W,)

    # Shingles live in a virtual stream "w0 w1 w2 ... " (one space after each word); word i ends at c[i+1].
    c = np.zeros(len(starts) + 1, dtype=np.int64)
    np.cumsum(ends - starts + 1, out=c[1:])
    token = word_poly * np.uint64(_P) + np.uint64(_SPACE)  # hash of "word "
    acc = np.zeros(len(starts) + 1, dtype=np.uint64)
    np.cumsum(token * _POWERS.neg[c[1:]], out=acc[1:])  # (W+1,)

    # Shingle windows [lo, hi) over words: n words, or all words of a doc with fewer than n.
    n_words = len(starts)
    doc_word_end = np.searchsorted(starts, doc_end)  # (D,) one past each doc's last word
    doc_word_start = np.concatenate(([0], doc_word_end[:-1]))
    words_per_doc = doc_word_end - doc_word_start
    window = np.ones(n_words, dtype=bool)  # window starting at word j is valid
    tail = (doc_word_end[:, None] - np.arange(1, n, dtype=np.int64)[None, :]).ravel()  # last n-1 words
    window[tail[tail >= np.repeat(doc_word_start, n - 1)]] = False
    short = np.flatnonzero((words_per_doc > 0) & (words_per_doc < n))
    window[doc_word_start[short]] = True
    lo = np.flatnonzero(window)  # (S,)
    hi = lo + n
    hi[np.searchsorted(lo, doc_word_start[short])] = doc_word_end[short]
    counts = np.where(words_per_doc >= n, words_per_doc - n + 1, (words_per_doc > 0).astype(np.int64))

    # poly("w_lo ... w_hi-1 ") then strip the trailing space: (poly - SPACE) * P**-1.
    poly = (acc[hi] - acc[lo]) * _POWERS.pos[c[hi]]
    poly -= np.uint64(_SPACE)
    poly *= np.uint64(_P_INV)
    return _fmix_np(poly, _FMIX64), counts  # (S,), (D,)


def _numpy_signatures(
    texts: Sequence[str], cfg: MinHashConfig, a: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    hashes64, counts = _numpy_shingle_hashes(texts, cfg.ngram)
    hashes = (hashes64 >> np.uint64(32)).astype(np.uint32)  # (S,) the 32-bit shingle hashes
    sig = np.full((len(texts), cfg.num_perm), MAX_HASH, dtype=np.uint64)  # (D, num_perm)
    has = np.flatnonzero(counts)
    if len(has) == 0:
        return sig, counts
    offsets = (np.cumsum(counts) - counts)[has]  # start of each non-empty doc's shingles
    out = np.empty((cfg.num_perm, len(has)), dtype=np.uint64)
    if cfg.scheme == "affine32":
        hv = _fmix_np(hashes, _FMIX32)
        phv = np.empty_like(hv)  # (S,) uint32, wraps mod 2**32
        a32, b32 = a.astype(np.uint32), b.astype(np.uint32)
        for k in range(cfg.num_perm):
            np.multiply(hv, a32[k], out=phv)
            phv += b32[k]
            out[k] = np.minimum.reduceat(phv, offsets)
    else:
        hv = hashes.astype(np.uint64)
        phv = np.empty_like(hv)
        hi = np.empty_like(hv)
        p, mask, s61 = np.uint64(MERSENNE_PRIME), np.uint64(MAX_HASH), np.uint64(61)
        for k in range(cfg.num_perm):
            np.multiply(hv, a[k], out=phv)
            phv += b[k]  # (a*h + b) mod 2**64, as datasketch's uint64 arithmetic
            np.right_shift(phv, s61, out=hi)
            phv &= p
            phv += hi  # x mod (2**61-1) == (x & p) + (x >> 61), then at most one subtraction of p
            phv -= p * (phv >= p)
            phv &= mask
            out[k] = np.minimum.reduceat(phv, offsets)
    sig[has] = out.T
    return sig, counts


def _numpy_shingle_sets(texts: Sequence[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    hashes, counts = _numpy_shingle_hashes(texts, n)
    bounds = np.concatenate(([0], np.cumsum(counts)))
    sets = [np.unique(hashes[bounds[d] : bounds[d + 1]]) for d in range(len(texts))]
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum([len(s) for s in sets], out=offsets[1:])
    values = np.concatenate(sets) if sets else np.zeros(0, dtype=np.uint64)
    return values.astype(np.uint64, copy=False), offsets


def _numpy_set_jaccard(values: np.ndarray, offsets: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    out = np.zeros(len(pairs), dtype=np.float64)
    for m, (i, j) in enumerate(pairs.tolist()):
        x, y = values[offsets[i] : offsets[i + 1]], values[offsets[j] : offsets[j + 1]]
        inter = len(np.intersect1d(x, y, assume_unique=True))
        union = len(x) + len(y) - inter
        out[m] = inter / union if union else 0.0
    return out


# ---------------------------------------------------------------------------------------------------------
# numba path: one compiled pass per document, bytes -> words -> shingle hashes -> min over permutations.


def _kernel(fn):
    """``fn`` compiled by numba (cached on disk, GIL released) when numba is installed; else ``fn`` unused."""
    return numba.njit(cache=True, nogil=True)(fn) if numba is not None else fn


# numpy scalars so that numba types them as uint64/uint32 constants (Python ints > 2**63 would not be).
_U64_0, _U64_1 = np.uint64(0), np.uint64(1)
_U64_P, _U64_P_INV = np.uint64(_P), np.uint64(_P_INV)
_U64_SPACE, _U64_32 = np.uint64(_SPACE), np.uint64(32)
_U64_MERSENNE, _U64_61, _U64_MAX32 = np.uint64(MERSENNE_PRIME), np.uint64(61), np.uint64(MAX_HASH)
_F64_S, _F64_M1, _F64_M2 = np.uint64(_FMIX64[0]), np.uint64(_FMIX64[1]), np.uint64(_FMIX64[3])
_F32_S1, _F32_S2 = np.uint32(_FMIX32[0]), np.uint32(_FMIX32[2])
_F32_M1, _F32_M2 = np.uint32(_FMIX32[1]), np.uint32(_FMIX32[3])
_U32_MAX = np.uint32(MAX_HASH)
# Per raw byte: all ones if it is a word byte after ASCII lowercasing, else 0; and its lowercased value or 0.
_WORD_MASK = np.where(_IS_WORD_BYTE[_ASCII_LOWER], np.uint64(_M64), np.uint64(0)).astype(np.uint64)
_WORD_VALUE = np.where(_IS_WORD_BYTE[_ASCII_LOWER], _ASCII_LOWER, 0).astype(np.uint64)


@_kernel
def _nb_fmix64(h):
    h ^= h >> _F64_S
    h *= _F64_M1
    h ^= h >> _F64_S
    h *= _F64_M2
    return h ^ (h >> _F64_S)


@_kernel
def _nb_fmix32(h):
    h ^= h >> _F32_S1
    h = np.uint32(h * _F32_M1)
    h ^= h >> _F32_S2
    h = np.uint32(h * _F32_M2)
    return np.uint32(h ^ (h >> _F32_S1))


@_kernel
def _nb_doc_hashes(buf, lo, hi, n, word_h, word_p, out):
    """Write the 64-bit hashes of the shingles of the doc ``buf[lo:hi]`` (ending in a separator byte) to
    ``out``; return how many. ``word_h``/``word_p``: scratch for each word's polynomial hash and ``P**len``.
    """
    # Pass 1, branch-free over bytes: the running word hash resets to 0 (and P**len to 1) on every
    # separator; the count of words advances on the separator after a word, which records that word.
    n_words = 0
    h, p, prev = _U64_0, _U64_1, _U64_0
    for i in range(lo, hi):
        c = buf[i]
        m = _WORD_MASK[c]  # all ones on a word byte, 0 on a separator
        word_h[n_words] = h
        word_p[n_words] = p
        n_words += np.int64(prev & ~m & _U64_1)
        h = h * (_U64_P & m) + _WORD_VALUE[c]  # Horner step, or 0
        p = p * (_U64_P & m) + (~m & _U64_1)  # P**len, or 1
        prev = m
    if n_words == 0:
        return 0
    # Pass 2: fold each word into "tail" form, H(" " w) = ' ' P^|w| + H(w) and P^(|w|+1), so that
    # H(w0 " " w1 ... ) = H(w0) * P^(|w1|+1) + H(" " w1) ...: one multiply-add per extra word.
    first_h = word_h[0]
    for s in range(n_words):
        q = word_p[s]
        word_h[s] = _U64_SPACE * q + word_h[s]
        word_p[s] = q * _U64_P
    k = min(n, n_words)  # a doc with fewer than n words has one shingle of all of them
    for j in range(n_words - k + 1):
        hj = word_h[j] - _U64_SPACE * (word_p[j] * _U64_P_INV) if j > 0 else first_h
        for s in range(j + 1, j + k):
            hj = hj * word_p[s] + word_h[s]
        out[j] = _nb_fmix64(hj)
    return n_words - k + 1


@_kernel
def _nb_max_doc_len(offsets):
    longest = 0
    for d in range(len(offsets) - 1):
        longest = max(longest, offsets[d + 1] - offsets[d])
    return longest


@_kernel
def _nb_signatures(buf, offsets, n, a, b, legacy, out, counts):
    """Signatures of the docs ``buf[offsets[d]:offsets[d+1]]`` into ``out (D, K)`` uint64, counts into ``counts (D,)``.

    ``a``, ``b``: ``(K,)`` uint32 (affine32) or uint64 (legacy) permutations.
    """
    n_docs, n_perm = out.shape
    hashes = np.empty(_nb_max_doc_len(offsets) // 2 + 2, dtype=np.uint64)  # >= words >= shingles of a doc
    word_h = np.empty_like(hashes)
    word_p = np.empty_like(hashes)
    mins32 = np.empty(n_perm, dtype=np.uint32)
    mins64 = np.empty(n_perm, dtype=np.uint64)
    for d in range(n_docs):
        cnt = _nb_doc_hashes(buf, offsets[d], offsets[d + 1], n, word_h, word_p, hashes)
        counts[d] = cnt
        if legacy:
            mins64[:] = _U64_MAX32
            for s in range(cnt):
                hv = hashes[s] >> _U64_32
                for k in range(n_perm):
                    x = a[k] * hv + b[k]  # wraps mod 2**64 as datasketch's numpy arithmetic
                    x = (x & _U64_MERSENNE) + (x >> _U64_61)
                    if x >= _U64_MERSENNE:
                        x -= _U64_MERSENNE
                    mins64[k] = min(mins64[k], x & _U64_MAX32)
            out[d, :] = mins64
        else:
            mins32[:] = _U32_MAX
            for s in range(cnt):
                hv = _nb_fmix32(np.uint32(hashes[s] >> _U64_32))
                for k in range(n_perm):
                    mins32[k] = min(mins32[k], np.uint32(a[k] * hv + b[k]))  # wraps mod 2**32
            out[d, :] = mins32


@_kernel
def _nb_shingle_sets(buf, offsets, n):
    """Sorted unique 64-bit shingle hashes of each doc: ``(values (V,) uint64, set offsets (D+1,) int64)``."""
    n_docs = len(offsets) - 1
    hashes = np.empty(_nb_max_doc_len(offsets) // 2 + 2, dtype=np.uint64)
    word_h = np.empty_like(hashes)
    word_p = np.empty_like(hashes)
    values = np.empty(len(buf) // 2 + n_docs + 1, dtype=np.uint64)
    set_offsets = np.zeros(n_docs + 1, dtype=np.int64)
    pos = 0
    for d in range(n_docs):
        cnt = _nb_doc_hashes(buf, offsets[d], offsets[d + 1], n, word_h, word_p, hashes)
        doc = np.sort(hashes[:cnt])
        for s in range(cnt):
            if s == 0 or doc[s] != doc[s - 1]:
                values[pos] = doc[s]
                pos += 1
        set_offsets[d + 1] = pos
    return values[:pos].copy(), set_offsets


@_kernel
def _nb_set_jaccard(values, offsets, pairs, out):
    """Exact Jaccard of sorted sets ``values[offsets[i]:offsets[i+1]]`` for each pair, by merging."""
    for m in range(len(pairs)):
        i, j = pairs[m, 0], pairs[m, 1]
        p, p_end, q, q_end = offsets[i], offsets[i + 1], offsets[j], offsets[j + 1]
        size = (p_end - p) + (q_end - q)
        inter = 0
        while p < p_end and q < q_end:
            x, y = values[p], values[q]
            if x == y:
                inter += 1
                p += 1
                q += 1
            elif x < y:
                p += 1
            else:
                q += 1
        out[m] = inter / (size - inter) if size > inter else 0.0


@_kernel
def _nb_needs_lower(buf, words, offsets, cased):
    """``(D,)`` bool: doc holds a non-ASCII character that ``str.lower`` changes (``cased``, by code point).

    ``words``: ``buf`` read as uint64, so that runs of ASCII are skipped 8 bytes at a time.
    """
    out = np.zeros(len(offsets) - 1, dtype=np.bool_)
    high = np.uint64(0x8080808080808080)
    i = 0
    while i < len(buf):
        if i % 8 == 0 and i // 8 < len(words) and (words[i // 8] & high) == 0:
            i += 8
            continue
        c = np.int64(buf[i])
        if c < 0xC0:  # ASCII or a continuation byte
            i += 1
            continue
        if c < 0xE0:
            cp = ((c & 0x1F) << 6) | (np.int64(buf[i + 1]) & 0x3F)
        elif c < 0xF0:
            cp = ((c & 0x0F) << 12) | ((np.int64(buf[i + 1]) & 0x3F) << 6) | (np.int64(buf[i + 2]) & 0x3F)
        else:
            cp = ((c & 0x07) << 18) | ((np.int64(buf[i + 1]) & 0x3F) << 12)
            cp |= ((np.int64(buf[i + 2]) & 0x3F) << 6) | (np.int64(buf[i + 3]) & 0x3F)
        if cp >= len(cased) or cased[cp]:
            d = np.searchsorted(offsets, i, side="right") - 1
            out[d] = True
            i = offsets[d + 1]  # the rest of this doc need not be read
        else:
            i += 1
    return out


_CASED: list[np.ndarray] = []


def _cased_table() -> np.ndarray:
    """``(0x20000,)`` bool: code points below U+20000 that ``str.lower`` changes (built once, ~30 ms).

    Higher code points (CJK extensions, tags, private use) count as changed, which only costs speed.
    """
    if not _CASED:
        table = np.zeros(0x20000, dtype=bool)
        table[[c for c in range(0x80, 0x20000) if chr(c).lower() != chr(c)]] = True
        _CASED.append(table)
    return _CASED[0]


def _join(parts: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """``(bytes (B,) uint8, offsets (D+1,) int64)``: doc ``d`` is ``buf[offsets[d]:offsets[d+1]]``, ending in "\\n"."""
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, parts), dtype=np.int64, count=len(parts)) + 1, out=offsets[1:])
    return np.frombuffer(b"\n".join([*parts, b""]), dtype=np.uint8), offsets


def _encode(texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """UTF-8 of ``texts`` for the kernels as ``[(doc numbers, buf, offsets)]`` (``_join`` layout).

    The kernels lowercase ASCII bytes. A doc holding a non-ASCII character that ``str.lower`` changes
    (rare outside non-Latin scripts) comes a second time, lowercased by ``str.lower``, in a second entry
    whose results replace the first's, so the words always equal ``words()``.
    """
    parts = [t.encode("utf-8", "surrogatepass") for t in texts]
    buf, offsets = _join(parts)
    out = [(np.arange(len(texts)), buf, offsets)]
    if not all(t.isascii() for t in texts):
        words = np.frombuffer(buf, dtype=np.uint64, count=len(buf) // 8)
        redo = np.flatnonzero(_nb_needs_lower(buf, words, offsets, _cased_table()))
        if len(redo):
            out.append(
                (redo, *_join([texts[d].lower().encode("utf-8", "surrogatepass") for d in redo.tolist()]))
            )
    return out


# ---------------------------------------------------------------------------------------------------------
# Public signature and exact-Jaccard API (engine chosen by cfg.engine).


def _engine(cfg: MinHashConfig) -> str:
    if cfg.engine == "numba" and numba is None:
        raise RuntimeError("MinHashConfig.engine='numba' but numba is not installed (pip install numba)")
    if cfg.engine == "auto":
        return "numba" if numba is not None else "numpy"
    return cfg.engine


def _batches(texts: Sequence[str], max_docs: int, max_chars: int) -> list[tuple[int, int]]:
    """``[(start, stop)]`` runs of at most ``max_docs`` docs and ``max_chars`` characters (>= 1 doc each)."""
    out, i = [], 0
    while i < len(texts):
        j, size = i, 0
        while j < len(texts) and j - i < max_docs and (j == i or size + len(texts[j]) <= max_chars):
            size += len(texts[j])
            j += 1
        out.append((i, j))
        i = j
    return out


def signatures_and_counts(texts: Sequence[str], cfg: MinHashConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(signatures (N, num_perm) uint64, shingle counts (N,) int64)``; a doc without shingles has count 0."""
    engine = _engine(cfg)
    a, b = permutations(cfg.num_perm, cfg.seed, cfg.scheme)
    texts = ["" if t is None else t for t in texts]
    sigs = np.empty((len(texts), cfg.num_perm), dtype=np.uint64)
    counts = np.empty(len(texts), dtype=np.int64)
    if engine == "numba":
        legacy = cfg.scheme == "legacy"
        if not legacy:
            a, b = a.astype(np.uint32), b.astype(np.uint32)
        for i, j in _batches(texts, 1 << 30, _NUMBA_BATCH_CHARS):
            for docs, buf, offsets in _encode(texts[i:j]):
                if len(docs) == j - i:  # every doc of the batch: write in place
                    _nb_signatures(buf, offsets, cfg.ngram, a, b, legacy, sigs[i:j], counts[i:j])
                    continue
                out, n = (
                    np.empty((len(docs), cfg.num_perm), dtype=np.uint64),
                    np.empty(len(docs), dtype=np.int64),
                )
                _nb_signatures(buf, offsets, cfg.ngram, a, b, legacy, out, n)
                sigs[i + docs], counts[i + docs] = out, n
        return sigs, counts
    for i, j in _batches(texts, cfg.batch_size, _NUMPY_BATCH_CHARS):
        sigs[i:j], counts[i:j] = _numpy_signatures(texts[i:j], cfg, a, b)
    return sigs, counts


def signatures(texts: Sequence[str], cfg: MinHashConfig) -> np.ndarray:
    """MinHash signatures ``(N, num_perm)`` uint64 of ``texts``, equal to datasketch's (module docstring)."""
    return signatures_and_counts(texts, cfg)[0]


def shingle_sets(texts: Sequence[str], cfg: MinHashConfig) -> tuple[np.ndarray, np.ndarray]:
    """Each doc's set of 64-bit shingle hashes (``shingle_hash64``), sorted, as CSR arrays.

    Returns ``(values (V,) uint64, offsets (N+1,) int64)``: doc ``i``'s set is ``values[offsets[i]:offsets[i+1]]``.
    """
    texts = ["" if t is None else t for t in texts]
    if _engine(cfg) == "numba":
        parts = []
        for i, j in _batches(texts, 1 << 30, _NUMBA_BATCH_CHARS):
            (_, buf, offs), *redo = _encode(texts[i:j])
            values, offs = _nb_shingle_sets(buf, offs, cfg.ngram)
            for docs, buf, sub_offs in redo:  # docs lowercased by str.lower replace their first sets
                sub_values, sub_offs = _nb_shingle_sets(buf, sub_offs, cfg.ngram)
                sets = np.split(values, offs[1:-1])
                for k, d in enumerate(docs.tolist()):
                    sets[d] = sub_values[sub_offs[k] : sub_offs[k + 1]]
                values = np.concatenate(sets)
                offs = np.concatenate(([0], np.cumsum([len(s) for s in sets])))
            parts.append((values, offs))
    else:
        parts = [
            _numpy_shingle_sets(texts[i:j], cfg.ngram)
            for i, j in _batches(texts, cfg.batch_size, _NUMPY_BATCH_CHARS)
        ]
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    values = np.concatenate([v for v, _ in parts]) if parts else np.zeros(0, dtype=np.uint64)
    np.cumsum(np.concatenate([np.diff(o) for _, o in parts]) if parts else [], out=offsets[1:])
    return values, offsets


def set_jaccard(values: np.ndarray, offsets: np.ndarray, pairs: np.ndarray, cfg: MinHashConfig) -> np.ndarray:
    """Exact Jaccard ``(M,)`` float64 of the CSR sets (``shingle_sets``) of each pair ``(i, j)``; 0 for two empty sets."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if _engine(cfg) == "numba":
        out = np.empty(len(pairs), dtype=np.float64)
        _nb_set_jaccard(values, offsets, pairs, out)
        return out
    return _numpy_set_jaccard(values, offsets, pairs)


def exact_jaccard(texts: Sequence[str], pairs: np.ndarray, cfg: MinHashConfig) -> np.ndarray:
    """Exact shingle-set Jaccard ``(M,)`` of ``texts[i]``, ``texts[j]`` for each pair; hashes only the docs in ``pairs``."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if len(pairs) == 0:
        return np.zeros(0, dtype=np.float64)
    return _exact_jaccard_among(texts, np.unique(pairs), cfg)(pairs)


def _exact_jaccard_among(
    texts: Sequence[str], docs: np.ndarray, cfg: MinHashConfig
) -> Callable[[np.ndarray], np.ndarray]:
    """Exact Jaccard of pairs of rows among ``docs`` (sorted, unique), their shingle sets hashed once."""
    values, offsets = shingle_sets([texts[i] for i in docs.tolist()], cfg)
    return lambda pairs: set_jaccard(values, offsets, np.searchsorted(docs, pairs), cfg)


def candidate_probability(jaccard: float, bands: int, rows: int) -> float:
    """LSH S-curve: probability that two docs of Jaccard ``jaccard`` share a bucket, ``1 - (1 - J**rows)**bands``."""
    return 1.0 - (1.0 - jaccard**rows) ** bands


# ---------------------------------------------------------------------------------------------------------
# LSH (datasketch MinHashLSH, dict or Redis storage), candidate pairs, clusters.


def make_lsh(cfg: MinHashConfig, basename: str | None = None) -> MinHashLSH:
    """A datasketch ``MinHashLSH`` for ``cfg``; Redis-backed when ``cfg.lsh_storage == "redis"``.

    LSH objects created with the same ``basename`` on the same Redis server share one index (several workers).
    """
    params = (cfg.bands, cfg.rows) if cfg.bands is not None else None
    storage: dict[str, Any] | None = None
    if cfg.lsh_storage == "redis":
        storage = {
            "type": "redis",
            "basename": (basename or cfg.redis_prefix).encode(),
            "redis": {"host": cfg.redis_host, "port": cfg.redis_port},
        }
    return MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm, params=params, storage_config=storage)


def lean_minhash(sig: np.ndarray, cfg: MinHashConfig) -> LeanMinHash:
    """A datasketch ``LeanMinHash`` holding one signature row (what ``MinHashLSH`` indexes)."""
    return LeanMinHash(seed=cfg.seed, hashvalues=sig, scheme=cfg.scheme)


def index_signatures(lsh: MinHashLSH, keys: Sequence[str], sigs: np.ndarray, cfg: MinHashConfig) -> None:
    """Insert ``sigs[i]`` under ``keys[i]`` (batched: one Redis pipeline per buffer)."""
    with lsh.insertion_session() as session:
        for key, sig in zip(keys, sigs, strict=True):
            session.insert(key, lean_minhash(sig, cfg), check_duplication=False)


def query_pairs(lsh: MinHashLSH, keys: Sequence[str], sigs: np.ndarray, cfg: MinHashConfig) -> np.ndarray:
    """Candidate pairs ``(M, 2)`` int64 of row numbers ``i < j`` among ``keys`` that share an LSH bucket.

    Keys returned by the index that are not in ``keys`` (docs of other shards) are ignored.
    """
    row = {k: i for i, k in enumerate(keys)}
    pairs: set[tuple[int, int]] = set()
    for i, sig in enumerate(sigs):
        for other in lsh.query(lean_minhash(sig, cfg)):
            j = row.get(other)
            if j is not None and j != i:
                pairs.add((min(i, j), max(i, j)))
    return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)


def estimated_jaccard(sigs: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """MinHash Jaccard estimate (share of equal slots) for each pair, ``(M,)`` float64."""
    if len(pairs) == 0:
        return np.zeros(0, dtype=np.float64)
    return (sigs[pairs[:, 0]] == sigs[pairs[:, 1]]).mean(axis=1)


def pair_similarity(
    texts: Sequence[str], sigs: np.ndarray, pairs: np.ndarray, cfg: MinHashConfig
) -> np.ndarray:
    """Jaccard ``(M,)`` of each pair by ``cfg.verify``: exact over shingle-hash sets, or the MinHash estimate."""
    if cfg.verify == "exact":
        return exact_jaccard(texts, pairs, cfg)
    return estimated_jaccard(sigs, pairs)


def connected_components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Union-find over ``pairs``; returns ``(n,)`` int64 labels = the smallest row number in each component."""
    parent = np.arange(n, dtype=np.int64)

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving
            x = parent[x]
        return x

    for i, j in pairs:
        ri, rj = find(int(i)), find(int(j))
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return np.array([find(x) for x in range(n)], dtype=np.int64)


def _keep_order(df: pd.DataFrame, keep: str) -> np.ndarray:
    """Rank ``(N,)`` of each row under the keep rule: the best doc of a cluster has the smallest rank."""
    position = np.arange(len(df))
    if keep == "first":
        return position
    length = df["text"].fillna("").str.len().to_numpy()
    if keep == "longest":
        return np.lexsort((position, -length)).argsort()
    when = pd.to_datetime(df["fetch_time"], utc=True, errors="coerce")
    if when.isna().all() and df["fetch_time"].notna().any():
        raise ValueError("minhash_dedup: column 'fetch_time' has no parseable timestamps (keep='newest')")
    stamp = when.astype("int64").to_numpy()  # NaT -> int64 min: never newest
    return np.lexsort((position, -length, -stamp)).argsort()


_SIZE_BINS = ((2, 2), (3, 5), (6, 10), (11, 100), (101, None))


def minhash_dedup(df: pd.DataFrame, cfg: MinHashConfig) -> StepResult:
    """Drop near-duplicate docs: one kept doc per cluster of LSH candidate pairs with Jaccard >= ``cfg.threshold``.

    The Jaccard of a candidate pair is exact (``verify="exact"``: shingle-hash sets of the candidate docs
    only) or the MinHash estimate (``verify="estimate"``). Kept rows gain ``minhash_cluster`` (cluster number,
    -1 for docs without near-duplicates) and ``cluster_size``. Dropped rows have reason ``near_duplicate``,
    detail = id of the kept doc, and ``minhash_jaccard`` = Jaccard to it, measured as ``verify`` says (below
    ``threshold`` only when joined through a chain).
    """
    df, ids, texts = _checked_input(df, cfg)
    sigs, counts = signatures_and_counts(texts, cfg)
    pairs, lsh = _candidate_pairs(ids, sigs, counts, cfg)
    similarity = (  # exact: the candidate docs hashed once; every pair measured below is among them
        _exact_jaccard_among(texts, np.unique(pairs), cfg)
        if cfg.verify == "exact"
        else functools.partial(estimated_jaccard, sigs)
    )
    jac = similarity(pairs)
    labels = connected_components(len(df), pairs[jac >= cfg.threshold])
    kept, dropped = _keep_one_per_cluster(df, ids, labels, similarity, cfg.keep)
    sizes = np.bincount(labels)
    cluster_sizes = sizes[sizes > 1]  # docs per cluster of 2+ docs, in label order
    stats: dict[str, float | int] = {
        "docs_removed": int(len(dropped)),
        "clusters": int(len(cluster_sizes)),
        "largest_cluster": int(cluster_sizes.max()) if len(cluster_sizes) else 1,
        "docs_without_shingles": int((counts == 0).sum()),
        "candidate_pairs": int(len(pairs)),
        "duplicate_pairs": int((jac >= cfg.threshold).sum()),
        "lsh_bands": int(lsh.b),
        "lsh_rows": int(lsh.r),
        "lsh_candidate_probability_at_threshold": candidate_probability(cfg.threshold, lsh.b, lsh.r),
        **_size_histogram(cluster_sizes),
    }
    return StepResult(kept=kept, dropped=dropped, stats=stats)


def _checked_input(df: pd.DataFrame, cfg: MinHashConfig) -> tuple[pd.DataFrame, pd.Series, list[str]]:
    """``(df with a fresh index, ids as str, texts with None as "")``; raises on missing columns, repeated
    ids or a non-string text."""
    need = ("id", "url", "text") + (("fetch_time",) if cfg.keep == "newest" else ())
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(
            f"minhash_dedup: input lacks column(s) {', '.join(missing)}; has {', '.join(df.columns)}"
        )
    df = df.reset_index(drop=True)
    ids = df["id"].astype(str)
    if ids.duplicated().any():
        dup = ids[ids.duplicated()].iloc[0]
        raise ValueError(f"minhash_dedup: column 'id' must be unique; {dup!r} appears more than once")
    texts = df["text"].where(df["text"].notna(), "").tolist()
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise ValueError(
            f"minhash_dedup: column 'text' row {bad} (id {ids[bad]!r}) is {type(texts[bad]).__name__}"
        )
    return df, ids, texts


def _candidate_pairs(
    ids: pd.Series, sigs: np.ndarray, counts: np.ndarray, cfg: MinHashConfig
) -> tuple[np.ndarray, MinHashLSH]:
    """LSH candidate pairs ``(M, 2)`` of row numbers, from a fresh index that is removed afterwards."""
    rows = np.flatnonzero(counts > 0)  # docs without words are never near-duplicates
    keys = ids.to_numpy()[rows].tolist()
    basename = f"{cfg.redis_prefix}:{uuid.uuid4().hex[:12]}"
    lsh = make_lsh(cfg, basename)
    try:
        index_signatures(lsh, keys, sigs[rows], cfg)
        local = query_pairs(lsh, keys, sigs[rows], cfg)
    finally:
        if cfg.lsh_storage == "redis":
            _drop_redis_index(cfg, basename)
    return (rows[local] if len(local) else local), lsh


def _keep_one_per_cluster(
    df: pd.DataFrame,
    ids: pd.Series,
    labels: np.ndarray,
    similarity: Callable[[np.ndarray], np.ndarray],
    keep: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(kept, dropped)``: the doc of smallest rank under ``keep`` stays in each component ``labels``."""
    rank = _keep_order(df, keep)
    best = pd.Series(rank).groupby(labels).idxmin()  # component label -> row of the kept doc
    kept_row = best.loc[labels].to_numpy()  # (N,)
    size = np.bincount(labels, minlength=len(df))[labels]
    is_kept = kept_row == np.arange(len(df))

    multi = np.unique(labels[size > 1])
    cluster_no = np.full(len(df), -1, dtype=np.int64)
    cluster_no[size > 1] = np.searchsorted(multi, labels[size > 1])

    kept = df[is_kept].copy()
    kept["minhash_cluster"] = cluster_no[is_kept]
    kept["cluster_size"] = size[is_kept].astype(np.int64)
    gone = np.flatnonzero(~is_kept)
    if len(gone):
        dropped = make_dropped(df.iloc[gone], "near_duplicate", pd.Series(ids.to_numpy()[kept_row[gone]]))
        dropped["minhash_jaccard"] = similarity(np.stack([gone, kept_row[gone]], axis=1))
        dropped["minhash_cluster"] = cluster_no[gone]
    else:
        dropped = empty_dropped()
        dropped["minhash_jaccard"] = pd.Series(dtype=np.float64)
        dropped["minhash_cluster"] = pd.Series(dtype=np.int64)
    return kept.reset_index(drop=True), dropped


def _size_histogram(cluster_sizes: np.ndarray) -> dict[str, int]:
    """How many clusters fall in each bin of ``_SIZE_BINS`` (``cluster_size/2``, ``cluster_size/3-5``, ...)."""
    stats = {}
    for lo, hi in _SIZE_BINS:
        name = (
            f"cluster_size/{lo}" if lo == hi else f"cluster_size/{lo}-{hi}" if hi else f"cluster_size/{lo}+"
        )
        stats[name] = int(((cluster_sizes >= lo) & (cluster_sizes <= (hi or np.inf))).sum())
    return stats


def _drop_redis_index(cfg: MinHashConfig, basename: str) -> None:
    client = redis.Redis(host=cfg.redis_host, port=cfg.redis_port)
    try:
        keys = list(client.scan_iter(match=f"{basename}*", count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
    finally:
        client.close()


def example_pairs(result: StepResult, df: pd.DataFrame, k: int = 5) -> list[tuple[str, str, float]]:
    """Up to ``k`` (kept url, dropped url, estimated Jaccard) examples, spread from least to most similar."""
    d = result.dropped
    if d.empty or "minhash_jaccard" not in d:
        return []
    url_of = dict(zip(df["id"].astype(str), df["url"].astype(str), strict=True))
    d = d.sort_values(["minhash_jaccard", "id"], kind="stable").reset_index(drop=True)
    picks = np.unique(np.linspace(0, len(d) - 1, num=min(k, len(d))).round().astype(int))
    return [
        (url_of[str(d.at[i, "detail"])], str(d.at[i, "url"]), float(d.at[i, "minhash_jaccard"]))
        for i in picks
    ]
