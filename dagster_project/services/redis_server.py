"""A throwaway local ``redis-server`` (no persistence) for tests, benchmarks and single-machine runs."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis

HOST = "127.0.0.1"


class RedisServerError(RuntimeError):
    """redis-server is missing or did not come up; the message says why."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def redis_server(
    port: int = 0, data_dir: str | Path | None = None, timeout_s: float = 10.0
) -> Iterator[tuple[str, int]]:
    """Start ``redis-server`` on 127.0.0.1 (``port=0``: a free port), yield ``(host, port)``, then stop it.

    Nothing is saved (``--save ''``, no AOF); ``data_dir`` (default: a temp dir) is only its working directory.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisServerError(
            "redis-server binary not found on PATH; install it: apt-get install redis-server"
        )
    port = port or _free_port()
    with contextlib.ExitStack() as stack:
        workdir = Path(data_dir) if data_dir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        workdir.mkdir(parents=True, exist_ok=True)
        cmd = [binary, "--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "no",
               "--dir", str(workdir), "--daemonize", "no", "--loglevel", "warning"]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        client = redis.Redis(host=HOST, port=port, socket_connect_timeout=0.5)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                if proc.poll() is not None:
                    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                    raise RedisServerError(
                        f"redis-server on port {port} exited with code {proc.returncode}: {out}"
                    )
                try:
                    if client.ping():
                        break
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise RedisServerError(
                        f"redis-server on port {port} did not answer PING within {timeout_s}s"
                    )
                time.sleep(0.02)
            yield HOST, port
        finally:
            client.close()
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout:
                proc.stdout.close()
