"""WARC gzip bombs: the payload cap applies while reading, memory stays bounded, time stays linear.

Stated bound: reading any WARC file with ``max_payload_bytes = 10 MB`` peaks below PEAK_RSS_BOUND_MB of
resident memory (interpreter + warcio ~40 MB, one capped payload 10 MB, inflate and warcio buffers
~20 MB), whatever a record inflates to: measured in a child process with ``resource.getrusage``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ml.sources.extract import ExtractConfig, extract_documents
from ml.sources.warc import iter_records, read_many

sys.path.insert(0, str(Path(__file__).parent))
import bombs  # noqa: E402

pytestmark = pytest.mark.timeout(120)

PEAK_RSS_BOUND_MB = 128
CAP = 10_000_000
ROOT = Path(__file__).resolve().parents[2]

_CHILD = """
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # the machine survives a reader without a bound
from ml.sources.warc import iter_many
start = time.monotonic()
errors = []
out = [(r.url, len(r.payload), r.truncated) for r in iter_many(sys.argv[2:], errors, int(sys.argv[1]))]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
print(json.dumps({"records": out, "errors": [[e.path.name, e.offset, e.detail] for e in errors],
                  "peak_rss_mb": peak, "read_s": round(time.monotonic() - start, 2)}))
"""


def test_multi_gb_bombs_are_read_in_bounded_memory(tmp_path):
    payload_bombs = bombs.write(
        tmp_path / "payload.warc.gz",
        bombs.bomb_record("http://bomb.test/", 2048),  # 2 MB on disk, 2 GiB inflated (WARC gzip layer)
        bombs.nested_bomb_record("http://nested.test/", 1024),  # 1 KB, 1 GiB behind Content-Encoding: gzip
        bombs.chunked_bomb_record("http://chunked.test/", 1024),  # one 1 GiB chunk (warcio holds a chunk)
        bombs.small_record("http://after.test/", b"<p>after the bombs</p>"),
    )
    line_bomb = bombs.write(tmp_path / "line.warc.gz", bombs.header_line_bomb(2048))  # one 2 GiB header line
    count_bomb = bombs.write(
        tmp_path / "count.warc.gz",
        bombs.small_record("http://before.test/", b"<p>before</p>"),
        bombs.header_count_bomb(256),  # 1.75 GiB of 'X: ab' header lines
    )
    assert sum(p.stat().st_size for p in (payload_bombs, line_bomb, count_bomb)) < 8 << 20
    # Linux keeps ru_maxrss across fork + exec, so a child forked from pytest would report pytest's own
    # size; forked from a small shell instead, the reader's process starts its count from ~1 MB.
    files = [str(p) for p in (payload_bombs, line_bomb, count_bomb)]
    proc = subprocess.run(
        ["/bin/sh", "-c", '"$@"; exit $?', "sh", sys.executable, "-c", _CHILD, str(CAP), *files],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout)
    print(f"bomb read: peak RSS {got['peak_rss_mb']} MB, {got['read_s']} s")
    assert [tuple(r) for r in got["records"]] == [
        ("http://bomb.test/", CAP, True),
        ("http://nested.test/", CAP, True),
        ("http://chunked.test/", CAP, True),
        ("http://after.test/", 22, False),
        ("http://before.test/", 13, False),
    ]
    count_offset = count_bomb.stat().st_size - len(bombs.header_count_bomb(256))
    assert got["errors"] == [
        ["line.warc.gz", 0, "ValueError: the headers of one record run over 1048576 bytes"],
        ["count.warc.gz", count_offset, "ValueError: the headers of one record run over 1048576 bytes"],
    ]
    assert got["peak_rss_mb"] < PEAK_RSS_BOUND_MB
    assert got["read_s"] < 30  # linear: ~2 GiB/s of inflate; the quadratic reader never finished


def test_64_mib_record_reads_in_linear_time(tmp_path):
    path = bombs.write(
        tmp_path / "big.warc.gz",
        bombs.bomb_record("http://big.test/", 64),
        bombs.small_record("http://after.test/", b"<p>after</p>"),
    )
    start = time.monotonic()
    records = list(iter_records(path, max_payload_bytes=100 << 20))
    elapsed = time.monotonic() - start
    assert [(r.url, len(r.payload), r.truncated) for r in records] == [
        ("http://big.test/", 64 << 20, False),
        ("http://after.test/", 12, False),
    ]
    assert records[0].payload == b"a" * (64 << 20)
    assert elapsed < 8.0, f"64 MiB took {elapsed:.1f} s"


def test_cap_applies_while_reading_and_extraction_drops_truncated(tmp_path):
    body = b"<html><body><p>" + b"word " * 1000 + b"</p></body></html>"
    path = bombs.write(
        tmp_path / "capped.warc.gz",
        bombs.small_record("http://long.test/", body),
        bombs.small_record("http://short.test/", b"<p>short</p>"),
    )
    records, errors = read_many([path], max_payload_bytes=1000)
    assert errors == []
    assert [(r.url, r.payload, r.truncated) for r in records] == [
        ("http://long.test/", body[:1000], True),
        ("http://short.test/", b"<p>short</p>", False),
    ]
    res = extract_documents(records, ExtractConfig.from_preset("tiny"), source="t")
    assert res.dropped[["url", "reason", "detail"]].values.tolist() == [
        ["http://long.test/", "too_large", "more than 1000 bytes (the reader stopped at its cap)"],
        ["http://short.test/", "too_short", "5 chars, 1 words"],
    ]
