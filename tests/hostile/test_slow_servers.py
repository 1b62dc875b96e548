"""Drip-feeding servers: one byte just inside the per-read timeout, forever. The per-fetch deadline cuts
the request (status line, headers or body) and the URL is counted as a ``deadline`` error."""

from __future__ import annotations

import time
from http.server import BaseHTTPRequestHandler

import pandas as pd
import pytest

from ml.sources.crawl import CrawlConfig, crawl

pytestmark = pytest.mark.timeout(60)

TIMEOUT_S = 0.5  # per read
DRIP_EVERY_S = 0.3  # < TIMEOUT_S: the per-read timeout never fires
DEADLINE_S = 1.5


def drip(body: bytes, every_s: float, content_type: str = "text/html"):
    """A route that sends ``body`` one byte every ``every_s`` seconds (Content-Length announced)."""

    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        try:
            for i in range(len(body)):
                h.wfile.write(body[i : i + 1])
                h.wfile.flush()
                time.sleep(every_s)
        except (BrokenPipeError, ConnectionResetError):
            pass

    return route


def drip_headers(h: BaseHTTPRequestHandler) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nX-Padding: " + b"p" * 200 + b"\r\n\r\n"
    try:
        for i in range(len(head)):
            h.wfile.write(head[i : i + 1])
            h.wfile.flush()
            time.sleep(DRIP_EVERY_S)
    except (BrokenPipeError, ConnectionResetError):
        pass


def config(s, **kw) -> CrawlConfig:
    base = dict(seeds=(s.base + "/",), allow_private_hosts=("127.0.0.1",), per_host_delay_s=0.0, retries=2,
                backoff_s=0.01, timeout_s=TIMEOUT_S, fetch_deadline_s=DEADLINE_S, concurrency=3)  # fmt: skip
    return CrawlConfig(**{**base, **kw})


def test_drip_fed_body_and_headers_are_cut_at_the_deadline(serve, tmp_path):
    s = serve()
    s.routes["/robots.txt"] = (404, {}, b"")
    s.routes["/"] = (200, {"Content-Type": "text/html"}, b'<a href="/body">b</a><a href="/head">h</a>')
    s.routes["/body"] = drip(b"<p>" + b"x" * 200 + b"</p>", DRIP_EVERY_S)  # 60 s at this pace
    s.routes["/head"] = drip_headers  # 65 s at this pace
    start = time.monotonic()
    report = crawl(config(s), tmp_path)
    elapsed = time.monotonic() - start
    m = pd.read_parquet(report.manifest_path).set_index("url")
    assert m.loc[s.base + "/body", "error"] == "deadline"
    assert m.loc[s.base + "/head", "error"] == "deadline"
    assert m.loc[s.base + "/", "error"] == ""
    assert report.errors_by_kind == {"deadline": 2}
    assert s.hits.count("/body") == 1 and s.hits.count("/head") == 1  # a deadline is not retried
    assert elapsed < 2 * DEADLINE_S + 2.0, f"crawl took {elapsed:.1f} s"


def test_drip_fed_robots_txt_is_cut_and_counts_as_unreachable(serve, tmp_path):
    s = serve()
    s.routes["/robots.txt"] = drip(b"User-agent: *\nAllow: /\n" * 10, DRIP_EVERY_S, "text/plain")
    s.routes["/"] = (200, {"Content-Type": "text/html"}, b"<p>home</p>")
    start = time.monotonic()
    report = crawl(config(s), tmp_path)
    assert time.monotonic() - start < DEADLINE_S + 2.0
    m = pd.read_parquet(report.manifest_path)
    assert m[["robots", "error"]].values.tolist() == [["disallowed", ""]]
    assert s.hits == ["/robots.txt"]
