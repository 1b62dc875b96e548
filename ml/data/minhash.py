"""Document-level MinHash near-duplicate removal (paper: "global document-level MinHash", no parameters given).

Pipeline: text -> word n-gram shingles -> one 32-bit hash per shingle -> MinHash signature (``num_perm``
values) -> LSH candidates (datasketch ``MinHashLSH``, in memory or in Redis) -> candidate pairs whose
estimated Jaccard is >= ``threshold`` -> connected components -> one kept document per cluster.

Tokenization (``words``): the text is lowercased (``str.lower``); a word is a maximal run of ASCII digits,
ASCII lowercase letters, or non-ASCII characters; everything else (whitespace, ASCII punctuation, control
characters) separates words. Scripts without spaces (CJK) therefore give long "words"; per-language dedup
keeps that harmless. A shingle is ``n`` consecutive words joined by one space; a document with
``0 < k < n`` words has the single shingle of all its words, a document without words has no shingle
(it is never a near-duplicate).

Shingle hash (``shingle_hash32``): ``h = sum_i byte_i * P**(len-1-i) mod 2**64`` over the shingle's UTF-8
bytes (a polynomial hash, Horner order), mixed with the 64-bit MurmurHash3 finalizer; the top 32 bits are
the shingle hash. The polynomial form lets ``signatures`` hash every shingle of a batch with prefix sums
instead of a Python call per shingle. (Polynomial hashes modulo 2**64 have known adversarial collisions on
crafted strings thousands of bytes long; natural text does not produce them.)

Signatures are bit-for-bit those of ``datasketch.MinHash(num_perm, seed, scheme=..., hashfunc=shingle_hash32)``
updated with the same shingles: the permutations ``(a, b)`` are drawn from ``np.random.RandomState(seed)``
exactly as datasketch draws them, and the arithmetic replicates its two schemes:

* ``affine32`` (datasketch >= 2.0 default): ``hv = fmix32(h)``, ``phv = a * hv + b mod 2**32``;
* ``legacy`` (datasketch < 2.0): ``phv = ((a * h + b) mod 2**64) mod (2**61 - 1)``, lowest 32 bits
  (the ``mod 2**64`` is numpy's uint64 wraparound, which datasketch also has).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import redis
from datasketch import LeanMinHash, MinHashLSH

from ml.config import ConfigError, StageConfig
from ml.data.steps import StepResult, empty_dropped, make_dropped

KEEP_RULES = ("longest", "newest", "first")
SCHEMES = ("affine32", "legacy")
STORAGES = ("memory", "redis")

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
_BATCH_BYTES = (
    1 << 18
)  # chosen: ~2 MB uint64 temporaries per batch stay in cache (measured fastest on man pages)


@dataclass(frozen=True)
class MinHashConfig(StageConfig):
    """MinHash near-dedup settings. The paper publishes none; defaults follow FineWeb/datatrove and datasketch.

    datatrove's ``MinhashConfig`` (used for FineWeb) takes 5-word shingles and 112 hashes in 14 bands of 8
    (candidate threshold ~0.72); datasketch defaults to ``num_perm=128, seed=1``. We keep datasketch's 128
    permutations in 16 bands of 8 rows and confirm candidates with the estimated Jaccard >= ``threshold``.
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"tiny": {"batch_size": 64}, "small": {}}

    num_perm: int = 128  # chosen: datasketch default; std of the Jaccard estimate <= 0.5/sqrt(128) = 0.044
    ngram: int = 5  # datatrove/FineWeb MinhashConfig.n_grams
    threshold: float = (
        0.8  # chosen: estimated Jaccard at/above which two docs are duplicates (LSH target too)
    )
    # LSH bands x rows. chosen: 8 rows per band as datatrove (14 x 8), 16 bands to use all 128 values. The
    # S-curve midpoint (1/16)**(1/8) = 0.71 sits below threshold: P(candidate) = 0.947 at J=0.8, 0.99994 at 0.9,
    # so the Jaccard check, not the banding, decides. None/None = datasketch's optimum for threshold, which
    # for 0.8 @ 128 is 9 x 13 (midpoint 0.845: P(candidate | J=0.8) = 0.40, too strict for dedup).
    bands: int | None = 16
    rows: int | None = 8
    seed: int = 1  # datasketch and datatrove default; every worker must use the same seed
    scheme: str = "affine32"  # datasketch >= 2.0 default (unbiased); "legacy" matches datasketch < 2.0
    keep: str = (
        "longest"  # chosen: the most complete copy survives; "newest" uses fetch_time, "first" row order
    )
    batch_size: int = 256  # docs per vectorized signature batch (also capped at ~256 KB of text)
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


def shingle_hash32(shingle: str | bytes) -> int:
    """The 32-bit hash of one shingle (pure Python; pass it to datasketch as ``hashfunc``)."""
    data = shingle.encode("utf-8", "surrogatepass") if isinstance(shingle, str) else shingle
    h = 0
    for byte in data:
        h = (h * _P + byte) & _M64
    return _fmix64(h) >> 32


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
# Vectorized signatures.

_IS_WORD_BYTE = np.zeros(256, dtype=bool)
_IS_WORD_BYTE[ord("0") : ord("9") + 1] = True
_IS_WORD_BYTE[ord("a") : ord("z") + 1] = True
_IS_WORD_BYTE[0x80:] = True  # every byte of a non-ASCII character's UTF-8 encoding


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


def _fmix64_np(h: np.ndarray) -> np.ndarray:
    s1, m1, s2, m2, s3 = (np.uint64(c) for c in _FMIX64)
    h ^= h >> s1
    h *= m1
    h ^= h >> s2
    h *= m2
    h ^= h >> s3
    return h


def _fmix32_np(h: np.ndarray) -> np.ndarray:
    s1, m1, s2, m2, s3 = (np.uint32(c) for c in _FMIX32)
    h ^= h >> s1
    h *= m1
    h ^= h >> s2
    h *= m2
    h ^= h >> s3
    return h


def _batch_shingle_hashes(texts: Sequence[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of every shingle of ``texts`` (in doc order) and the shingle count of each doc.

    Returns ``(hashes (S,) uint32, counts (D,) int64)``; equals ``shingle_hash32`` over ``shingles(t, n)``.
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
    tail = (
        doc_word_end[:, None] - np.arange(1, n, dtype=np.int64)[None, :]
    ).ravel()  # last n-1 words of docs
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
    hashes = (_fmix64_np(poly) >> np.uint64(32)).astype(np.uint32)  # (S,)
    return hashes, counts


def _batch_signatures(
    texts: Sequence[str], cfg: MinHashConfig, a: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    hashes, counts = _batch_shingle_hashes(texts, cfg.ngram)
    sig = np.full((len(texts), cfg.num_perm), MAX_HASH, dtype=np.uint64)  # (D, num_perm)
    has = np.flatnonzero(counts)
    if len(has) == 0:
        return sig, counts
    offsets = (np.cumsum(counts) - counts)[has]  # start of each non-empty doc's shingles
    out = np.empty((cfg.num_perm, len(has)), dtype=np.uint64)
    if cfg.scheme == "affine32":
        hv = _fmix32_np(hashes)
        phv = np.empty_like(hv)  # (S,) uint32, wraps mod 2**32
        for k in range(cfg.num_perm):
            np.multiply(hv, a[k], out=phv)
            phv += b[k]
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


def signatures_and_counts(texts: Sequence[str], cfg: MinHashConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(signatures (N, num_perm) uint64, shingle counts (N,) int64)``; a doc without shingles has count 0."""
    a, b = permutations(cfg.num_perm, cfg.seed, cfg.scheme)
    if cfg.scheme == "affine32":
        a, b = a.astype(np.uint32), b.astype(np.uint32)
    texts = ["" if t is None else t for t in texts]
    sigs = np.empty((len(texts), cfg.num_perm), dtype=np.uint64)
    counts = np.empty(len(texts), dtype=np.int64)
    i = 0
    while i < len(texts):
        j, size = i, 0
        while j < len(texts) and j - i < cfg.batch_size and (j == i or size + len(texts[j]) <= _BATCH_BYTES):
            size += len(texts[j])
            j += 1
        sigs[i:j], counts[i:j] = _batch_signatures(texts[i:j], cfg, a, b)
        i = j
    return sigs, counts


def signatures(texts: Sequence[str], cfg: MinHashConfig) -> np.ndarray:
    """MinHash signatures ``(N, num_perm)`` uint64 of ``texts``, equal to datasketch's (module docstring)."""
    return signatures_and_counts(texts, cfg)[0]


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
    """Drop near-duplicate docs: one kept doc per cluster of estimated Jaccard >= ``cfg.threshold``.

    Kept rows gain ``minhash_cluster`` (cluster number, -1 for docs without near-duplicates) and
    ``cluster_size``. Dropped rows have reason ``near_duplicate``, detail = id of the kept doc, and
    ``minhash_jaccard`` = estimated Jaccard to it (below ``threshold`` only when joined through a chain).
    """
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
    sigs, counts = signatures_and_counts(texts, cfg)
    rows = np.flatnonzero(counts > 0)  # docs without words are never near-duplicates
    keys = ids.to_numpy()[rows].tolist()
    basename = f"{cfg.redis_prefix}:{uuid.uuid4().hex[:12]}"  # fresh index per call; removed afterwards
    lsh = make_lsh(cfg, basename)
    try:
        index_signatures(lsh, keys, sigs[rows], cfg)
        local = query_pairs(lsh, keys, sigs[rows], cfg)
    finally:
        if cfg.lsh_storage == "redis":
            _drop_redis_index(cfg, basename)
    pairs = rows[local] if len(local) else local
    jac = estimated_jaccard(sigs, pairs)
    labels = connected_components(len(df), pairs[jac >= cfg.threshold])

    # The kept doc of each component: smallest rank under the keep rule.
    rank = _keep_order(df, cfg.keep)
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
        dropped["minhash_jaccard"] = (sigs[gone] == sigs[kept_row[gone]]).mean(axis=1)
        dropped["minhash_cluster"] = cluster_no[gone]
    else:
        dropped = empty_dropped()
        dropped["minhash_jaccard"] = pd.Series(dtype=np.float64)
        dropped["minhash_cluster"] = pd.Series(dtype=np.int64)

    cluster_sizes = np.bincount(labels)[multi] if len(multi) else np.zeros(0, dtype=np.int64)
    stats: dict[str, float | int] = {
        "docs_removed": int(len(gone)),
        "clusters": int(len(multi)),
        "largest_cluster": int(cluster_sizes.max()) if len(cluster_sizes) else 1,
        "docs_without_shingles": int((counts == 0).sum()),
        "candidate_pairs": int(len(pairs)),
        "duplicate_pairs": int((jac >= cfg.threshold).sum()),
        "lsh_bands": int(lsh.b),
        "lsh_rows": int(lsh.r),
    }
    for lo, hi in _SIZE_BINS:
        name = (
            f"cluster_size/{lo}" if lo == hi else f"cluster_size/{lo}-{hi}" if hi else f"cluster_size/{lo}+"
        )
        stats[name] = int(((cluster_sizes >= lo) & (cluster_sizes <= (hi or np.inf))).sum())
    return StepResult(kept=kept.reset_index(drop=True), dropped=dropped, stats=stats)


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
