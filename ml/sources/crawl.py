"""A polite breadth-first HTTP crawler that archives what it fetches as WARC.

One code path for every target: an ``https://`` seed on the internet and the loopback local web
(ml/sources/localweb.py) go through the same checks. Per URL, in order: scheme (http/https only), scope,
address (the host is resolved and every address that is not globally reachable unicast is refused
unless allow-listed: loopback, private, CGNAT, link-local, multicast, reserved, IPv6 transition
prefixes; the crawler then connects to that checked IP, so DNS cannot change the answer between check
and connect), robots.txt (fetched under the same scope and address checks, redirects included),
per-host politeness (concurrency + minimum interval), fetch with retries, redirects followed by hand
(every hop goes through all the checks again), content-type filter, streamed body with size and
decompression-bomb guards, each request cut at ``fetch_deadline_s`` however slowly the server drips.
Successful pages go to WARC (request, response, metadata records); every URL attempted gets one row in
``manifest.parquet``; a page that makes parsing raise is a ``record_error`` row, not the end of the crawl.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import ipaddress
import logging
import posixpath
import re
import socket
import threading
import time
import urllib.robotparser
import zlib
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

import pandas as pd
import urllib3

from ml.config import ConfigError, StageConfig
from ml.io import write_parquet
from ml.sources.field_checks import check_fields, check_name
from ml.sources.records import decode_declared
from ml.sources.warc import FetchedResponse, WarcSink

_log = logging.getLogger(__name__)

MANIFEST_COLUMNS: tuple[str, ...] = (
    "url",
    "final_url",
    "status",
    "bytes",
    "content_type",
    "depth",
    "fetch_time",
    "robots",
    "error",
    "warc_file",
    "warc_offset",
)
MAX_ROBOTS_BYTES = 500 * 1024  # RFC 9309 §2.5: parse at least the first 500 KiB
MAX_CRAWL_DELAY_S = 30.0  # chosen: honour robots.txt Crawl-delay, but a hostile value cannot stall a crawl
RATIO_CHECK_FLOOR = 64 * 1024  # chosen: small pages may legitimately compress > ratio; judge ratio above this
_CHUNK = 64 * 1024
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class CrawlConfig(StageConfig):
    """Crawler budgets, politeness and safety limits (the Llama 3 paper, §3.1.1, publishes none of these)."""

    seeds: tuple[str, ...] = ()
    scope: str = (
        "same_host"  # "same_host": the seeds' hosts; "allow_list": ``allow_hosts`` (``*.x`` = subdomains)
    )
    allow_hosts: tuple[str, ...] = ()
    # Hosts, IPs or CIDRs allowed to resolve to addresses that are not globally reachable (loopback,
    # private, ...); the local-web crawl sets ("127.0.0.1",), no preset does.
    allow_private_hosts: tuple[str, ...] = ()
    max_depth: int = 6  # chosen: link hops from a seed
    max_pages: int = 1000  # URLs attempted (manifest rows)
    max_total_bytes: int = 1 << 30  # stop scheduling once this many body bytes are archived
    max_response_bytes: int = 1 << 20  # Common Crawl truncates payloads at 1 MiB; here over-size is refused
    per_host_delay_s: float = 1.0  # chosen: 1 request/s/host, the common polite default
    per_host_concurrency: int = 1
    concurrency: int = 8  # worker threads across all hosts
    timeout_s: float = 10.0  # connect and per-read timeout
    # chosen: one HTTP request (connect, headers, body) ends within this, however slowly a server drips
    fetch_deadline_s: float = 60.0
    retries: int = 2  # extra attempts on timeouts, connection errors, 5xx and 429
    backoff_s: float = 1.0  # sleep before retry k is backoff_s * 2**k
    max_redirects: int = 5  # chosen: enough for http->https->www->canonical chains
    accepted_content_types: tuple[str, ...] = ("text/html", "application/xhtml+xml", "text/plain")
    user_agent: str = "llama-lifecycle-crawler/0.1"
    max_warc_file_bytes: int = 1 << 30  # Common Crawl WARC files are ~1 GiB
    max_decompression_ratio: float = 100.0  # chosen: HTML gzips 5-20x; 100x above 64 KiB is a bomb
    warc_prefix: str = "crawl"

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # Loopback local web: ~3,000 pages in a couple of minutes, so no delay and a few threads.
        # Loopback is not allowed here: the local-web crawl allows 127.0.0.1 itself, an https seed never.
        "tiny": {
            "max_depth": 8,
            "max_pages": 5000,
            "max_total_bytes": 512 << 20,
            "max_response_bytes": 2 << 20,
            "per_host_delay_s": 0.0,
            "per_host_concurrency": 4,
            "concurrency": 4,
            "timeout_s": 10.0,
            "retries": 1,
            "backoff_s": 0.1,
            "max_warc_file_bytes": 16 << 20,
        },
        # a `small` run crawls the `large` local web: 166,245 pages (2.6 GB) measured, HTML docs kept up to 4 MiB
        "small": {
            "max_depth": 8,
            "max_pages": 250_000,
            "max_total_bytes": 8 << 30,
            "max_response_bytes": 8 << 20,
            "concurrency": 64,
        },
        "8b": {"max_depth": 16, "max_pages": 10_000_000, "max_total_bytes": 1 << 40, "concurrency": 512},
        "70b": {"max_depth": 16, "max_pages": 10_000_000, "max_total_bytes": 1 << 40, "concurrency": 512},
        "405b": {"max_depth": 16, "max_pages": 10_000_000, "max_total_bytes": 1 << 40, "concurrency": 512},
    }

    def __post_init__(self) -> None:
        check_fields(
            self,
            minimum={"max_depth": 0, "retries": 0, "max_redirects": 0, "per_host_delay_s": 0.0,
                     "backoff_s": 0.0, "max_decompression_ratio": 1.0},
            positive=("max_pages", "max_total_bytes", "max_response_bytes", "per_host_concurrency",
                      "concurrency", "max_warc_file_bytes", "timeout_s", "fetch_deadline_s"),
        )  # fmt: skip
        if self.scope not in ("same_host", "allow_list"):
            raise ConfigError(f"CrawlConfig.scope must be 'same_host' or 'allow_list', got {self.scope!r}")
        for name in ("seeds", "allow_hosts", "allow_private_hosts", "accepted_content_types"):
            if any(not entry.strip() for entry in getattr(self, name)):
                raise ConfigError(f"CrawlConfig.{name} holds an empty entry: {getattr(self, name)!r}")
        if not self.accepted_content_types:
            raise ConfigError("CrawlConfig.accepted_content_types is empty: no page could be kept, got ()")
        if not self.user_agent.strip():
            raise ConfigError(f"CrawlConfig.user_agent must name the crawler, got {self.user_agent!r}")
        check_name("CrawlConfig.warc_prefix", self.warc_prefix)


@dataclass
class CrawlReport:
    pages_fetched: int
    bytes_fetched: int
    robots_refusals: int
    errors_by_kind: dict[str, int]
    pages_by_host: dict[str, int]
    warc_files: list[Path]
    manifest_path: Path
    duration_s: float
    urls_attempted: int = 0
    charset_fallbacks: int = 0

    def to_stats(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {
            "urls_attempted": self.urls_attempted,
            "pages_fetched": self.pages_fetched,
            "bytes_fetched": self.bytes_fetched,
            "robots_refusals": self.robots_refusals,
            "errors_total": sum(self.errors_by_kind.values()),
            "hosts": len(self.pages_by_host),
            "warc_files": len(self.warc_files),
            "duration_s": round(self.duration_s, 3),
            "charset_fallbacks": self.charset_fallbacks,
        }
        out.update({f"errors/{k}": n for k, n in sorted(self.errors_by_kind.items())})
        return out


# --------------------------------------------------------------------------------------------- URLs

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PCT = re.compile(r"%([0-9A-Fa-f]{2})")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _normalize_pct(part: str, safe: str) -> str:
    """Decode %XX of unreserved characters, upper-case the rest, percent-encode what must be."""

    def fix(m: re.Match) -> str:
        ch = chr(int(m.group(1), 16))
        return ch if ch in _UNRESERVED else "%" + m.group(1).upper()

    return quote(_PCT.sub(fix, part), safe=safe + "%")


def _remove_dot_segments(path: str) -> str:
    if not path:
        return "/"
    out = posixpath.normpath(path)
    out = re.sub(r"^/+", "/", out)  # normpath keeps a leading '//'
    if path.endswith("/") and not out.endswith("/"):
        out += "/"
    return out if out.startswith("/") else "/" + out


def normalize_url(url: str, base: str | None = None) -> str | None:
    """Canonical form of ``url`` (resolved against ``base``), or None if it cannot be parsed.

    Lower-cases scheme and host (IDNA for non-ASCII hosts), drops fragment, credentials and default
    port, removes dot segments and normalizes percent-encoding. Other schemes come back lower-cased
    and otherwise unchanged, so the caller can record them as refused.
    """
    url = url.strip()
    if base is not None:
        try:
            url = urljoin(base, url)
        except ValueError:
            return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        return f"{scheme}:{url.split(':', 1)[1]}" if scheme else None
    host = (parts.hostname or "").rstrip(".")
    if not host:
        return None
    try:
        host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        return None
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    path = _normalize_pct(_remove_dot_segments(parts.path), safe="/:@!$&'()*+,;=")
    query = _normalize_pct(parts.query, safe="/?:@!$&'()*+,;=")
    return urlunsplit((scheme, netloc, path, query, ""))


class _LinkParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.base: str | None = None
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "base" and self.base is None:
            self.base = dict(attrs).get("href")
        elif tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.hrefs.append(href)


def extract_links(html: str, page_url: str) -> list[str]:
    """Normalized absolute http(s) links of ``<a href>`` in ``html`` (``<base href>`` honoured), in order."""
    parser = _LinkParser()
    try:
        parser.feed(html)
        parser.close()
    except (AssertionError, ValueError):  # html.parser gives up on some broken markup; keep what it found
        pass
    base = normalize_url(parser.base, page_url) if parser.base else page_url
    base = base or page_url
    out: list[str] = []
    for href in parser.hrefs:
        if href.strip().lower().startswith(("mailto:", "javascript:", "tel:", "data:")):
            continue
        url = normalize_url(href, base)
        if url and url.startswith(("http://", "https://")):
            out.append(url)
    return out


# ----------------------------------------------------------------------------------------- safety


# Ranges Python's ``is_global`` calls global that a crawler must still refuse: IPv6 transition prefixes
# embed an IPv4 address that can be anything (127.0.0.1, 169.254.169.254), and 192.0.0.0/24 is the IETF
# protocol-assignment block (not globally reachable, RFC 6890; Python 3.11 calls most of it global).
_REFUSED_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("192.0.0.0/24", "192.88.99.0/24", "2002::/16", "64:ff9b::/96", "64:ff9b:1::/48", "::/96")
)


def _ip_is_special(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True unless ``ip`` is globally reachable unicast (CGNAT 100.64.0.0/10 and 6to4 included)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if not ip.is_global or ip.is_multicast:
        return True
    return any(ip.version == net.version and ip in net for net in _REFUSED_NETWORKS)


class AddressGuard:
    """Resolve a host and return the addresses the crawler may connect to."""

    def __init__(self, allow_private_hosts: tuple[str, ...]):
        self.hosts: set[str] = set()
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in allow_private_hosts:
            entry = entry.strip().lower().strip("[]")
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.hosts.add(entry)

    def allowed_ip(self, host: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if not _ip_is_special(ip):
            return True
        if host in self.hosts:
            return True
        return any(ip.version == net.version and ip in net for net in self.networks)

    def resolve(self, host: str, port: int) -> tuple[list[str], str]:
        """``(allowed IPs, error kind)``: error is ``refused_address`` or ``connection`` (DNS failure)."""
        host = host.strip("[]").lower()
        try:
            ips = [ipaddress.ip_address(host)]
        except ValueError:
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except (socket.gaierror, UnicodeError, OSError):
                return [], "connection"
            ips = []
            for info in infos:
                ip = ipaddress.ip_address(info[4][0].split("%")[0])
                if ip not in ips:
                    ips.append(ip)
        allowed = [str(ip) for ip in sorted(ips, key=lambda a: a.version) if self.allowed_ip(host, ip)]
        return allowed, ("" if allowed else "refused_address")


# ------------------------------------------------------------------------------------ politeness


class _HostGate:
    """Per-host politeness: a concurrency cap and a minimum interval between request starts.

    A host also rests ``delay`` after each request ends, so with concurrency 1 the server sees its
    requests arrive at least ``delay`` apart.
    """

    def __init__(self, concurrency: int, delay: float):
        self.sem = threading.BoundedSemaphore(concurrency)
        self.lock = threading.Lock()
        self.delay = delay
        self.next_start = 0.0

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        with self.sem:
            with self.lock:
                now = time.monotonic()
                start = max(now, self.next_start)
                self.next_start = start + self.delay
            if start > now:
                time.sleep(start - now)
            try:
                yield
            finally:
                with self.lock:
                    self.next_start = max(self.next_start, time.monotonic() + self.delay)


# ---------------------------------------------------------------------------------------- fetching


@dataclass
class _Hop:
    """The outcome of one HTTP request (no redirect following)."""

    status: int = 0
    error: str = ""
    location: str | None = None
    content_type: str = ""
    body: bytes = b""  # as received (Content-Encoding kept)
    decoded: bytes = b""
    response: FetchedResponse | None = None


_WATCH = threading.local()  # the _Watch of the request this thread is making, if any


class _Watch:
    """Cuts one request at its deadline: a timer shuts its socket down, which ends any blocked read."""

    def __init__(self, seconds: float):
        self.fired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def attach(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock = sock
            if self.fired:
                _shutdown(sock)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            _shutdown(self._sock)

    def __enter__(self) -> _Watch:
        _WATCH.current = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        _WATCH.current = None


def _shutdown(sock: socket.socket | None) -> None:
    if sock is not None:  # the plain socket call: on a TLS socket it acts on the fd under it
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _watched(cls: type) -> type:
    """``cls`` with its sockets handed to the thread's current :class:`_Watch` (new and reused ones)."""

    class Watched(cls):
        def _new_conn(self) -> socket.socket:
            sock = super()._new_conn()
            if (watch := getattr(_WATCH, "current", None)) is not None:
                watch.attach(sock)
            return sock

        def getresponse(self, *args: Any, **kw: Any) -> Any:
            if (watch := getattr(_WATCH, "current", None)) is not None:
                watch.attach(self.sock)
            return super().getresponse(*args, **kw)

    Watched.__name__ = f"Watched{cls.__name__}"
    return Watched


_WatchedHTTPConnection = _watched(urllib3.connection.HTTPConnection)
_WatchedHTTPSConnection = _watched(urllib3.connection.HTTPSConnection)


class _BodyTooBig(Exception):
    def __init__(self, kind: str):
        self.kind = kind


@dataclass
class _Budget:
    rows: int = 0
    bytes: int = 0


@dataclass
class _Task:
    depth: int
    seq: int
    url: str = field(compare=False)

    def __lt__(self, other: _Task) -> bool:
        return (self.depth, self.seq) < (other.depth, other.seq)


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _recorded_headers(headers: urllib3.HTTPHeaderDict, body_len: int) -> list[tuple[str, str]]:
    """Response headers as stored in the WARC record: the stored body is de-chunked, so the wire's
    Transfer-Encoding and a Content-Length that no longer matches are kept under X-Crawler- names."""
    out: list[tuple[str, str]] = []
    for name, value in headers.items():
        low = name.lower()
        if low == "transfer-encoding":  # urllib3 de-chunked the body
            out.append(("X-Crawler-Transfer-Encoding", value))
        elif low == "content-length" and value != str(body_len):
            out.append(("X-Crawler-Content-Length", value))
        elif low != "content-length":
            out.append((name, value))
    out.append(("Content-Length", str(body_len)))
    return out


class Crawler:
    """State of one crawl: frontier, seen-set, host gates, robots cache, connection pools, WARC sink."""

    def __init__(self, cfg: CrawlConfig, out_dir: Path):
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.guard = AddressGuard(cfg.allow_private_hosts)
        self.sink = WarcSink(self.out_dir, cfg.warc_prefix, cfg.max_warc_file_bytes, software=cfg.user_agent)
        self.rows: list[dict[str, Any]] = []
        self._lock = threading.Condition()
        self._frontier: list[_Task] = []
        self._seen: set[str] = set()
        self._seq = 0
        self._in_flight = 0
        self._budget = _Budget()
        self._gates: dict[str, _HostGate] = {}
        self._robots: dict[str, urllib.robotparser.RobotFileParser] = {}
        self._robots_locks: dict[str, threading.Lock] = {}
        self._pools: dict[tuple[str, str, int, str], urllib3.HTTPConnectionPool] = {}
        self._scope_netlocs: set[str] = set()
        self._failure: BaseException | None = None
        self.charset_fallbacks = 0  # HTML pages whose declared charset Python cannot decode with
        # The deadline's timer can only shut a socket down once connect() returned it: bound connect too.
        self._timeout = urllib3.Timeout(connect=min(cfg.timeout_s, cfg.fetch_deadline_s), read=cfg.timeout_s)

    # --- scope, gates, pools -------------------------------------------------------------------

    def in_scope(self, url: str) -> bool:
        parts = urlsplit(url)
        if self.cfg.scope == "same_host":
            return parts.netloc in self._scope_netlocs
        host = (parts.hostname or "").lower()
        for entry in self.cfg.allow_hosts:
            entry = entry.lower()
            if host == entry or (entry.startswith("*.") and (host.endswith(entry[1:]) or host == entry[2:])):
                return True
        return False

    def _gate(self, host: str, delay: float | None = None) -> _HostGate:
        with self._lock:
            gate = self._gates.get(host)
            if gate is None:
                gate = self._gates[host] = _HostGate(self.cfg.per_host_concurrency, self.cfg.per_host_delay_s)
            if delay is not None:
                gate.delay = max(gate.delay, delay)
            return gate

    def _pool(self, scheme: str, ip: str, port: int, host: str) -> urllib3.HTTPConnectionPool:
        key = (scheme, ip, port, host)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                size = self.cfg.per_host_concurrency
                if scheme == "https":
                    pool = urllib3.HTTPSConnectionPool(
                        ip, port, maxsize=size, retries=False, server_hostname=host, assert_hostname=host
                    )
                else:
                    pool = urllib3.HTTPConnectionPool(ip, port, maxsize=size, retries=False)
                pool.ConnectionCls = _WatchedHTTPSConnection if scheme == "https" else _WatchedHTTPConnection
                self._pools[key] = pool
            return pool

    # --- one request -----------------------------------------------------------------------------

    def _check(self, url: str) -> tuple[str, list[str]]:
        """Scheme, scope and address checks for one hop: ``(error kind, allowed IPs)``."""
        parts = urlsplit(url)
        if parts.scheme not in _DEFAULT_PORTS:
            return "refused_scheme", []
        if not self.in_scope(url):
            return "out_of_scope", []
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
        ips, error = self.guard.resolve(parts.hostname or "", port)
        return error, ips

    def _read_body(self, resp: urllib3.BaseHTTPResponse, encoding: str) -> tuple[bytes, bytes]:
        """Stream the raw body, enforcing the size cap and the decompression-bomb guard."""
        cap = self.cfg.max_response_bytes
        if encoding in ("gzip", "x-gzip"):
            decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            decoder = zlib.decompressobj()
        else:
            decoder = None
        raw, decoded = bytearray(), bytearray()
        for chunk in resp.stream(_CHUNK, decode_content=False):
            raw += chunk
            if len(raw) > cap:
                raise _BodyTooBig("too_large")
            if decoder is None:
                continue
            try:
                decoded += decoder.decompress(chunk, cap + 1 - len(decoded))
            except zlib.error as exc:
                raise _BodyTooBig("bad_content_type") from exc
            if len(decoded) > cap or decoder.unconsumed_tail:
                raise _BodyTooBig("decompression_bomb")
            if (
                len(decoded) > RATIO_CHECK_FLOOR
                and len(decoded) / len(raw) > self.cfg.max_decompression_ratio
            ):
                raise _BodyTooBig("decompression_bomb")
        if decoder is not None:
            try:
                decoded += decoder.flush()
            except zlib.error as exc:
                raise _BodyTooBig("bad_content_type") from exc
            return bytes(raw), bytes(decoded)
        return bytes(raw), bytes(raw)

    def _request(self, url: str, ip: str, want_body_types: tuple[str, ...] | None) -> _Hop:
        """One GET to ``ip`` for ``url`` (no retries, no redirects). Raises urllib3 errors."""
        parts = urlsplit(url)
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
        host = parts.hostname or ""
        target = urlunsplit(("", "", parts.path or "/", parts.query, ""))
        headers = {
            "Host": parts.netloc,
            "User-Agent": self.cfg.user_agent,
            "Accept": "text/html,application/xhtml+xml,text/plain;q=0.9,*/*;q=0.1",
            "Accept-Encoding": "gzip, deflate",
        }
        pool = self._pool(parts.scheme, ip, port, host)
        start = time.monotonic()
        resp = pool.urlopen(
            "GET",
            target,
            headers=headers,
            redirect=False,
            retries=False,
            assert_same_host=False,
            preload_content=False,
            decode_content=False,
            timeout=self._timeout,
        )
        hop = _Hop(status=resp.status, content_type=resp.headers.get("Content-Type", ""))
        peer_ip = ip  # the checked address the pool connected to; confirmed from the socket when possible
        with contextlib.suppress(OSError, AttributeError, IndexError, TypeError):
            peer_ip = resp.connection.sock.getpeername()[0]
        keep = False
        try:
            keep = self._read_response(resp, hop, want_body_types)
        finally:
            if keep:
                resp.release_conn()
            else:
                resp.close()
        if not keep:
            return hop
        hop.response = FetchedResponse(
            url=url,
            request_line=f"GET {target} HTTP/1.1",
            request_headers=list(headers.items()),
            status_line=f"{resp.status} {resp.reason or ''}".strip(),
            protocol={10: "HTTP/1.0", 11: "HTTP/1.1", 20: "HTTP/2"}.get(resp.version, "HTTP/1.1"),
            response_headers=_recorded_headers(resp.headers, len(hop.body)),
            body=hop.body,
            peer_ip=peer_ip,
            fetch_ms=int((time.monotonic() - start) * 1000),
            depth=0,
            outlinks=0,
            robots="allowed",
        )
        return hop

    def _read_response(
        self, resp: urllib3.BaseHTTPResponse, hop: _Hop, want_body_types: tuple[str, ...] | None
    ) -> bool:
        """Fill ``hop`` from ``resp``: a redirect, an error kind or the body; True if a body was read."""
        if 300 <= resp.status < 400 and resp.headers.get("Location"):
            hop.location = resp.headers["Location"]
            return False
        if resp.status >= 400:
            hop.error = "http_5xx" if resp.status >= 500 else "http_4xx"
            return False
        if want_body_types is not None and _media_type(hop.content_type) not in want_body_types:
            hop.error = "bad_content_type"
            return False
        length = resp.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > self.cfg.max_response_bytes:
            hop.error = "too_large"
            return False
        encoding = resp.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in ("", "identity", "gzip", "x-gzip", "deflate"):
            hop.error = "bad_content_type"
            return False
        try:
            hop.body, hop.decoded = self._read_body(resp, encoding)
        except _BodyTooBig as exc:
            hop.error = exc.kind
            return False
        return True

    def _fetch_once_with_retries(self, url: str, ips: list[str], want: tuple[str, ...] | None) -> _Hop:
        host = urlsplit(url).hostname or ""
        hop = _Hop()
        for attempt in range(self.cfg.retries + 1):
            if attempt:
                time.sleep(self.cfg.backoff_s * 2 ** (attempt - 1))
            watch = _Watch(self.cfg.fetch_deadline_s)
            try:
                with self._gate(host).slot(), watch:
                    hop = self._request(url, ips[attempt % len(ips)], want)
            except (urllib3.exceptions.TimeoutError, TimeoutError):
                hop = _Hop(error="timeout")
            except (urllib3.exceptions.HTTPError, OSError):
                hop = _Hop(error="connection")
            if watch.fired:  # whatever the cut looked like (a short body, a reset), it was the deadline
                return _Hop(error="deadline")  # not retried: a server this slow gets one deadline per URL
            retryable = hop.error in ("timeout", "connection") or hop.status in _RETRY_STATUS
            if not retryable:
                break
        return hop

    def fetch(
        self, url: str, want: tuple[str, ...] | None, robots_txt: bool = False
    ) -> tuple[_Hop, str, str]:
        """Fetch ``url`` following redirects by hand: ``(final hop, final url, robots decision)``.

        ``want`` is the accepted media types (None: any). Every hop passes the scheme, scope and address
        checks; robots.txt rules are checked per hop unless fetching robots.txt itself (``robots_txt``).
        """
        current = url
        for n_hop in range(self.cfg.max_redirects + 1):
            error, ips = self._check(current)
            if error:
                return _Hop(error=error), current, "allowed"
            if not robots_txt and not self._robots_allow(current):
                return _Hop(), current, "disallowed"
            hop = self._fetch_once_with_retries(current, ips, want)
            if hop.location is None:
                return hop, current, "allowed"
            nxt = normalize_url(hop.location, current)
            if nxt is None:
                return _Hop(status=hop.status, error="refused_scheme"), current, "allowed"
            if n_hop == self.cfg.max_redirects:
                return _Hop(status=hop.status, error="redirect_limit"), current, "allowed"
            if not robots_txt:
                with self._lock:
                    self._seen.add(nxt)
            current = nxt
        raise AssertionError("unreachable")

    # --- robots.txt ------------------------------------------------------------------------------

    def _robots_allow(self, url: str) -> bool:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        with self._lock:
            lock = self._robots_locks.setdefault(origin, threading.Lock())
        with lock:
            rp = self._robots.get(origin)
            if rp is None:
                rp = self._robots[origin] = self._load_robots(origin)
        return rp.can_fetch(self.cfg.user_agent, url)

    def _load_robots(self, origin: str) -> urllib.robotparser.RobotFileParser:
        """RFC 9309: 2xx → parse; 4xx → allow all; 5xx or unreachable → disallow all.

        A redirect out of scope or to a refused address counts as unreachable: disallow all."""
        rp = urllib.robotparser.RobotFileParser(origin + "/robots.txt")
        hop, _, _ = self.fetch(origin + "/robots.txt", want=None, robots_txt=True)
        if hop.error == "http_4xx":
            rp.allow_all = True
        elif hop.error or not 200 <= hop.status < 300:
            rp.disallow_all = True
        else:
            text = hop.decoded[:MAX_ROBOTS_BYTES].decode("utf-8", errors="replace")
            rp.parse(text.splitlines())
            delay = rp.crawl_delay(self.cfg.user_agent)
            if delay:
                self._gate(urlsplit(origin).hostname or "", min(float(delay), MAX_CRAWL_DELAY_S))
        rp.modified()
        return rp

    # --- frontier --------------------------------------------------------------------------------

    def _push(self, url: str, depth: int) -> None:
        """Add ``url`` unless seen; caller holds the lock."""
        if url in self._seen:
            return
        self._seen.add(url)
        heapq.heappush(self._frontier, _Task(depth, self._seq, url))
        self._seq += 1

    def _budget_left(self) -> bool:
        return self._budget.rows < self.cfg.max_pages and self._budget.bytes < self.cfg.max_total_bytes

    def _next_task(self) -> _Task | None:
        with self._lock:
            while True:
                if self._failure is not None:
                    return None
                if self._frontier and self._budget_left():
                    task = heapq.heappop(self._frontier)
                    self._budget.rows += 1
                    self._in_flight += 1
                    return task
                if self._in_flight == 0 or not self._budget_left():
                    self._lock.notify_all()
                    return None
                self._lock.wait()

    def _process(self, task: _Task) -> None:
        row: dict[str, Any] = {
            "url": task.url,
            "final_url": task.url,
            "status": 0,
            "bytes": 0,
            "content_type": "",
            "depth": task.depth,
            "fetch_time": _now_iso(),
            "robots": "allowed",
            "error": "",
            "warc_file": "",
            "warc_offset": -1,
        }
        try:
            fetched, links = self._fetch_page(task, row)
        except Exception as exc:  # one hostile page must not end the crawl: named in the log, counted
            _log.warning("crawl: %s failed: %s: %s", task.url, type(exc).__name__, exc, exc_info=exc)
            fetched, links = None, []
            row["error"] = "record_error"
        if fetched is not None:  # a failing WARC write (disk full) is not a page fault: it ends the crawl
            warc_file, offset = self.sink.write(fetched)
            row.update(bytes=len(fetched.body), warc_file=warc_file, warc_offset=offset)
        with self._lock:
            self.rows.append(row)
            self._budget.bytes += row["bytes"]
            if task.depth < self.cfg.max_depth:
                for link in links:
                    if self.in_scope(link):
                        self._push(link, task.depth + 1)

    def _fetch_page(self, task: _Task, row: dict[str, Any]) -> tuple[FetchedResponse | None, list[str]]:
        """Fetch ``task.url`` and parse its links; ``(response to archive or None, links)``."""
        hop, final_url, robots = self.fetch(task.url, want=self.cfg.accepted_content_types)
        row.update(final_url=final_url, robots=robots, status=hop.status, content_type=hop.content_type)
        row["error"] = hop.error
        if robots != "allowed" or hop.error or hop.response is None or not 200 <= hop.status < 300:
            return None, []
        links: list[str] = []
        if _media_type(hop.content_type) in ("text/html", "application/xhtml+xml"):
            html, fell_back = decode_declared(hop.decoded, hop.content_type)
            if fell_back:
                with self._lock:
                    self.charset_fallbacks += 1
            links = extract_links(html, final_url)
        return dataclasses.replace(hop.response, depth=task.depth, outlinks=len(links)), links

    def _worker(self) -> None:
        while True:
            task = self._next_task()
            if task is None:
                return
            try:
                self._process(task)
            except BaseException as exc:  # a bug, not a fetch error: stop the crawl and re-raise
                with self._lock:
                    self._failure = self._failure or exc
                raise
            finally:
                with self._lock:
                    self._in_flight -= 1
                    self._lock.notify_all()

    def run(self) -> CrawlReport:
        start = time.monotonic()
        seeds: list[str] = []
        for seed in self.cfg.seeds:
            url = normalize_url(seed)
            if url is None:
                raise ConfigError(f"CrawlConfig.seeds: cannot parse seed URL {seed!r}")
            seeds.append(url)
            if url.startswith(("http://", "https://")):
                self._scope_netlocs.add(urlsplit(url).netloc)
        with self._lock:
            for url in seeds:
                self._push(url, 0)
        try:
            with ThreadPoolExecutor(self.cfg.concurrency, thread_name_prefix="crawl") as pool:
                futures = [pool.submit(self._worker) for _ in range(self.cfg.concurrency)]
                for f in futures:
                    f.result()
        finally:
            self.sink.close()
            for p in self._pools.values():
                p.close()
        manifest = pd.DataFrame(self.rows, columns=list(MANIFEST_COLUMNS))
        manifest = manifest.astype(
            {"status": "int32", "bytes": "int64", "depth": "int32", "warc_offset": "int64"}
        )
        manifest_path = write_parquet(manifest, self.out_dir / "manifest.parquet")
        fetched = manifest[manifest["warc_file"] != ""]
        hosts = Counter(urlsplit(u).netloc for u in fetched["final_url"])
        return CrawlReport(
            pages_fetched=len(fetched),
            bytes_fetched=int(fetched["bytes"].sum()),
            robots_refusals=int((manifest["robots"] == "disallowed").sum()),
            errors_by_kind=dict(sorted(Counter(e for e in manifest["error"] if e).items())),
            pages_by_host=dict(sorted(hosts.items())),
            warc_files=list(self.sink.files),
            manifest_path=manifest_path,
            duration_s=time.monotonic() - start,
            urls_attempted=len(manifest),
            charset_fallbacks=self.charset_fallbacks,
        )


def crawl(cfg: CrawlConfig, out_dir: Path) -> CrawlReport:
    """Crawl from ``cfg.seeds`` into ``out_dir`` (WARC files + ``manifest.parquet``)."""
    out_dir = Path(out_dir)
    if not cfg.seeds:
        raise ConfigError("CrawlConfig.seeds is empty: give at least one seed URL")
    existing = sorted(out_dir.glob(f"{cfg.warc_prefix}-*.warc.gz")) if out_dir.is_dir() else []
    if existing:
        raise FileExistsError(
            f"{out_dir}: already holds crawl output ({existing[0].name}); use a fresh directory"
        )
    return Crawler(cfg, out_dir).run()
