"""MinHash near-dedup: tokenization, datasketch-identical signatures, clusters, keep rules, stats."""

import math

import datasketch
import numpy as np
import pandas as pd
import pytest

from ml.config import ConfigError
from ml.curate.minhash import (
    MAX_HASH,
    MinHashConfig,
    _numpy_shingle_hashes,
    candidate_probability,
    connected_components,
    estimated_jaccard,
    exact_jaccard,
    example_pairs,
    minhash_dedup,
    permutations,
    set_jaccard,
    shingle_hash32,
    shingle_hash64,
    shingle_sets,
    shingles,
    signatures,
    signatures_and_counts,
    words,
)

ENGINES = ["numba", "numpy"]

EDGE_TEXTS = [
    "The quick brown fox jumps over the lazy dog. The quick brown fox!",
    "",
    "   ...   ",
    "Hello",
    "one two three four five",
    "one two three four five six",
    "Straße ÜBER café — naïve, x_y;z 42",
    "日本語のテキスト 和 English",
    "\ud800 lone surrogate",
    "42 3.14 1,000 x86_64 v2",  # digits
    "a-b+c=d (e) [f] {g} <h> 'i' \"j\" k/l\\m|n~o`p^q@r#s$t%u&v*w",  # ASCII punctuation
    "İstanbul \u212a ΟΔΟΣ ΣΑΣ Σ ÉCOLE",  # lower() differs from per-byte ASCII lowering, final sigma
    "𐐀𐐁 deseret 𠀀 ext-b — “quoted” ‐ hyphen",  # supplementary planes, non-ASCII punctuation (a word byte)
    "\x00a\tb\r\nc\x7fd",  # control characters separate words
]


def _doc(tokens) -> str:
    return " ".join(f"w{t}" for t in tokens)


def test_words_and_shingles_tokenization():
    assert words("Don't STOP-me, 42x_y ÄÖ") == ["don", "t", "stop", "me", "42x", "y", "äö"]
    assert shingles("a b c d", 2) == ["a b", "b c", "c d"]
    assert shingles("A, b", 5) == ["a b"]  # fewer words than n: one shingle of all of them
    assert shingles("a b c", 3) == ["a b c"]
    assert shingles(" ;; ", 5) == []


def test_shingle_hash_reference_values():
    # Horner over bytes with P = 0x9E3779B97F4A7C15, fmix64, top 32 bits; pinned so the hash never drifts.
    assert shingle_hash32("") == 0
    assert shingle_hash32("a") == shingle_hash32(b"a")
    assert [shingle_hash32(s) for s in ("a", "a b")] == [_ref_hash(b"a"), _ref_hash(b"a b")]
    assert shingle_hash64("a b") >> 32 == _ref_hash(b"a b")


def _ref_hash(data: bytes) -> int:
    m = (1 << 64) - 1
    h = 0
    for byte in data:
        h = (h * 0x9E3779B97F4A7C15 + byte) & m
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & m
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & m
    return (h ^ (h >> 33)) >> 32


@pytest.mark.parametrize("n", [1, 3, 5])
def test_vectorized_shingle_hashes_equal_reference(n):
    hashes, counts = _numpy_shingle_hashes(EDGE_TEXTS, n)
    expected = [[shingle_hash64(s) for s in shingles(t, n)] for t in EDGE_TEXTS]
    assert counts.tolist() == [len(e) for e in expected]
    assert hashes.tolist() == [h for e in expected for h in e]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("n", [1, 2, 5])
def test_shingle_sets_equal_reference(engine, n):
    values, offsets = shingle_sets(EDGE_TEXTS, MinHashConfig(ngram=n, engine=engine))
    assert offsets.tolist()[0] == 0 and len(offsets) == len(EDGE_TEXTS) + 1
    for i, text in enumerate(EDGE_TEXTS):
        assert values[offsets[i] : offsets[i + 1]].tolist() == sorted(
            {shingle_hash64(s) for s in shingles(text, n)}
        )


@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
def test_permutations_equal_datasketch(scheme):
    a, b = permutations(64, 7, scheme)
    ref = datasketch.MinHash(num_perm=64, seed=7, scheme=scheme).permutations
    assert np.array_equal(a, np.asarray(ref[0], dtype=np.uint64))
    assert np.array_equal(b, np.asarray(ref[1], dtype=np.uint64))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
def test_signatures_equal_datasketch(scheme, engine):
    cfg = MinHashConfig(
        num_perm=32, ngram=3, seed=3, scheme=scheme, batch_size=2, bands=4, rows=8, engine=engine
    )
    sigs, counts = signatures_and_counts(EDGE_TEXTS, cfg)
    assert sigs.shape == (len(EDGE_TEXTS), 32) and sigs.dtype == np.uint64
    assert counts.tolist() == [len(shingles(t, 3)) for t in EDGE_TEXTS]
    for text, sig in zip(EDGE_TEXTS, sigs, strict=True):
        ref = datasketch.MinHash(num_perm=32, seed=3, scheme=scheme, hashfunc=shingle_hash32)
        ref.update_batch(shingles(text, 3))
        assert sig.tolist() == ref.hashvalues.astype(np.uint64).tolist()
    assert sigs[1].tolist() == [MAX_HASH] * 32  # no shingles: datasketch's empty sketch


@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
@pytest.mark.parametrize("n", [1, 2, 5, 7])
def test_numba_path_equals_numpy_path(scheme, n):
    texts = EDGE_TEXTS + ["x", "A", "é", " ".join(EDGE_TEXTS), "ÉCOLE école " * 50]
    cfg = MinHashConfig(num_perm=64, ngram=n, scheme=scheme, bands=8, rows=8)
    fast, fast_counts = signatures_and_counts(texts, cfg.replace(engine="numba"))
    slow, slow_counts = signatures_and_counts(texts, cfg.replace(engine="numpy"))
    assert np.array_equal(fast, slow) and np.array_equal(fast_counts, slow_counts)
    assert fast_counts.tolist() == [len(shingles(t, n)) for t in texts]


def test_known_jaccard_pair_clusters_and_unrelated_doc_does_not():
    # ngram=1: shingles are words. A = w0..w94, B = w5..w99: |A&B| = 90, |A|B| = 100 -> Jaccard 0.9.
    texts = [_doc(range(0, 95)), _doc(range(5, 100)), _doc(range(1000, 1095))]
    df = pd.DataFrame({"id": ["a", "b", "c"], "url": ["u/a", "u/b", "u/c"], "text": texts})
    cfg = MinHashConfig(
        ngram=1, threshold=0.8, bands=32, rows=4, verify="estimate"
    )  # P(candidate | J=0.9) = 1 - (1-0.9^4)^32 ~ 1
    res = minhash_dedup(df, cfg)
    assert res.kept["id"].tolist() == [
        "b",
        "c",
    ]  # keep="longest": b's w95..w99 are 5 chars longer than w0..w4
    assert res.kept["cluster_size"].tolist() == [2, 1]
    assert res.kept["minhash_cluster"].tolist() == [0, -1]
    assert res.dropped[["id", "url", "reason", "detail"]].values.tolist() == [
        ["a", "u/a", "near_duplicate", "b"]
    ]
    est = float(res.dropped["minhash_jaccard"].iloc[0])
    assert abs(est - 0.9) <= 4 * math.sqrt(0.9 * 0.1 / 128)
    assert res.stats["clusters"] == 1 and res.stats["docs_removed"] == 1 and res.stats["largest_cluster"] == 2
    assert res.stats["cluster_size/2"] == 1 and res.stats["cluster_size/3-5"] == 0
    assert example_pairs(res, df) == [("u/b", "u/a", est)]
    exact = minhash_dedup(df, cfg.replace(verify="exact"))  # same cluster, Jaccard now exactly 90/100
    assert exact.kept["id"].tolist() == ["b", "c"]
    assert exact.dropped["minhash_jaccard"].tolist() == [0.9]
    assert exact.stats["duplicate_pairs"] == 1 and exact.stats["candidate_pairs"] == 1
    assert exact.stats["lsh_bands"] == 32 and exact.stats["lsh_rows"] == 4


def _estimate_above_exact_pair(cfg: MinHashConfig) -> tuple[str, str, float, float]:
    """Two docs of exact Jaccard 78/100 whose MinHash estimate is >= 0.8 (first such word naming)."""
    for trial in range(100):  # each trial renames every word, so its estimate is an independent draw
        w = [f"t{trial}x{i}" for i in range(100)]
        a, b = " ".join(w[:89]), " ".join(w[:78] + w[89:100])  # 78 shared words, 11 own words each
        est = float(estimated_jaccard(signatures([a, b], cfg), np.array([[0, 1]]))[0])
        if est >= 0.8:
            return a, b, est, float(exact_jaccard([a, b], np.array([[0, 1]]), cfg)[0])
    raise AssertionError("no trial gave an estimate >= 0.8")


def test_exact_verification_rejects_a_pair_that_the_estimate_accepts():
    cfg = MinHashConfig(ngram=1, threshold=0.8)
    a, b, est, exact = _estimate_above_exact_pair(cfg)
    assert exact == 0.78 and est >= 0.8
    df = pd.DataFrame({"id": ["a", "b"], "url": ["u/a", "u/b"], "text": [a, b]})
    estimate = minhash_dedup(df, cfg.replace(verify="estimate"))
    assert estimate.stats["candidate_pairs"] == 1 and estimate.stats["docs_removed"] == 1
    exact_res = minhash_dedup(df, cfg)  # default verify="exact"
    assert exact_res.stats["candidate_pairs"] == 1 and exact_res.stats["duplicate_pairs"] == 0
    assert exact_res.kept["id"].tolist() == ["a", "b"] and exact_res.dropped.empty


@pytest.mark.parametrize("engine", ENGINES)
def test_set_jaccard_hand_computed(engine):
    cfg = MinHashConfig(ngram=1, engine=engine)
    values, offsets = shingle_sets(["a b c d", "c d e", "", "x", "x"], cfg)
    pairs = np.array([[0, 1], [1, 0], [0, 2], [2, 2], [3, 4], [0, 3]])
    # {a,b,c,d} vs {c,d,e}: 2 / 5; empty sets: 0 by definition; {x} vs {x}: 1.
    assert set_jaccard(values, offsets, pairs, cfg).tolist() == [0.4, 0.4, 0.0, 0.0, 1.0, 0.0]
    assert exact_jaccard(["a b c d", "c d e"], np.array([[0, 1]]), cfg).tolist() == [0.4]
    assert exact_jaccard(["a"], np.zeros((0, 2), dtype=np.int64), cfg).tolist() == []


def test_candidate_probability_of_default_banding():
    cfg = MinHashConfig()
    assert (cfg.bands, cfg.rows) == (21, 6)
    assert candidate_probability(0.8, 21, 6) == 1 - (1 - 0.8**6) ** 21
    assert round(candidate_probability(cfg.threshold, cfg.bands, cfg.rows), 4) == 0.9983
    assert round(candidate_probability(0.8, 16, 8), 4) == 0.947  # the former 16 x 8 missed 5% at J = 0.8


@pytest.mark.parametrize(
    ("keep", "kept_id"),
    [("first", "short"), ("longest", "long"), ("newest", "new")],
)
def test_keep_rule_picks_the_right_doc(keep, kept_id):
    base = list(range(200))
    texts = [_doc(base), _doc(base + [900, 901]), _doc(base + [900])]  # Jaccard >= 200/202 between any two
    df = pd.DataFrame(
        {
            "id": ["short", "long", "new"],
            "url": ["u1", "u2", "u3"],
            "text": texts,
            "fetch_time": pd.to_datetime(["2024-01-01", "2023-01-01", "2024-06-01"], utc=True),
        }
    )
    res = minhash_dedup(df, MinHashConfig(ngram=1, keep=keep))
    assert res.kept["id"].tolist() == [kept_id]
    assert res.kept["cluster_size"].tolist() == [3]
    assert sorted(res.dropped["id"]) == sorted({"short", "long", "new"} - {kept_id})
    assert set(res.dropped["detail"]) == {kept_id}
    assert res.stats["cluster_size/3-5"] == 1


def test_estimated_jaccard_close_to_true_on_large_pair():
    # 1500 words each, 1000 shared: Jaccard = 1000 / 2000 = 0.5; std of the estimate = sqrt(J(1-J)/num_perm).
    a, b = _doc(range(0, 1500)), _doc(range(500, 2000))
    sigs = signatures([a, b], MinHashConfig(num_perm=512, ngram=1))
    est = float((sigs[0] == sigs[1]).mean())
    assert abs(est - 0.5) <= 4 * math.sqrt(0.25 / 512)


def test_connected_components_chains():
    labels = connected_components(6, np.array([[3, 4], [0, 2], [2, 4]]))
    assert labels.tolist() == [0, 1, 0, 0, 0, 5]


def test_docs_without_words_are_kept_and_not_clustered():
    df = pd.DataFrame({"id": ["x", "y", "z"], "url": ["1", "2", "3"], "text": ["", "...", None]})
    res = minhash_dedup(df, MinHashConfig())
    assert res.kept["id"].tolist() == ["x", "y", "z"] and res.dropped.empty
    assert res.stats["docs_without_shingles"] == 3 and res.stats["clusters"] == 0
    assert example_pairs(res, df) == []


def test_bad_input_and_config_errors():
    with pytest.raises(ValueError, match="lacks column"):
        minhash_dedup(pd.DataFrame({"id": ["a"], "url": ["u"]}), MinHashConfig())
    with pytest.raises(ValueError, match="'id' must be unique"):
        minhash_dedup(
            pd.DataFrame({"id": ["a", "a"], "url": ["u", "v"], "text": ["x", "y"]}), MinHashConfig()
        )
    with pytest.raises(ConfigError, match="keep"):
        MinHashConfig(keep="oldest")
    with pytest.raises(ConfigError, match="bands and rows"):
        MinHashConfig(rows=None)
    with pytest.raises(ConfigError, match="bands\\*rows"):
        MinHashConfig(bands=20, rows=8)
    with pytest.raises(ConfigError, match="verify"):
        MinHashConfig(verify="approx")
    with pytest.raises(ConfigError, match="engine"):
        MinHashConfig(engine="cuda")
    assert MinHashConfig.from_preset("tiny").batch_size == 64
    assert MinHashConfig.from_dict(MinHashConfig().to_dict()) == MinHashConfig()
