"""Real services for the operations tests, each on a free loopback port and stopped when its test ends:
a PostgreSQL cluster (initdb into a temp dir, pg_ctl as an unprivileged user), an MLflow tracking server,
the Dagster webserver. Each process is started in its own session and stopped by its own id."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bindir() -> Path | None:
    """The directory of ``initdb``/``pg_ctl``: on PATH, else Debian's newest ``/usr/lib/postgresql/N/bin``."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(dirs[-1]).parent if dirs else None


def _as_postgres_user(data: Path) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its tools as the ``postgres`` user (Debian's package
    creates it), owning the cluster's directory; otherwise as ourselves."""
    if os.geteuid() != 0:
        return []
    try:
        user = pwd.getpwnam("postgres")
    except KeyError as exc:
        raise RuntimeError("running as root and there is no 'postgres' user to run PostgreSQL as") from exc
    os.chown(data, user.pw_uid, user.pw_gid)
    return ["runuser", "-u", "postgres", "--"]


def _run(cmd: list[str]) -> None:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")


@contextlib.contextmanager
def postgres_server(bindir: Path) -> Iterator[str]:
    """A throwaway cluster on 127.0.0.1:<free port> (trust auth, user ``lifecycle``); yields its base URL
    ``postgresql://lifecycle@127.0.0.1:PORT``. The cluster is stopped and deleted afterwards."""
    data = Path(tempfile.mkdtemp(prefix="lifecycle-pg-"))
    as_user = _as_postgres_user(data)
    db, port = data / "db", free_port()
    _run([*as_user, str(bindir / "initdb"), "-D", str(db), "-U", "lifecycle", "--auth=trust", "-E", "UTF8"])
    opts = f"-h 127.0.0.1 -p {port} -k {data} -c fsync=off"
    _run(
        [*as_user, str(bindir / "pg_ctl"), "-D", str(db), "-l", str(data / "log"), "-o", opts, "-w", "start"]
    )
    try:
        yield f"postgresql://lifecycle@127.0.0.1:{port}"
    finally:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            _run([*as_user, str(bindir / "pg_ctl"), "-D", str(db), "-m", "fast", "-w", "stop"])
        shutil.rmtree(data, ignore_errors=True)


def create_databases(base_url: str, *names: str) -> None:
    import psycopg2

    conn = psycopg2.connect(f"{base_url}/postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for name in names:
                cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()


def query(url: str, sql: str, *args) -> list[tuple]:
    import psycopg2

    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()
    finally:
        conn.close()


def wait_ready(proc: subprocess.Popen, ready_url: str, log: Path, timeout: float = 120) -> None:
    """Until ``ready_url`` answers 200; the log's tail in the error if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(ready_url, timeout=2) as resp:
                if resp.status == 200:
                    return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{ready_url} not ready after {timeout}s:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


@contextlib.contextmanager
def service(cmd: list[str], log: Path, ready_url: str | None, env: dict[str, str]) -> Iterator:
    """Start ``cmd`` (output to ``log``), wait until ``ready_url`` answers 200 (None: the caller waits with
    ``wait_ready``), stop it and what it forked afterwards."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True
        )
    try:
        if ready_url:
            wait_ready(proc, ready_url, log)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # its session: the server and the workers it forked
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
