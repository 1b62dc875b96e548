"""A loopback HTTP server with per-path handlers, for crawler and local-web tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

# A route answers with (status, headers, body) or writes the response itself (a callable).
Route = tuple[int, dict[str, str], bytes] | Callable[[BaseHTTPRequestHandler], None]


@dataclass
class LoopbackServer:
    base: str  # "http://127.0.0.1:PORT"
    routes: dict[str, Route]
    hits: list[tuple[str, float]] = field(default_factory=list)  # (path, time.monotonic() on arrival)

    def paths(self) -> list[str]:
        return [p for p, _ in self.hits]


@pytest.fixture
def loopback_server() -> Iterator[LoopbackServer]:
    state = LoopbackServer(base="", routes={})
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server API
            with lock:
                state.hits.append((self.path, time.monotonic()))
            route = state.routes.get(self.path)
            if route is None:
                route = (404, {"Content-Type": "text/html"}, b"<h1>not found</h1>")
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

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
