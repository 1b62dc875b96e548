import pandas as pd
import pytest

from ml.io import ShardError, atomic_dir, read_shards, write_shards


def _docs(n):
    return pd.DataFrame(
        {
            "id": [f"d{i}" for i in range(n)],
            "url": [f"http://h/{i}" for i in range(n)],
            "text": ["t"] * n,
            "lang": ["en"] * n,
            "fetch_time": ["2024"] * n,
            "source": ["s"] * n,
        }
    )


def test_shards_round_trip(tmp_path):
    paths = write_shards(_docs(5), tmp_path / "docs", rows_per_shard=2)
    assert [p.name for p in paths] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert read_shards(tmp_path / "docs")["id"].tolist() == ["d0", "d1", "d2", "d3", "d4"]


def test_corrupt_and_empty_shards_are_named(tmp_path):
    write_shards(_docs(2), tmp_path / "docs")
    (tmp_path / "docs" / "part-00001.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ShardError, match="part-00001.parquet: not a readable Parquet file"):
        read_shards(tmp_path / "docs")
    (tmp_path / "docs" / "part-00001.parquet").write_bytes(b"")
    with pytest.raises(ShardError, match=r"part-00001.parquet: shard file is empty \(0 bytes\)"):
        read_shards(tmp_path / "docs")


def test_missing_column_is_named(tmp_path):
    write_shards(_docs(2).drop(columns=["lang"]), tmp_path / "docs")
    with pytest.raises(ShardError, match="missing required column\\(s\\) lang"):
        read_shards(tmp_path / "docs")


def test_atomic_dir_keeps_previous_version_on_failure(tmp_path):
    final = tmp_path / "art"
    with atomic_dir(final) as tmp:
        (tmp / "v").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(final) as tmp:
        (tmp / "v").write_text("2")
        raise RuntimeError("stage crashed")
    assert (final / "v").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]
    with atomic_dir(final) as tmp:
        (tmp / "v").write_text("3")
    assert (final / "v").read_text() == "3"
