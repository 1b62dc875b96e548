import pandas as pd
import pytest

from dagster_project.services.dask_cluster import local_cluster
from ml.curate.line_dedup import LineDedupConfig, line_dedup
from ml.curate.parallel import map_shards, merge_summaries
from ml.io import ShardError, write_parquet

CFG = LineDedupConfig(max_occurrences=1, bucket_size=10)


def _shard(path, k: int, n: int = 4):
    texts = [f"menu home about\nbody of page {chr(97 + k)}{chr(97 + i)}" for i in range(n)]
    texts[-1] = "menu home about"  # only boilerplate: dropped after line dedup
    df = pd.DataFrame({"id": [f"s{k}d{i}" for i in range(n)], "url": [f"http://h/{k}/{i}" for i in range(n)],
                       "text": texts, "lang": "en", "fetch_time": "2024-01-01T00:00:00Z", "source": "t"})  # fmt: skip
    return write_parquet(df, path)


def _inputs(tmp_path):
    return [_shard(tmp_path / "in" / f"in-{k}.parquet", k) for k in range(3)]


def _files(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_in_process_run_writes_one_part_per_shard(tmp_path):
    res = map_shards(line_dedup, _inputs(tmp_path), tmp_path / "out", cfg=CFG)
    assert [p.name for p in res.kept_paths] == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    assert sorted(_files(tmp_path / "out")) == [
        f"{d}/part-0000{i}.parquet" for d in ("dropped", "kept") for i in range(3)
    ]
    kept = pd.read_parquet(res.kept_paths[1])
    assert kept["text"].tolist() == ["body of page ba", "body of page bb", "body of page bc"]
    assert pd.read_parquet(res.dropped_paths[2])["reason"].tolist() == ["empty_after_line_dedup"]
    assert res.summary["docs_in"] == 12 and res.summary["docs_out"] == 9 and res.summary["shards"] == 3
    assert res.summary["lines_removed"] == 12 and res.summary["fraction_lines_removed"] == 4 / 7


def test_corrupt_or_empty_shard_is_named_and_outputs_untouched(tmp_path):
    paths = _inputs(tmp_path)
    map_shards(line_dedup, paths, tmp_path / "out", cfg=CFG)
    before = _files(tmp_path / "out")
    paths[1].write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ShardError, match=r"in-1\.parquet: not a readable Parquet file"):
        map_shards(line_dedup, paths, tmp_path / "out", cfg=LineDedupConfig(max_occurrences=5))
    paths[1].write_bytes(b"")
    with pytest.raises(ShardError, match=r"in-1\.parquet: shard file is empty"):
        map_shards(line_dedup, paths, tmp_path / "out", cfg=LineDedupConfig(max_occurrences=5))
    assert _files(tmp_path / "out") == before  # no staging leftovers, previous outputs byte-identical


def test_step_errors_name_the_shard(tmp_path):
    paths = _inputs(tmp_path)
    with pytest.raises(TypeError) as info:
        map_shards(line_dedup, paths, tmp_path / "out", config=CFG)  # wrong keyword for line_dedup
    assert any("in-0.parquet" in note for note in info.value.__notes__)


def test_merge_summaries_sums_counts_and_weights_fractions():
    merged = merge_summaries(
        [{"docs_in": 1, "n": 2, "fraction_x": 1.0}, {"docs_in": 3, "n": 5, "fraction_x": 0.0}]
    )
    assert merged == {"docs_in": 4, "n": 7, "fraction_x": 0.25, "shards": 2}


@pytest.mark.slow
def test_dask_local_cluster_matches_in_process(tmp_path):
    paths = _inputs(tmp_path)
    local = map_shards(line_dedup, paths, tmp_path / "local", cfg=CFG)
    with local_cluster(n_workers=2, threads_per_worker=1) as client:
        dask = map_shards(line_dedup, paths, tmp_path / "dask", client=client, cfg=CFG)
        paths[2].write_bytes(b"")
        with pytest.raises(ShardError, match=r"in-2\.parquet: shard file is empty"):
            map_shards(line_dedup, paths, tmp_path / "dask", client=client, cfg=CFG)
    assert _files(tmp_path / "dask") == _files(tmp_path / "local")
    assert dask.summary == local.summary
