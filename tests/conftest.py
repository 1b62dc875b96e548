"""Loopback HTTP servers with per-path routes, for the crawler, local-web and hostile tests: every server
binds 127.0.0.1 on a free port and is stopped when its test ends."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

# A route answers with (status, headers, body) or writes the response itself (a callable).
Route = tuple[int, dict[str, str], bytes] | Callable[[BaseHTTPRequestHandler], None]


@dataclass
class Server:
    base: str  # "http://127.0.0.1:PORT"
    port: int
    routes: dict[str, Route] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)  # request paths in arrival order
    arrivals: list[float] = field(default_factory=list)  # time.monotonic() of each hit


def _handler(state: Server, lock: threading.Lock) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server API
            with lock:
                state.hits.append(self.path)
                state.arrivals.append(time.monotonic())
            route = state.routes.get(self.path, (404, {"Content-Type": "text/html"}, b"<h1>not found</h1>"))
            if callable(route):
                route(self)
                return
            status, headers, body = route
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            if not any(k.lower() in ("content-length", "transfer-encoding") for k in headers):
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args) -> None:
            pass

    return Handler


@pytest.fixture
def serve() -> Iterator[Callable[[], Server]]:
    """``serve()`` starts one more loopback server; all are shut down when the test ends."""
    started: list[tuple[ThreadingHTTPServer, threading.Thread]] = []

    def start() -> Server:
        state = Server(base="", port=0)
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state, threading.Lock()))
        server.daemon_threads = True
        state.port = server.server_address[1]
        state.base = f"http://127.0.0.1:{state.port}"
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        started.append((server, thread))
        return state

    try:
        yield start
    finally:
        for server, _ in started:
            server.shutdown()
            server.server_close()


@pytest.fixture
def loopback_server(serve: Callable[[], Server]) -> Server:
    """One loopback server (``serve`` for several)."""
    return serve()


@pytest.fixture
def test_artifacts(request) -> Path:
    """A directory for what a test leaves for people to look at (screenshots, tables):
    ``$LIFECYCLE_TEST_ARTIFACTS`` (default ``<repo>/test-artifacts``) / ``<test name>``, emptied first."""
    import os
    import shutil

    root = Path(
        os.environ.get("LIFECYCLE_TEST_ARTIFACTS") or Path(__file__).resolve().parents[1] / "test-artifacts"
    )
    path = root / request.node.name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
