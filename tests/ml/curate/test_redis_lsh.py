"""Redis-backed MinHash LSH (a real redis-server) gives the same clusters as the in-memory index."""

import shutil

import numpy as np
import pandas as pd
import pytest
import redis

from dagster_project.services import redis_server as redis_server_module
from dagster_project.services.redis_server import RedisServerError, redis_server
from ml.curate.minhash import (
    MinHashConfig,
    index_signatures,
    make_lsh,
    minhash_dedup,
    query_pairs,
    signatures,
)

needs_redis = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server binary missing (apt-get install redis-server)"
)


def _corpus() -> pd.DataFrame:
    """Three families of near-duplicates (Jaccard >= 0.9 within a family) plus four unrelated docs."""
    texts, ids = [], []
    for fam in range(3):
        base = list(range(fam * 1000, fam * 1000 + 300))
        for v in range(3):
            texts.append(" ".join(f"w{t}" for t in base[v * 5 :] + [90000 + fam * 10 + v]))
            ids.append(f"f{fam}v{v}")
    for k in range(4):
        texts.append(" ".join(f"w{t}" for t in range(50000 + k * 400, 50000 + k * 400 + 300)))
        ids.append(f"solo{k}")
    return pd.DataFrame({"id": ids, "url": [f"http://h/{i}" for i in ids], "text": texts})


@pytest.mark.redis
@needs_redis
def test_redis_lsh_same_clusters_as_memory():
    df = _corpus()
    cfg = MinHashConfig(ngram=1)
    mem = minhash_dedup(df, cfg)
    with redis_server() as (host, port):
        red = minhash_dedup(df, cfg.replace(lsh_storage="redis", redis_host=host, redis_port=port))
        assert redis.Redis(host=host, port=port).dbsize() == 0  # the per-call index is removed
    assert mem.kept["id"].tolist() == ["f0v0", "f1v0", "f2v0", "solo0", "solo1", "solo2", "solo3"]
    assert mem.stats["clusters"] == 3 and mem.stats["docs_removed"] == 6
    pd.testing.assert_frame_equal(red.kept, mem.kept)
    pd.testing.assert_frame_equal(red.dropped, mem.dropped)
    assert red.stats == mem.stats


@pytest.mark.redis
@needs_redis
def test_two_workers_share_one_redis_index():
    df = _corpus()
    keys = df["id"].tolist()
    with redis_server() as (host, port):
        cfg = MinHashConfig(ngram=1, lsh_storage="redis", redis_host=host, redis_port=port)
        sigs = signatures(df["text"].tolist(), cfg)
        half = len(keys) // 2
        # Worker A and worker B index disjoint halves through their own LSH objects, same basename.
        index_signatures(make_lsh(cfg, "shared"), keys[:half], sigs[:half], cfg)
        index_signatures(make_lsh(cfg, "shared"), keys[half:], sigs[half:], cfg)
        # A third process queries everything across both halves.
        shared = query_pairs(make_lsh(cfg, "shared"), keys, sigs, cfg)
    mem_cfg = cfg.replace(lsh_storage="memory")
    lsh = make_lsh(mem_cfg)
    index_signatures(lsh, keys, sigs, mem_cfg)
    memory = query_pairs(lsh, keys, sigs, mem_cfg)
    assert np.array_equal(shared, memory)
    # Within-family pairs only, including the ones that straddle the two workers' halves (f1v0 - f1v2).
    assert shared.tolist() == [[0, 1], [0, 2], [1, 2], [3, 4], [3, 5], [4, 5], [6, 7], [6, 8], [7, 8]]


def test_missing_binary_gives_install_hint(monkeypatch):
    monkeypatch.setattr(redis_server_module.shutil, "which", lambda name: None)
    with pytest.raises(RedisServerError, match="apt-get install redis-server"):
        with redis_server():
            pass
