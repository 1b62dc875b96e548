"""benchmarks/curation.py runs end to end on a few real records: repacking, our stages, datatrove's."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.curation import main, repack, run_ours
from ml.sources.warc import FetchedResponse, WarcSink, iter_many

LICENSES = Path("/usr/share/common-licenses")
PAGES = ("Apache-2.0", "GPL-2", "GPL-3", "LGPL-2.1", "MPL-2.0", "Artistic", "BSD", "GFDL-1.3")


def _page(i: int, name: str, body: bytes, content_type: str) -> FetchedResponse:
    return FetchedResponse(
        url=f"http://127.0.0.1/{i}/{name}", request_line=f"GET /{i}/{name} HTTP/1.1", request_headers=[],
        status_line="200 OK", protocol="HTTP/1.1", response_headers=[("Content-Type", content_type)],
        body=body, peer_ip="127.0.0.1", fetch_ms=1, depth=1, outlinks=0, robots="allowed",
    )  # fmt: skip


@pytest.fixture(scope="module")
def crawl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real licence texts as HTML pages (paragraphs) plus one as text/plain and one exact copy of a page."""
    if not all((LICENSES / n).is_file() for n in PAGES):
        pytest.skip("/usr/share/common-licenses lacks a licence this test reads")
    out = tmp_path_factory.mktemp("crawl")
    with WarcSink(out, max_file_bytes=40_000) as sink:
        for i, name in enumerate(PAGES):
            paras = (LICENSES / name).read_text(encoding="utf-8").split("\n\n")
            html = "<html><body>" + "".join(f"<p>{p}</p>" for p in paras) + "</body></html>"
            sink.write(_page(i, name, html.encode(), "text/html; charset=utf-8"))
        sink.write(_page(100, "GPL-3", html.encode(), "text/html; charset=utf-8"))  # same page, other URL
        sink.write(_page(101, "BSD.txt", (LICENSES / "BSD").read_bytes(), "text/plain"))
    return out


def test_repack_balances_files_and_keeps_every_record(crawl: Path, tmp_path: Path):
    paths = sorted(crawl.glob("*.warc.gz"))
    assert len(paths) == 2  # the sink rotated its file once
    warcs, n = repack(paths, tmp_path / "two", 2, None)
    assert n == 10 and len(warcs) == 2
    before = sorted((r.url, r.payload) for r in iter_many(paths, []))
    after = sorted((r.url, r.payload) for r in iter_many(warcs, []))
    assert after == before
    warcs, n = repack(paths, tmp_path / "limited", 2, 3)
    assert n == 3 and len(list(iter_many(warcs, []))) == 3


def test_our_stages_equal_in_process_and_on_two_workers(crawl: Path, tmp_path: Path):
    warcs, _ = repack(sorted(crawl.glob("*.warc.gz")), tmp_path / "warc", 2, None)
    one = {r["stage"]: (r["kept"], r["digest"]) for r in run_ours(warcs, 0).rows}
    two = {r["stage"]: (r["kept"], r["digest"]) for r in run_ours(warcs, 2).rows}
    assert one == two
    assert one["read+extract+langid"][0] == 10
    assert one["core: minhash"][0] == 8  # the GPL-3 copy and one near-duplicate licence
    assert one["core: filters"][0] == 8  # licences are prose: every rule passes


def test_main_prints_both_sides(crawl: Path, capsys):
    # one worker: datatrove then runs its tasks in this process. Its 2-worker `multiprocess` pool, started
    # from inside a pytest-xdist worker that already runs tokenizers' and torch's threads, hung a CI run
    # for 30 minutes (each of its stages waited on its forkserver); the benchmark itself runs 2 workers
    text = main(["--warc", str(crawl / "*.warc.gz"), "--limit", "6", "--workers", "1"])
    assert "datatrove  read+extract+gopher+minhash" in text and "ours core" in text
    assert text.startswith("input: 6 WARC response records in 1 files; workers 1")
