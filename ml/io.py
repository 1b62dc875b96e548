"""Artifact I/O shared by every stage: atomic writes and Parquet document shards.

Document shards follow the contract in DESIGN.md: at least ``id, url, text, lang, fetch_time, source``;
dropped documents go to a side table with a ``reason`` column.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

DOC_COLUMNS: tuple[str, ...] = ("id", "url", "text", "lang", "fetch_time", "source")


class ShardError(ValueError):
    """A shard is missing, corrupt or lacks required columns; the message names the file."""

    def __init__(self, path: Path | str, problem: str):
        self.path = Path(path)
        super().__init__(f"{path}: {problem}")


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a fresh temp dir beside ``final``; on success it replaces ``final`` in one rename.

    On error the temp dir is removed and ``final`` (the previous, DVC-tracked version) is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        final.rename(old)
    tmp.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def update_hash(h: Any, path: Path) -> None:
    """Feed a file's bytes to hash object ``h`` in 1 MiB blocks (shards, checkpoints and WARCs can be large)."""
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)


def hash_file(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes."""
    h = hashlib.new(algorithm)
    update_hash(h, path)
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    return hash_file(path, "sha256")


def md5_file(path: Path) -> str:
    """MD5, the digest DVC and Common Crawl's manifests use."""
    return hash_file(path, "md5")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_parquet(df: pd.DataFrame, path: Path) -> Path:
    """Write ``df`` to ``path`` atomically (zstd); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp, compression="zstd")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def shard_paths(directory: Path, pattern: str = "*.parquet") -> list[Path]:
    directory = Path(directory)
    if not directory.is_dir():
        raise ShardError(directory, "shard directory does not exist")
    return sorted(p for p in directory.glob(pattern) if not p.name.startswith("."))


def read_shard(path: Path, required: tuple[str, ...] = DOC_COLUMNS) -> pd.DataFrame:
    """Read one Parquet shard, failing with the file's name if it is corrupt, empty or lacks columns."""
    path = Path(path)
    if not path.exists():
        raise ShardError(path, "shard file does not exist")
    if path.stat().st_size == 0:
        raise ShardError(path, "shard file is empty (0 bytes)")
    try:
        df = pq.read_table(path).to_pandas()
    except (pa.ArrowInvalid, OSError) as exc:
        raise ShardError(path, f"not a readable Parquet file ({exc})") from exc
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ShardError(
            path, f"missing required column(s) {', '.join(missing)}; has {', '.join(df.columns)}"
        )
    return df


def read_shards(directory: Path, required: tuple[str, ...] = DOC_COLUMNS) -> pd.DataFrame:
    """Concatenate every shard under ``directory`` (sorted by name)."""
    paths = shard_paths(directory)
    if not paths:
        raise ShardError(directory, "no Parquet shards found")
    frames = [read_shard(p, required) for p in paths]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def write_shards(
    df: pd.DataFrame, directory: Path, rows_per_shard: int = 5000, prefix: str = "part"
) -> list[Path]:
    """Split ``df`` into numbered shards ``<prefix>-00000.parquet`` under ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    n = max(1, -(-len(df) // rows_per_shard))
    return [
        write_parquet(
            df.iloc[i * rows_per_shard : (i + 1) * rows_per_shard], directory / f"{prefix}-{i:05d}.parquet"
        )
        for i in range(n)
    ]
