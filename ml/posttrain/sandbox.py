"""Run untrusted Python (model-written code, its unit tests) in a separate, locked-down process.

The Llama 3 paper (§4.3.1) checks synthetic code by executing it and its generated unit tests; this is where
that code runs. Every run gets:

* a fresh temporary directory, the only place it can write (bubblewrap: a read-only root holding ``/usr``
  read-only and that directory, mounted at ``/sandbox``, also ``$HOME`` and ``$TMPDIR``);
* no network (a new, empty network namespace), its own PID namespace (everything it started dies with it),
  a new session, an empty environment;
* resource limits set before exec (``setrlimit``): CPU seconds, address space, processes of its user, file
  size, open files; a wall-clock limit enforced from outside by killing the process group;
* when started as root, an unprivileged user id of its own, so the process limit binds and every process
  the run started (a fork bomb's included) is found and killed afterwards.

Backends: ``bwrap`` (bubblewrap, installed by scripts/install-system-deps.sh) or, where it is missing,
``unshare`` + ``setpriv`` (network and PID namespaces, limits and the run's own user id; writes outside the
directory are then stopped by file permissions only, so world-writable places such as /tmp stay open —
use bubblewrap). Whatever the candidate does, :func:`run_python` returns a
:class:`SandboxResult` (exit code, signal, timed out, output capped) instead of raising.
"""

from __future__ import annotations

import dataclasses
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Started as root, each run gets a user id of its own from this range (no passwd entry needed): the process
# limit then counts only that run's processes, and whatever outlives the run is found by its user id.
SANDBOX_UIDS = (200_000, 1_200_000)


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
    """cpu_seconds / wall_seconds: CPU and wall-clock time; memory_bytes: address space; max_processes:
    processes of the sandbox user; file_bytes: largest file (stdout and stderr included); output_bytes:
    what is read back of stdout/stderr each (chosen: enough for test reports, small for memory)."""

    cpu_seconds: int = 5
    wall_seconds: float = 10.0
    memory_bytes: int = 512 * 2**20
    max_processes: int = 64
    file_bytes: int = 4 * 2**20
    max_open_files: int = 64
    output_bytes: int = 64 * 1024


@dataclasses.dataclass(frozen=True)
class SandboxResult:
    """How a run ended: ``returncode`` (negative = killed by that signal), ``timed_out`` (wall clock),
    ``stdout`` / ``stderr`` (first ``output_bytes``, decoded), ``backend`` and wall seconds."""

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    wall_s: float
    backend: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    @property
    def outcome(self) -> str:
        """ "ok", "timeout", "killed:SIGNAME" or "exit:N"."""
        if self.timed_out:
            return "timeout"
        if self.returncode < 0:
            return f"killed:{signal.Signals(-self.returncode).name}"
        return "ok" if self.returncode == 0 else f"exit:{self.returncode}"


def sandbox_python() -> str:
    """The interpreter candidates run with: the system's (stdlib only), else this one's base."""
    for cand in ("/usr/bin/python3", getattr(sys, "_base_executable", sys.executable)):
        if cand and Path(cand).is_file():
            return str(Path(cand).resolve())
    raise RuntimeError("no Python interpreter for the sandbox")


def backend() -> str:
    if shutil.which("bwrap"):
        return "bwrap"
    if shutil.which("unshare"):
        return "unshare"
    raise RuntimeError(
        "no sandbox backend: install bubblewrap (scripts/install-system-deps.sh) or util-linux"
    )


def _bwrap_command(workdir: Path, python: str) -> list[str]:
    cmd = ["bwrap", "--ro-bind", "/usr", "/usr"]
    for link in ("lib", "lib64", "bin", "sbin"):
        target = Path("/") / link
        if target.is_symlink():
            cmd += ["--symlink", os.readlink(target), str(target)]
        elif target.is_dir():
            cmd += ["--ro-bind", str(target), str(target)]
    prefix = Path(python).parent.parent
    if not str(prefix).startswith("/usr"):
        cmd += ["--ro-bind", str(prefix), str(prefix)]
    cmd += ["--proc", "/proc", "--dev", "/dev", "--bind", str(workdir), "/sandbox", "--remount-ro", "/"]
    cmd += ["--chdir", "/sandbox", "--unshare-all", "--die-with-parent", "--new-session", "--clearenv"]
    cmd += [
        "--setenv",
        "PATH",
        "/usr/bin:/bin",
        "--setenv",
        "HOME",
        "/sandbox",
        "--setenv",
        "TMPDIR",
        "/sandbox",
    ]
    return [*cmd, python, "-I", "-S", "-B", "main.py"]


def _unshare_command(workdir: Path, python: str, uid: int | None) -> list[str]:
    """Namespaces made as root, then the run's own user id (setpriv) before the interpreter starts; as a
    non-root caller, a user namespace first (where the kernel allows one)."""
    namespaces = ["--net", "--pid", "--fork", "--kill-child", "--mount-proc"]
    if uid is None:
        return ["unshare", "--user", "--map-root-user", *namespaces, python, "-I", "-S", "-B", "main.py"]
    drop = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs"]
    return ["unshare", *namespaces, *drop, python, "-I", "-S", "-B", "main.py"]


def _limit(limits: SandboxLimits):
    def apply() -> None:  # runs in the child between fork and exec
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.max_open_files, limits.max_open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def _processes_of(uid: int) -> list[int]:
    """Live processes (zombies excluded: they hold nothing and wait for their parent) of ``uid``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (
                    entry.stat().st_uid == uid
                    and (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
                ):
                    pids.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
    return pids


def _kill_user(uid: int, timeout_s: float = 10.0) -> None:
    """SIGKILL every process of the run's own ``uid`` until none is left (a fork bomb keeps forking)."""
    deadline = time.monotonic() + timeout_s
    while (pids := _processes_of(uid)) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)


def _read_capped(path: Path, n: int) -> str:
    with path.open("rb") as f:
        return f.read(n).decode("utf-8", errors="replace")


def run_python(
    code: str, limits: SandboxLimits = SandboxLimits(), files: dict[str, str] | None = None
) -> SandboxResult:
    """Run ``code`` as ``main.py`` (next to ``files``) in a fresh sandbox directory; never raises for
    what the code does."""
    which, python = backend(), sandbox_python()
    root = os.geteuid() == 0
    uid = random.randrange(*SANDBOX_UIDS)
    with tempfile.TemporaryDirectory(prefix="sandbox-") as tmp:
        workdir, logs = Path(tmp) / "work", Path(tmp) / "logs"
        workdir.mkdir(), logs.mkdir()
        for name, text in {**(files or {}), "main.py": code}.items():
            if "/" in name or name.startswith("."):
                raise ValueError(f"sandbox file name {name!r} must be a plain file name")
            (workdir / name).write_text(text, encoding="utf-8")
        if root:  # the sandbox user owns its directory, and nothing else
            os.chmod(tmp, 0o711)  # it may pass through the parent, not list it (logs stay the caller's)
            for p in (workdir, *workdir.iterdir()):
                os.chown(p, uid, uid)
        if which == "bwrap":
            cmd, as_user = _bwrap_command(workdir, python), root
        else:  # unshare needs root for its namespaces: it drops to the run's uid itself
            cmd, as_user = _unshare_command(workdir, python, uid if root else None), False
        t0 = time.monotonic()
        with (logs / "out").open("wb") as out, (logs / "err").open("wb") as err:
            proc = subprocess.Popen(
                cmd,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env={"PATH": "/usr/bin:/bin"},
                preexec_fn=_limit(limits),
                start_new_session=True,
                **({"user": uid, "group": uid, "extra_groups": []} if as_user else {}),
            )
            timed_out = False
            try:
                proc.wait(timeout=limits.wall_seconds)
            except subprocess.TimeoutExpired:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)  # the PID namespace dies with its first process
                proc.wait()
        wall = time.monotonic() - t0
        rc = proc.returncode
        if which == "bwrap" and rc > 128:  # bwrap exits 128 + N when its child is killed by signal N
            rc = -(rc - 128)
        if root:
            _kill_user(uid)  # nothing of the run outlives it
        return SandboxResult(
            rc,
            _read_capped(logs / "out", limits.output_bytes),
            _read_capped(logs / "err", limits.output_bytes),
            timed_out,
            wall,
            which,
        )
