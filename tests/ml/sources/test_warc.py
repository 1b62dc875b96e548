from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest
from warcio.archiveiterator import ArchiveIterator
from warcio.warcwriter import WARCWriter

from ml.sources.warc import (
    FetchedResponse,
    WarcFormatError,
    WarcSink,
    expand_warc_paths,
    iter_records,
    read_many,
)


def fetched(i: int, body: bytes, encoding: str = "") -> FetchedResponse:
    headers = [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))]
    if encoding:
        headers.append(("Content-Encoding", encoding))
    return FetchedResponse(
        url=f"http://site.test/{i}.html",
        request_line=f"GET /{i}.html HTTP/1.1",
        request_headers=[("Host", "site.test"), ("User-Agent", "test")],
        status_line="200 OK",
        protocol="HTTP/1.1",
        response_headers=headers,
        body=body,
        peer_ip="192.0.2.1",
        fetch_ms=7,
        depth=1,
        outlinks=3,
        robots="allowed",
    )


def write_warc(out_dir: Path, n: int = 3, max_file_bytes: int = 1 << 20) -> tuple[WarcSink, list]:
    with WarcSink(out_dir, prefix="t", max_file_bytes=max_file_bytes) as sink:
        locs = [sink.write(fetched(i, f"<p>page {i}</p>".encode())) for i in range(n)]
    return sink, locs


def test_sink_round_trip_and_record_layout(tmp_path):
    sink, locs = write_warc(tmp_path)
    assert [p.name for p in sink.files] == ["t-00000.warc.gz"]
    records = list(iter_records(sink.files[0]))
    assert [(r.url, r.http_status, r.content_type, r.payload, r.record_type) for r in records] == [
        (
            f"http://site.test/{i}.html",
            200,
            "text/html; charset=utf-8",
            f"<p>page {i}</p>".encode(),
            "response",
        )
        for i in range(3)
    ]
    assert [(r.warc_file, r.offset) for r in records] == locs
    with open(sink.files[0], "rb") as fh:
        recs = [
            (r.rec_type, dict(r.rec_headers.headers), r.content_stream().read()) for r in ArchiveIterator(fh)
        ]
    assert [t for t, _, _ in recs] == ["warcinfo"] + ["request", "response", "metadata"] * 3
    _, req, _ = recs[1]
    _, resp, _ = recs[2]
    _, meta, meta_body = recs[3]
    assert req["WARC-Concurrent-To"] == resp["WARC-Record-ID"] == meta["WARC-Concurrent-To"]
    assert resp["WARC-Payload-Digest"].startswith("sha1:") and resp["WARC-Block-Digest"].startswith("sha1:")
    assert meta_body == b"fetchTimeMs: 7\r\ndepth: 1\r\noutlinks: 3\r\nrobots: allowed\r\n"


def test_payload_is_decoded_entity_body(tmp_path):
    with WarcSink(tmp_path) as sink:
        sink.write(fetched(0, gzip.compress(b"<p>zipped</p>"), encoding="gzip"))
    (rec,) = iter_records(sink.files[0])
    assert rec.payload == b"<p>zipped</p>"


def test_sink_rotates_files(tmp_path):
    sink, locs = write_warc(tmp_path, n=3, max_file_bytes=1)
    assert [p.name for p in sink.files] == ["t-00000.warc.gz", "t-00001.warc.gz", "t-00002.warc.gz"]
    assert [Path(f).name for f, _ in locs] == [p.name for p in sink.files]
    for path in sink.files:
        with open(path, "rb") as fh:
            assert next(iter(ArchiveIterator(fh))).rec_type == "warcinfo"


def test_wet_conversion_records(tmp_path):
    path = tmp_path / "x.warc.wet.gz"
    with open(path, "wb") as fh:
        w = WARCWriter(fh, gzip=True)
        w.write_record(w.create_warcinfo_record(path.name, {"software": "test"}))
        for i, text in enumerate([b"first doc\n", "zweites Dokument \u00fc\n".encode()]):
            rec = w.create_warc_record(
                f"http://x.test/{i}", "conversion", payload=io.BytesIO(text), warc_content_type="text/plain"
            )
            w.write_record(rec)
    got = [(r.url, r.record_type, r.content_type, r.http_status, r.payload) for r in iter_records(path)]
    assert got == [
        ("http://x.test/0", "conversion", "text/plain", None, b"first doc\n"),
        ("http://x.test/1", "conversion", "text/plain", None, "zweites Dokument \u00fc\n".encode()),
    ]


def test_truncated_gzip_names_file_and_offset_and_keeps_good_files(tmp_path):
    sink, locs = write_warc(tmp_path / "a")
    data = sink.files[0].read_bytes()
    bad = tmp_path / "bad.warc.gz"
    cut = locs[2][1] + 40  # inside the third response's gzip member
    bad.write_bytes(data[:cut])
    with pytest.raises(WarcFormatError) as exc:
        list(iter_records(bad))
    assert exc.value.path == bad and exc.value.offset == locs[2][1]
    assert str(bad) in str(exc.value) and f"offset {locs[2][1]}" in str(exc.value)

    good_sink, _ = write_warc(tmp_path / "b", n=2)
    records, errors = read_many([bad, good_sink.files[0]])
    assert [e.path for e in errors] == [bad]
    # The two records before the fault in the bad file, then both records of the good file.
    assert [(Path(r.warc_file).name, r.url) for r in records] == [
        ("bad.warc.gz", "http://site.test/0.html"),
        ("bad.warc.gz", "http://site.test/1.html"),
        ("t-00000.warc.gz", "http://site.test/0.html"),
        ("t-00000.warc.gz", "http://site.test/1.html"),
    ]


def test_malformed_header_names_file_and_offset(tmp_path):
    sink, _ = write_warc(tmp_path / "a", n=2)
    raw = gzip.decompress(sink.files[0].read_bytes())  # an uncompressed WARC: offsets are plain bytes
    first_resp = raw.index(b"WARC-Type: response")
    start = raw.rindex(b"WARC/1.0", 0, first_resp)
    for broken, detail in [
        (raw[:start] + b"WARX/1.0" + raw[start + 8 :], "first line: WARX/1.0"),
        (raw[:first_resp] + b"WARC-Type response" + raw[first_resp + 19 :], "no WARC-Type header"),
    ]:
        path = tmp_path / "broken.warc"
        path.write_bytes(broken)
        with pytest.raises(WarcFormatError, match=detail) as exc:
            list(iter_records(path))
        assert (exc.value.path, exc.value.offset) == (path, start)
        assert f"{path}: malformed WARC record at byte offset {start}" in str(exc.value)


def test_garbage_and_missing_file(tmp_path):
    junk = tmp_path / "junk.warc.gz"
    junk.write_bytes(b"\x1f\x8b\x08\x00garbage-not-deflate")
    records, errors = read_many([junk, tmp_path / "absent.warc.gz"])
    assert records == [] and [(e.path.name, e.offset) for e in errors] == [
        ("junk.warc.gz", 0),
        ("absent.warc.gz", 0),
    ]


def test_expand_warc_paths(tmp_path):
    for name in ["b.warc.gz", "a.warc.gz", "c.wet.gz"]:
        (tmp_path / name).write_bytes(b"")
    got = expand_warc_paths(
        [str(tmp_path / "*.warc.gz"), str(tmp_path / "c.wet.gz"), str(tmp_path / "a.warc.gz")]
    )
    assert [p.name for p in got] == ["a.warc.gz", "b.warc.gz", "c.wet.gz"]
    with pytest.raises(FileNotFoundError, match=r"nothing-\*\.warc"):
        expand_warc_paths([str(tmp_path / "nothing-*.warc")])


def test_gzip_member_reader_matches_gzip_and_locates_members(tmp_path):
    import random

    from ml.sources.warc import _GzipMemberReader

    rng = random.Random(7)
    datas = [b"", b"x" * 3_000_000, rng.randbytes(200_000), b"tail\n" * 10, rng.randbytes(1)]
    members = [gzip.compress(d, compresslevel=rng.choice((1, 6, 9))) for d in datas]
    path = tmp_path / "m.gz"
    path.write_bytes(b"".join(members))
    with open(path, "rb") as fh:
        reader = _GzipMemberReader(fh, path)
        out = bytearray()
        while chunk := reader.read(rng.choice((1, 100, 16384, 1 << 20, 3 << 20))):
            out += chunk
            assert reader.tell() == len(out)
    assert bytes(out) == b"".join(datas)
    starts = [sum(map(len, datas[:i])) for i in range(len(datas))]
    offsets = [sum(map(len, members[:i])) for i in range(len(members))]
    # The empty first member shares its uncompressed start with the next one: the later member wins.
    assert [reader.compressed_offset(u) for u in starts[1:]] == offsets[1:]
    assert reader.compressed_offset(starts[2] + 5) == offsets[2]


def _response_record(url: str, http_head: bytes, body: bytes) -> bytes:
    block = http_head + body
    head = (
        f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: {url}\r\nWARC-Date: 2026-01-01T00:00:00Z\r\n"
        f"WARC-Record-ID: <urn:uuid:{abs(hash(url)):032x}>\r\n"
        f"Content-Type: application/http; msgtype=response\r\nContent-Length: {len(block)}\r\n\r\n"
    ).encode()
    return gzip.compress(head + block + b"\r\n\r\n")


def test_chunked_bodies_stream_like_warcio_decodes_them(tmp_path):
    html = b"<html><body>" + b"chunked text " * 3000 + b"</body></html>"
    zipped = gzip.compress(html)

    def chunked(data: bytes, sizes: list[int], ext: str = "") -> bytes:
        out, i = b"", 0
        for n in sizes:
            out += f"{n:x}{ext}\r\n".encode() + data[i : i + n] + b"\r\n"
            i += n
        return out + b"0\r\n\r\n"

    te = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n"
    cases = {
        "http://t/plain-chunks": (te + b"\r\n", chunked(html, [1, 100, 20000, len(html) - 20101])),
        "http://t/extensions": (
            te + b"\r\n",
            chunked(html, [len(html) // 2, len(html) - len(html) // 2], ";x=1"),
        ),
        "http://t/gzip-over-chunks": (
            te + b"Content-Encoding: gzip\r\n\r\n",
            chunked(zipped, [7, len(zipped) - 7]),
        ),
        "http://t/not-really-chunked": (te + b"\r\n", html),
        "http://t/cut-mid-chunk": (te + b"\r\n", f"{len(html):x}\r\n".encode() + html[:5000]),
    }
    path = tmp_path / "chunked.warc.gz"
    path.write_bytes(b"".join(_response_record(u, h, b) for u, (h, b) in cases.items()))
    expected = {}
    with open(path, "rb") as fh:
        for rec in ArchiveIterator(fh):
            expected[rec.rec_headers.get_header("WARC-Target-URI")] = rec.content_stream().read()
    got = {r.url: r.payload for r in iter_records(path)}
    assert got == expected
    assert got["http://t/plain-chunks"] == got["http://t/gzip-over-chunks"] == html
    assert got["http://t/cut-mid-chunk"] == html[:5000]
