"""Charset labels seen on the real web that Python cannot decode with, and per-record faults.

A page served as ``charset=utf8mb4`` (MySQL's name), ``x-user-defined`` (WHATWG only) or a non-text codec
(``base64``) must decode by the fallback chain and be counted; a record that makes extraction or link
parsing raise is dropped by name and counted, and the rest of the crawl / batch goes on.
"""

from __future__ import annotations

import pandas as pd
import pytest

import ml.sources.crawl as crawl_mod
import ml.sources.extract as extract_mod
from ml.sources.crawl import CrawlConfig, crawl
from ml.sources.extract import ExtractConfig, extract_documents
from ml.sources.records import WebRecord

pytestmark = pytest.mark.timeout(60)

PROSE = (
    "Der Übersetzer prüft jede Zeile der Handbuchseite, bevor sie veröffentlicht wird; "
    "die Beispiele zeigen, wie man Optionen kombiniert und welche Ausgaben man erwarten kann. "
    "Grüße aus der Dokumentation, die hier absichtlich lang genug ist, um behalten zu werden."
)
BAD_LABELS = ("utf8mb4", "x-user-defined", "base64")


def html(body: str, links: tuple[str, ...] = (), head: str = "") -> bytes:
    anchors = "".join(f'<a href="{h}">{h}</a>' for h in links)
    return f"<html><head>{head}</head><body><p>{body}</p>{anchors}</body></html>".encode()


def test_crawl_survives_bad_charset_labels_and_follows_their_links(serve, tmp_path):
    s = serve()
    s.routes["/"] = (200, {"Content-Type": "text/html; charset=utf-8"}, html("start", ("/l0", "/l1", "/l2")))
    for i, label in enumerate(BAD_LABELS):
        s.routes[f"/l{i}"] = (
            200,
            {"Content-Type": f"text/html; charset={label}"},
            html(PROSE, (f"/after{i}",)),
        )
        s.routes[f"/after{i}"] = (200, {"Content-Type": "text/html"}, html("reached"))
    cfg = CrawlConfig(
        seeds=(s.base + "/",), allow_private_hosts=("127.0.0.1",), per_host_delay_s=0.0, retries=0
    )
    report = crawl(cfg, tmp_path)
    m = pd.read_parquet(report.manifest_path)
    assert sorted(m["url"].str.removeprefix(s.base)) == [
        "/",
        "/after0",
        "/after1",
        "/after2",
        "/l0",
        "/l1",
        "/l2",
    ]
    assert (m["error"] == "").all() and report.pages_fetched == 7
    assert report.charset_fallbacks == 3
    assert report.to_stats()["charset_fallbacks"] == 3


def test_crawl_error_in_one_page_is_named_counted_and_not_fatal(serve, tmp_path, monkeypatch):
    s = serve()
    s.routes["/"] = (200, {"Content-Type": "text/html"}, html("start", ("/poison", "/fine")))
    s.routes["/poison"] = (200, {"Content-Type": "text/html"}, html("poison", ("/behind-poison",)))
    s.routes["/fine"] = (200, {"Content-Type": "text/html"}, html("fine"))
    real = crawl_mod.extract_links

    def links(text: str, url: str) -> list[str]:
        if url.endswith("/poison"):
            raise RecursionError("maximum recursion depth exceeded in a parser")
        return real(text, url)

    monkeypatch.setattr(crawl_mod, "extract_links", links)
    cfg = CrawlConfig(
        seeds=(s.base + "/",), allow_private_hosts=("127.0.0.1",), per_host_delay_s=0.0, retries=0
    )
    report = crawl(cfg, tmp_path)
    m = pd.read_parquet(report.manifest_path).set_index("url")
    assert m.loc[s.base + "/poison", "error"] == "record_error"
    assert m.loc[s.base + "/poison", "warc_file"] == ""
    assert m.loc[s.base + "/fine", "error"] == ""
    assert report.errors_by_kind == {"record_error": 1}
    assert report.pages_fetched == 2


def record(i: int, content_type: str, payload: bytes) -> WebRecord:
    return WebRecord(
        url=f"http://site.test/{i}",
        fetch_time="2026-01-01T00:00:00Z",
        record_type="response",
        content_type=content_type,
        http_status=200,
        payload=payload,
        warc_file="/data/x.warc.gz",
        offset=1000 + i,
    )


def test_extraction_falls_back_on_bad_labels_and_counts_per_document():
    recs = [record(i, f"text/html; charset={label}", html(PROSE)) for i, label in enumerate(BAD_LABELS)]
    recs.append(record(3, "text/html", html(PROSE, head='<meta charset="base64">')))
    recs.append(record(4, "text/html; charset=utf-8", html(PROSE)))  # a good label: no fallback
    res = extract_documents(recs, ExtractConfig.from_preset("tiny"), source="t")
    assert len(res.kept) == 5 and res.dropped.empty
    assert set(res.kept["text"]) == {PROSE}
    assert res.stats["charset_fallbacks"] == 4
    assert res.stats["record_errors"] == 0


def test_extraction_error_in_one_record_is_named_counted_and_not_fatal(monkeypatch):
    real = extract_mod.extract_html

    def extract(text, cfg, url=None):
        if url == "http://site.test/1":
            raise MemoryError("lxml gave up on this tree")
        if url == "http://site.test/3":
            raise ValueError(text * 100)  # a message quoting the page is cut
        return real(text, cfg, url=url)

    monkeypatch.setattr(extract_mod, "extract_html", extract)
    recs = [record(i, "text/html; charset=utf-8", html(PROSE)) for i in range(4)]
    res = extract_documents(recs, ExtractConfig.from_preset("tiny", batch_size=2), source="t")
    assert sorted(res.kept["url"]) == ["http://site.test/0", "http://site.test/2"]
    cut = ("ValueError: " + html(PROSE).decode() * 100)[:500]
    assert res.dropped[["url", "reason", "detail"]].values.tolist() == [
        [
            "http://site.test/1",
            "record_error",
            "x.warc.gz@1001: MemoryError: lxml gave up on this tree",
        ],
        ["http://site.test/3", "record_error", f"x.warc.gz@1003: {cut}"],
    ]
    assert res.stats["record_errors"] == 2
