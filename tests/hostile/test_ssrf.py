"""Server-side request forgery: addresses that are not globally reachable, the tiny preset, robots.txt.

The local services this machine runs (Dagster UI, MLflow) listen on 127.0.0.1 like the local web does;
here a second loopback server stands in for them and must never see a request.
"""

from __future__ import annotations

import ipaddress
import socket

import pandas as pd
import pytest

from ml.sources.crawl import AddressGuard, CrawlConfig, crawl

pytestmark = pytest.mark.timeout(60)

HTML = {"Content-Type": "text/html"}


@pytest.mark.parametrize(
    "address",
    [
        "100.64.0.1",  # carrier-grade NAT (cloud metadata on some providers)
        "100.127.255.254",
        "2002::1",  # 6to4: the IPv4 it embeds can be anything, 127.0.0.1 included
        "2002:7f00:1::1",
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "::127.0.0.1",  # IPv4-compatible
        "::ffff:100.64.0.1",  # IPv4-mapped CGNAT
        "192.0.0.8",  # IETF protocol assignments
        "224.0.0.1",
        "127.0.0.1",
        "10.1.2.3",
        "169.254.169.254",
        "fd00::1",
        "::1",
    ],
)
def test_guard_refuses_what_is_not_global(address):
    guard = AddressGuard(())
    assert guard.allowed_ip(address, ipaddress.ip_address(address)) is False
    assert guard.resolve(address, 80) == ([], "refused_address")


@pytest.mark.parametrize("host", ["2130706433", "0x7f.1", "0177.0.0.1", "127.1", "localhost"])
def test_guard_refuses_loopback_spelled_otherwise(host):
    assert AddressGuard(()).resolve(host, 80) == ([], "refused_address")


def test_guard_allows_global_and_explicitly_allowed():
    guard = AddressGuard(("127.0.0.1",))
    assert guard.resolve("93.184.215.14", 443) == (["93.184.215.14"], "")
    assert guard.resolve("2606:4700::1111", 443) == (["2606:4700::1111"], "")
    assert guard.resolve("127.0.0.1", 80) == (["127.0.0.1"], "")
    assert guard.resolve("100.64.0.1", 80) == ([], "refused_address")  # allowing loopback allows only it


def test_tiny_preset_with_https_seed_refuses_loopback(serve, tmp_path, monkeypatch):
    s = serve()
    s.routes["/"] = (200, HTML, b"<p>local service</p>")
    assert CrawlConfig.from_preset("tiny").allow_private_hosts == ()
    # A real-looking https host whose DNS answer is loopback (DNS rebinding, a hostile resolver).
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kw):
        return real_getaddrinfo("127.0.0.1" if host == "docs.example.org" else host, *args, **kw)

    connects: list = []
    real_connect = socket.socket.connect
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", lambda sock, a: connects.append(a) or real_connect(sock, a))
    cfg = CrawlConfig.from_preset("tiny", seeds=(f"https://docs.example.org:{s.port}/",), retries=0)
    report = crawl(cfg, tmp_path)
    assert pd.read_parquet(report.manifest_path)["error"].tolist() == ["refused_address"]
    assert connects == [] and s.hits == []


def test_robots_redirects_stay_in_scope(serve, tmp_path):
    site, victim = serve(), serve()  # victim: what the Dagster UI (:3000) or MLflow (:5000) would be
    victim.routes["/robots.txt"] = (200, {"Content-Type": "text/plain"}, b"User-agent: *\nAllow: /\n")
    site.routes.update(
        {
            "/robots.txt": (302, {"Location": "/robots-hop"}, b""),  # in scope: followed
            "/robots-hop": (301, {"Location": f"{victim.base}/robots.txt"}, b""),  # out of scope
            "/": (200, HTML, f'<a href="{victim.base}/api/runs">x</a><a href="/to-victim">y</a>'.encode()),
            "/to-victim": (302, {"Location": f"{victim.base}/ajax/api/2.0/mlflow/experiments/list"}, b""),
        }
    )
    cfg = CrawlConfig(
        seeds=(site.base + "/",), allow_private_hosts=("127.0.0.1",), per_host_delay_s=0.0, retries=0
    )
    report = crawl(cfg, tmp_path)
    assert victim.hits == []
    assert site.hits == ["/robots.txt", "/robots-hop"]
    m = pd.read_parquet(report.manifest_path)
    assert m[["url", "robots"]].values.tolist() == [[site.base + "/", "disallowed"]]  # robots unreachable


def test_robots_of_an_allowed_redirect_target_is_checked_too(serve, tmp_path):
    site, other = serve(), serve()
    other.routes["/robots.txt"] = (302, {"Location": f"{site.base}/secret-robots"}, b"")
    other.routes["/page"] = (200, HTML, b"<p>other page</p>")
    site.routes["/"] = (302, {"Location": f"{other.base}/page"}, b"")
    scope = dict(scope="allow_list", allow_hosts=("127.0.0.1",))  # both ports in scope
    cfg = CrawlConfig(seeds=(site.base + "/",), allow_private_hosts=("127.0.0.1",), per_host_delay_s=0.0,
                      retries=0, **scope)  # fmt: skip
    report = crawl(cfg, tmp_path)
    m = pd.read_parquet(report.manifest_path)
    assert m[["final_url", "robots", "error"]].values.tolist() == [[f"{other.base}/page", "allowed", ""]]
    assert other.hits == ["/robots.txt", "/page"]  # its robots.txt redirect went to an in-scope 404
    assert site.hits == ["/robots.txt", "/", "/secret-robots"]
