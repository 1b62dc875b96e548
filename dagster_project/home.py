"""Where artifacts live: ``<LIFECYCLE_HOME>/data/<asset>/<partition>/`` (default home: the repo root)."""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
UNPARTITIONED = "all"


def lifecycle_home() -> Path:
    """The project home from ``LIFECYCLE_HOME`` (created if missing), default the repo root."""
    home = Path(os.environ.get("LIFECYCLE_HOME") or REPO_ROOT).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def partition_dirname(partition: str | None) -> str:
    """A partition key as a relative directory: ``all`` when unpartitioned; a multi-dimensional key ``a|b``
    becomes ``a/b`` (a sweep cell of snapshot ``local-web`` lives in ``local-web/3e11_s16``, so one
    snapshot's cells are one directory)."""
    return str(partition).replace("|", "/") if partition else UNPARTITIONED


def artifact_dir(asset: str, partition: str | None, home: Path | None = None) -> Path:
    """``<home>/data/<asset>/<partition>``; unpartitioned assets use ``all``."""
    return (home or lifecycle_home()) / "data" / asset / partition_dirname(partition)


@functools.cache
def git_sha() -> str:
    """The code's git commit (``-dirty`` appended when the tree has uncommitted changes)."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
