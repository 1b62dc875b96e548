from __future__ import annotations

import gzip
import socket
import time

import pandas as pd
import pytest
from warcio.archiveiterator import ArchiveIterator

from ml.config import ConfigError
from ml.sources.crawl import CrawlConfig, crawl, extract_links, normalize_url
from ml.sources.warc import read_many

HTML = {"Content-Type": "text/html; charset=utf-8"}


def page(*links: str, text: str = "") -> tuple[int, dict[str, str], bytes]:
    anchors = "".join(f'<a href="{h}">{h}</a>' for h in links)
    return 200, HTML, f"<html><body><p>{text}</p>{anchors}</body></html>".encode()


def config(server, **kw) -> CrawlConfig:
    base = dict(
        seeds=(server.base + "/",),
        allow_private_hosts=("127.0.0.1",),
        per_host_delay_s=0.0,
        per_host_concurrency=2,
        concurrency=2,
        timeout_s=5.0,
        retries=0,
        backoff_s=0.01,
        max_depth=5,
        max_pages=100,
    )
    base.update(kw)
    return CrawlConfig.from_dict(base)


def manifest(report) -> pd.DataFrame:
    return pd.read_parquet(report.manifest_path).set_index("url")


# ------------------------------------------------------------------------------------------- URLs


def test_normalize_url():
    assert (
        normalize_url("HTTP://Example.COM:80/a/./b/../c?x=%7e&y=%2f#frag")
        == "http://example.com/a/c?x=~&y=%2F"
    )
    assert normalize_url("https://example.com:443") == "https://example.com/"
    assert normalize_url("https://example.com:8443/a b") == "https://example.com:8443/a%20b"
    assert normalize_url("../x.html", base="http://h.org/a/b/c.html") == "http://h.org/a/x.html"
    assert normalize_url("http://user:pw@h.org/") == "http://h.org/"
    assert normalize_url("http://bücher.de/ü") == "http://xn--bcher-kva.de/%C3%BC"
    assert normalize_url("FTP://h.org/x") == "ftp://h.org/x"
    assert normalize_url("http:///nohost") is None
    assert normalize_url("http://h.org:99999/") is None


def test_extract_links_honours_base_and_skips_non_http():
    html = (
        '<html><head><base href="http://h.org/docs/"></head><body>'
        '<a href="a.html#s">a</a><a href="mailto:x@h.org">m</a><a href="javascript:void(0)">j</a>'
        '<a href="/root.html">r</a><a href="ftp://h.org/f">f</a><a href="https://o.org">o</a><a>no href</a>'
    )
    assert extract_links(html, "http://h.org/index.html") == [
        "http://h.org/docs/a.html",
        "http://h.org/root.html",
        "https://o.org/",
    ]


def test_config_validation():
    with pytest.raises(ConfigError, match="scope"):
        CrawlConfig(scope="everywhere")
    with pytest.raises(ConfigError, match="max_pages"):
        CrawlConfig(max_pages=0)
    assert CrawlConfig.from_preset("tiny").per_host_delay_s == 0.0
    assert CrawlConfig.from_preset("small").per_host_delay_s == 1.0


# --------------------------------------------------------------------------------------- crawling


def test_crawl_follows_links_bfs_and_writes_manifest(loopback_server, tmp_path):
    s = loopback_server
    s.routes.update(
        {
            "/": page("/a.html", "b.html", "http://other.example/x", "/a.html#again"),
            "/a.html": page("/c.html", text="page a"),
            "/b.html": page(text="page b"),
            "/c.html": page(text="page c"),
        }
    )
    report = crawl(config(s), tmp_path)
    m = manifest(report)
    base = s.base
    assert sorted(m.index) == [f"{base}/", f"{base}/a.html", f"{base}/b.html", f"{base}/c.html"]
    assert m.loc[f"{base}/c.html", "depth"] == 2
    assert (m["status"] == 200).all() and (m["error"] == "").all()
    assert report.pages_fetched == 4
    assert report.pages_by_host == {"127.0.0.1:" + base.rsplit(":", 1)[1]: 4}
    assert report.errors_by_kind == {}
    assert sorted(s.hits) == ["/", "/a.html", "/b.html", "/c.html", "/robots.txt"]
    stats = report.to_stats()
    assert stats["pages_fetched"] == 4 and stats["urls_attempted"] == 4 and stats["errors_total"] == 0


def test_max_depth_and_max_pages(loopback_server, tmp_path):
    s = loopback_server
    s.routes.update({"/": page("/1.html"), "/1.html": page("/2.html"), "/2.html": page("/3.html")})
    report = crawl(config(s, max_depth=1), tmp_path / "d")
    assert sorted(manifest(report).index) == [f"{s.base}/", f"{s.base}/1.html"]
    report = crawl(config(s, max_pages=2, concurrency=1), tmp_path / "p")
    assert report.urls_attempted == 2


def test_robots_disallow_honoured(loopback_server, tmp_path):
    s = loopback_server
    s.routes.update(
        {
            "/robots.txt": (200, {"Content-Type": "text/plain"}, b"User-agent: *\nDisallow: /private/\n"),
            "/": page("/private/secret.html", "/public.html"),
            "/public.html": page(text="ok"),
            "/private/secret.html": page(text="secret"),
        }
    )
    report = crawl(config(s), tmp_path)
    m = manifest(report)
    assert "/private/secret.html" not in s.hits
    assert s.hits.count("/robots.txt") == 1
    assert report.robots_refusals == 1
    row = m.loc[f"{s.base}/private/secret.html"]
    assert (row["robots"], row["error"], row["status"], row["warc_file"]) == ("disallowed", "", 0, "")
    assert report.pages_fetched == 2


def test_per_host_rate_limit_spaces_requests(loopback_server, tmp_path):
    s = loopback_server
    s.routes.update({"/": page(*[f"/{i}.html" for i in range(4)])})
    s.routes.update({f"/{i}.html": page(text=str(i)) for i in range(4)})
    interval = 0.15
    crawl(config(s, per_host_delay_s=interval, per_host_concurrency=1, concurrency=4), tmp_path)
    times = sorted(s.arrivals)
    assert len(times) == 6  # robots.txt, /, 4 pages
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) >= interval


def test_redirects_followed_and_each_hop_checked(loopback_server, tmp_path):
    s = loopback_server
    s.routes.update(
        {
            "/": page("/old.html", "/to-private", "/to-metadata", "/to-ftp", "/to-other", "/loop0"),
            "/old.html": (301, {"Location": "/new.html"}, b""),
            "/new.html": page(text="moved here"),
            "/to-private": (302, {"Location": "http://10.0.0.1/admin"}, b""),
            "/to-metadata": (302, {"Location": "http://169.254.169.254/latest/meta-data/"}, b""),
            "/to-ftp": (302, {"Location": "ftp://127.0.0.1/file"}, b""),
            "/to-other": (302, {"Location": "http://other.example/"}, b""),
        }
    )
    s.routes.update({f"/loop{i}": (302, {"Location": f"/loop{i + 1}"}, b"") for i in range(10)})
    # The private targets are in scope: only the address check stands between them and a request.
    scope = dict(scope="allow_list", allow_hosts=("127.0.0.1", "10.0.0.1", "169.254.169.254"))
    report = crawl(config(s, max_redirects=3, **scope), tmp_path)
    m = manifest(report)
    b = s.base
    assert tuple(m.loc[f"{b}/old.html", ["final_url", "status", "error"]]) == (f"{b}/new.html", 200, "")
    assert m.loc[f"{b}/old.html", "warc_file"] != ""
    assert tuple(m.loc[f"{b}/to-private", ["final_url", "error"]]) == (
        "http://10.0.0.1/admin",
        "refused_address",
    )
    assert m.loc[f"{b}/to-metadata", "error"] == "refused_address"
    assert tuple(m.loc[f"{b}/to-ftp", ["final_url", "error"]]) == ("ftp://127.0.0.1/file", "refused_scheme")
    assert tuple(m.loc[f"{b}/to-other", ["final_url", "error"]]) == ("http://other.example/", "out_of_scope")
    assert tuple(m.loc[f"{b}/loop0", ["final_url", "error"]]) == (f"{b}/loop3", "redirect_limit")
    assert s.hits.count("/new.html") == 1
    assert "/loop4" not in s.hits
    assert report.errors_by_kind == {
        "out_of_scope": 1,
        "redirect_limit": 1,
        "refused_address": 2,
        "refused_scheme": 1,
    }


def test_http_errors_and_retries(loopback_server, tmp_path):
    s = loopback_server
    calls = {"n": 0}

    def flaky(h):
        calls["n"] += 1
        status, body = (503, b"busy") if calls["n"] == 1 else (200, b"<p>recovered</p>")
        h.send_response(status)
        h.send_header("Content-Type", "text/html")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    s.routes.update(
        {
            "/": page("/missing.html", "/flaky.html", "/down.html", "/image.png"),
            "/flaky.html": flaky,
            "/down.html": (500, HTML, b"boom"),
            "/image.png": (200, {"Content-Type": "image/png"}, b"\x89PNG...."),
        }
    )
    report = crawl(config(s, retries=1, backoff_s=0.01), tmp_path)
    m = manifest(report)
    b = s.base
    assert tuple(m.loc[f"{b}/missing.html", ["status", "error"]]) == (404, "http_4xx")
    assert tuple(m.loc[f"{b}/flaky.html", ["status", "error"]]) == (200, "")
    assert tuple(m.loc[f"{b}/down.html", ["status", "error"]]) == (500, "http_5xx")
    assert tuple(m.loc[f"{b}/image.png", ["status", "error", "bytes"]]) == (200, "bad_content_type", 0)
    assert s.hits.count("/flaky.html") == 2 and s.hits.count("/down.html") == 2
    assert s.hits.count("/missing.html") == 1
    assert report.errors_by_kind == {"bad_content_type": 1, "http_4xx": 1, "http_5xx": 1}


def test_timeout_recorded_after_retries(loopback_server, tmp_path):
    s = loopback_server

    def slow(h):
        time.sleep(1.0)
        h.send_response(200)
        h.send_header("Content-Length", "0")
        h.end_headers()

    s.routes.update({"/": page("/slow.html"), "/slow.html": slow})
    report = crawl(config(s, timeout_s=0.25, retries=1, backoff_s=0.01), tmp_path)
    m = manifest(report)
    assert tuple(m.loc[f"{s.base}/slow.html", ["status", "error"]]) == (0, "timeout")
    assert s.hits.count("/slow.html") == 2
    assert report.errors_by_kind == {"timeout": 1}


def test_oversized_bodies_and_decompression_bomb(loopback_server, tmp_path):
    s = loopback_server

    def chunked_big(h):  # no Content-Length: the cut happens while streaming
        h.send_response(200)
        h.send_header("Content-Type", "text/html")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for _ in range(8):
            h.wfile.write(b"400\r\n" + b"x" * 1024 + b"\r\n")
        h.wfile.write(b"0\r\n\r\n")

    bomb = gzip.compress(b"a" * 2_000_000)
    s.routes.update(
        {
            "/": page("/big.html", "/chunked.html", "/bomb.html", "/ok-gzip.html"),
            "/big.html": (200, HTML, b"y" * 5000),
            "/chunked.html": chunked_big,
            "/bomb.html": (200, {**HTML, "Content-Encoding": "gzip"}, bomb),
            "/ok-gzip.html": (200, {**HTML, "Content-Encoding": "gzip"}, gzip.compress(b"<p>small</p>")),
        }
    )
    report = crawl(config(s, max_response_bytes=4096), tmp_path)
    m = manifest(report)
    b = s.base
    assert tuple(m.loc[f"{b}/big.html", ["error", "warc_file"]]) == ("too_large", "")
    assert m.loc[f"{b}/chunked.html", "error"] == "too_large"
    assert m.loc[f"{b}/bomb.html", "error"] == "decompression_bomb"
    assert m.loc[f"{b}/ok-gzip.html", "error"] == ""
    records, errors = read_many(report.warc_files)
    assert errors == []
    assert {r.url: r.payload for r in records}[f"{b}/ok-gzip.html"] == b"<p>small</p>"


def test_non_http_seeds_refused(tmp_path):
    cfg = CrawlConfig(seeds=("ftp://example.org/pub/", "file:///etc/passwd"), retries=0)
    report = crawl(cfg, tmp_path)
    m = manifest(report)
    assert m["error"].tolist() == ["refused_scheme", "refused_scheme"]
    assert report.pages_fetched == 0 and report.errors_by_kind == {"refused_scheme": 2}


def test_private_addresses_refused_without_connecting(loopback_server, tmp_path, monkeypatch):
    s = loopback_server
    s.routes["/"] = page(text="should never be fetched")
    connects: list = []
    real_connect = socket.socket.connect
    monkeypatch.setattr(
        socket.socket, "connect", lambda self, addr: connects.append(addr) or real_connect(self, addr)
    )
    seeds = (s.base + "/", "http://10.0.0.1/", "http://169.254.169.254/latest/meta-data/", "http://[::1]:9/")
    cfg = CrawlConfig(seeds=seeds, retries=0)  # allow_private_hosts empty: loopback refused too
    report = crawl(cfg, tmp_path)
    m = manifest(report)
    assert m["error"].tolist() == ["refused_address"] * 4
    assert connects == [] and s.hits == []
    assert report.errors_by_kind == {"refused_address": 4}


def test_crawl_warc_round_trip(loopback_server, tmp_path):
    s = loopback_server
    body_a = "<html><body>ünïcode <a href='/t.txt'>t</a></body></html>".encode()
    s.routes.update(
        {
            "/": (200, HTML, body_a),
            "/t.txt": (200, {"Content-Type": "text/plain; charset=utf-8"}, b"plain text file\n"),
        }
    )
    report = crawl(config(s, max_warc_file_bytes=1), tmp_path)  # rotate after every fetch
    assert [p.name for p in report.warc_files] == ["crawl-00000.warc.gz", "crawl-00001.warc.gz"]
    records, errors = read_many(report.warc_files)
    assert errors == []
    got = {r.url: (r.http_status, r.content_type, r.payload) for r in records}
    assert got == {
        f"{s.base}/": (200, "text/html; charset=utf-8", body_a),
        f"{s.base}/t.txt": (200, "text/plain; charset=utf-8", b"plain text file\n"),
    }
    m = manifest(report)
    for r in records:
        assert (m.loc[r.url, "warc_file"], m.loc[r.url, "warc_offset"]) == (r.warc_file, r.offset)
        assert m.loc[r.url, "bytes"] == len(r.payload)
    types = []
    for path in report.warc_files:
        with open(path, "rb") as fh:
            for rec in ArchiveIterator(fh):
                types.append(rec.rec_type)
                if rec.rec_type == "response":
                    assert rec.rec_headers.get_header("WARC-Payload-Digest").startswith("sha1:")
                    assert rec.rec_headers.get_header("WARC-Block-Digest").startswith("sha1:")
                    assert rec.rec_headers.get_header("WARC-IP-Address") == "127.0.0.1"
                if rec.rec_type == "metadata":
                    fields = rec.content_stream().read().decode()
                    assert "robots: allowed" in fields and "depth: " in fields
    assert types == ["warcinfo", "request", "response", "metadata"] * 2


def test_crawl_refuses_non_empty_out_dir(loopback_server, tmp_path):
    s = loopback_server
    s.routes["/"] = page(text="x")
    crawl(config(s), tmp_path)
    with pytest.raises(FileExistsError, match="already holds crawl output"):
        crawl(config(s), tmp_path)


def test_the_small_preset_can_fetch_every_page_of_the_large_local_web():
    from ml.sources.localweb import LocalWebConfig

    small, web = CrawlConfig.from_preset("small"), LocalWebConfig.from_preset("large")
    assert small.max_pages >= 166_245  # pages of the large web as built on 2026-12-05 (benchmarks/NOTES.md)
    assert small.max_response_bytes > web.max_html_doc_bytes  # the web keeps HTML docs up to its cap
