"""The code sandbox refuses network, writes outside its directory, fork bombs and over-time runs, and
still reports how each run ended."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from ml.posttrain.sandbox import SANDBOX_UIDS, SandboxLimits, _processes_of, backend, run_python

pytestmark = pytest.mark.skipif(backend() != "bwrap", reason="bubblewrap not installed")

FAST = SandboxLimits(cpu_seconds=2, wall_seconds=20)


def sandbox_processes() -> list[int]:
    """Live processes of any sandbox run's user id (zombies excluded)."""
    uids = set()
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and SANDBOX_UIDS[0] <= p.stat().st_uid < SANDBOX_UIDS[1]:
                uids.add(p.stat().st_uid)
        except FileNotFoundError:
            continue
    return [pid for uid in uids for pid in _processes_of(uid)]


def test_runs_code_and_reports_output():
    r = run_python("import sys\nprint('hello')\nprint('oops', file=sys.stderr)\nsys.exit(3)", FAST)
    assert (r.returncode, r.stdout, r.stderr, r.timed_out, r.outcome) == (
        3,
        "hello\n",
        "oops\n",
        False,
        "exit:3",
    )
    r = run_python(
        "open('out.txt', 'w').write('x')\nprint(open('data.txt').read())", FAST, files={"data.txt": "42"}
    )
    assert r.ok and r.stdout == "42\n"


def test_no_network_even_to_the_hosts_loopback():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    hits: list[object] = []
    server.settimeout(5)
    t = threading.Thread(target=lambda: hits.append(_accept(server)), daemon=True)
    t.start()
    code = (
        "import socket\n"
        "for host in ('127.0.0.1', '1.1.1.1', 'example.com'):\n"
        "    try:\n"
        f"        socket.create_connection((host, {port} if host == '127.0.0.1' else 80), timeout=2)\n"
        "        print(host, 'CONNECTED')\n"
        "    except OSError as e:\n"
        "        print(host, 'refused', type(e).__name__)\n"
    )
    r = run_python(code, FAST)
    t.join()
    server.close()
    assert r.ok and "CONNECTED" not in r.stdout and r.stdout.count("refused") == 3, r.stdout
    assert hits == [None]  # the host's server saw no connection


def _accept(server: socket.socket):
    try:
        return server.accept()
    except TimeoutError:
        return None


def test_writes_only_inside_its_directory(tmp_path):
    target = tmp_path / "escaped.txt"
    code = (
        "import os\n"
        f"for p in [{str(target)!r}, '/usr/evil', '/etc/evil', '/root/evil', '../evil', '/tmp/evil', '/sandbox/ok.txt']:\n"
        "    try:\n"
        "        open(p, 'w').write('x'); print('wrote', p)\n"
        "    except OSError as e:\n"
        "        print('refused', p, e.errno)\n"
    )
    r = run_python(code, FAST)
    assert r.ok and r.stdout.count("refused") == 6 and r.stdout.endswith("wrote /sandbox/ok.txt\n"), r.stdout
    assert not target.exists() and not Path("/usr/evil").exists()


def test_fork_bomb_is_contained_and_reported():
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    r = run_python(bomb, SandboxLimits(cpu_seconds=2, wall_seconds=3, max_processes=32))
    assert r.timed_out and r.outcome == "timeout"
    assert sandbox_processes() == []  # every process of the run was killed
    assert run_python("print('still fine')", FAST).stdout == "still fine\n"


def test_over_time_runs_are_stopped_and_reported():
    r = run_python("import time\ntime.sleep(60)", SandboxLimits(wall_seconds=1))
    assert r.timed_out and r.outcome == "timeout" and r.wall_s < 10
    r = run_python("while True:\n    pass", SandboxLimits(cpu_seconds=1, wall_seconds=60))
    assert not r.timed_out and r.outcome == "killed:SIGXCPU"


def test_memory_and_output_limits():
    r = run_python("x = bytearray(2**31)", SandboxLimits(memory_bytes=256 * 2**20))
    assert r.outcome == "exit:1" and r.stderr.rstrip().endswith("MemoryError")
    r = run_python("print('x' * 10**7)", SandboxLimits(file_bytes=2**20, output_bytes=1000))
    assert len(r.stdout) == 1000 and "File too large" in r.stderr


def test_unshare_fallback_still_refuses_network_and_contains_forks(monkeypatch):
    import ml.posttrain.sandbox as sandbox

    monkeypatch.setattr(sandbox, "backend", lambda: "unshare")
    code = (
        "import socket\n"
        "try:\n    socket.create_connection(('1.1.1.1', 80), timeout=2)\nexcept OSError as e:\n    print('net', e.errno)\n"
        "try:\n    open('/usr/evil', 'w')\nexcept OSError as e:\n    print('usr', e.errno)\n"
    )
    r = run_python(code, FAST)
    assert (r.backend, r.stdout) == ("unshare", "net 101\nusr 13\n")  # unreachable; permission denied
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    assert run_python(bomb, SandboxLimits(wall_seconds=2, max_processes=32)).outcome == "timeout"
    assert sandbox_processes() == []
