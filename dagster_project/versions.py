"""Versioned artifacts: every materialization writes a new immutable version, and "current" moves to it
only after its blocking checks pass and DVC has recorded it.

Layout for asset ``A``, partition ``P`` (``all`` when unpartitioned)::

    data/A/P/                                   the current version: what DVC records (dvc.yaml outs) and people open
    data/A/.versions/P/
        v20261205T061530.123456-1a2b3c4d/       one immutable directory per materialization; the current one
                                                shares its files with data/A/P/ through hard links (no copy)
        v20261205T061530.123456-1a2b3c4d.json   its record: status, run id, created, md5, reason
        CURRENT                                 the id of the current version
        PROMOTING.json                          only while a promotion is in flight: the journal recovery reads

Status of a version: ``pending`` (written, checks not yet passed) -> ``current`` -> ``superseded``; or
``failed`` (a blocking check failed, DVC refused it, or its promotion was interrupted). Failed versions are
kept for inspection until ``lifecycle gc`` removes them; superseded ones beyond the newest
``LIFECYCLE_KEEP_VERSIONS`` (default 3) are pruned after each promotion.

Promotion (``VersionStore.promote``): journal -> hard-link copy of the version beside ``P`` -> one atomic
``renameat2(RENAME_EXCHANGE)`` of that copy with ``P`` (two renames where the filesystem lacks it) -> DVC
records ``P`` -> records and ``CURRENT`` updated -> journal removed. Any error on the way, and any crash
(found by the journal on the next access), rolls back: ``P`` holds the previous version again, DVC's record
for it is restored, and the new version is marked failed. So at every instant either the old or the new
version is current, never neither.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import filecmp
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from dagster_project.home import artifact_dir, lifecycle_home, partition_dirname
from ml.io import atomic_write_text

VERSIONS_DIR = ".versions"
CURRENT = "CURRENT"
JOURNAL = "PROMOTING.json"
DEFAULT_KEEP = 3


class Recorder(Protocol):
    """What records a promoted version outside the filesystem (DVC): ``track`` returns its md5."""

    def track(self, path: Path) -> str: ...

    def snapshot(self, path: Path) -> Any: ...

    def restore(self, path: Path, snap: Any) -> None: ...


class VersionError(RuntimeError):
    """A version is missing, or a promotion failed (the previous version is current again)."""


def keep_versions() -> int:
    raw = os.environ.get("LIFECYCLE_KEEP_VERSIONS", str(DEFAULT_KEEP))
    try:
        keep = int(raw)
    except ValueError:
        raise VersionError(f"LIFECYCLE_KEEP_VERSIONS must be an integer >= 1, got {raw!r}") from None
    if keep < 1:
        raise VersionError(f"LIFECYCLE_KEEP_VERSIONS must be an integer >= 1, got {raw!r}")
    return keep


def link_tree(src: Path, dst: Path) -> None:
    """Copy a directory tree as hard links (same filesystem), falling back to byte copies."""

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link, symlinks=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, f"renameat2({a}, {b}, RENAME_EXCHANGE): {os.strerror(err)}")


def swap_in(staging: Path, current: Path) -> Path | None:
    """Make ``staging`` the directory at ``current``; returns where the old content now is (None if none)."""
    if not current.exists():
        staging.rename(current)
        return None
    if _exchange(staging, current):
        return staging
    old = current.with_name(f".{current.name}.old-{uuid.uuid4().hex[:8]}")
    current.rename(old)
    staging.rename(current)
    return old


def same_tree(a: Path, b: Path) -> bool:
    """Both directories hold the same relative files with the same bytes (hard links compare instantly)."""
    if not (a.is_dir() and b.is_dir()):
        return False
    fa = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    fb = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    if fa != fb:
        return False
    return all(os.path.samefile(a / f, b / f) or filecmp.cmp(a / f, b / f, shallow=False) for f in fa)


@dataclass(frozen=True)
class VersionStore:
    """The versions of one asset partition (see the module docstring for the layout)."""

    asset: str
    partition: str | None
    home: Path | None = None

    @property
    def current_dir(self) -> Path:
        return artifact_dir(self.asset, self.partition, self.home)

    @property
    def root(self) -> Path:
        home = self.home or lifecycle_home()
        return home / "data" / self.asset / VERSIONS_DIR / partition_dirname(self.partition)

    def path(self, vid: str) -> Path:
        return self.root / vid

    def _record_path(self, vid: str) -> Path:
        return self.root / f"{vid}.json"

    def record(self, vid: str) -> dict[str, Any]:
        p = self._record_path(vid)
        if not p.exists():
            raise VersionError(
                f"{self.asset} ({self.partition or 'unpartitioned'}) has no version {vid} ({p})"
            )
        return json.loads(p.read_text())

    def _write_record(self, vid: str, **fields: Any) -> dict[str, Any]:
        p = self._record_path(vid)
        rec = json.loads(p.read_text()) if p.exists() else {"version": vid}
        rec.update(fields, updated=time.time())
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(p, json.dumps(rec, indent=2, sort_keys=True, default=str))
        return rec

    def records(self) -> list[dict[str, Any]]:
        """Every version's record, oldest first."""
        if not self.root.is_dir():
            return []
        return [json.loads(p.read_text()) for p in sorted(self.root.glob("v*.json"))]

    def current_id(self) -> str | None:
        self.recover()
        p = self.root / CURRENT
        return p.read_text().strip() if p.exists() else None

    # --- writing a new version -------------------------------------------------------------------------

    def begin(self, run_id: str) -> str:
        """Reserve a new version id (its directory is written by the asset) and adopt a legacy current."""
        self.recover()
        self._adopt_legacy()
        now = time.time_ns()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now // 10**9)) + f".{now // 1000 % 10**6:06d}"
        vid = f"v{stamp}-{run_id.replace('-', '')[:8]}"
        while self._record_path(vid).exists() or self.path(vid).exists():  # same run, same microsecond
            vid = f"{vid}-{uuid.uuid4().hex[:4]}"
        self._write_record(vid, status="pending", run_id=run_id, created=time.time())
        return vid

    def _adopt_legacy(self) -> None:
        """A current directory written before versioning becomes a version of its own."""
        if not self.current_dir.is_dir() or (self.root / CURRENT).exists():
            return
        vid = "v00000000T000000.000000-legacy"
        if not self.path(vid).exists():
            self.root.mkdir(parents=True, exist_ok=True)
            link_tree(self.current_dir, self.path(vid))
        self._write_record(vid, status="current", run_id="", created=time.time(), reason="adopted")
        atomic_write_text(self.root / CURRENT, vid)

    def fail(self, vid: str, reason: str, **fields: Any) -> None:
        """Keep ``vid`` for inspection, marked failed with ``reason``; current does not move."""
        self._write_record(vid, status="failed", reason=reason, **fields)

    # --- promotion and recovery ------------------------------------------------------------------------

    def promote(self, vid: str, recorder: Recorder | None = None, **fields: Any) -> dict[str, Any]:
        """Make ``vid`` current (see the module docstring); returns its record. On any error the previous
        version is current again, ``vid`` is marked failed, and :class:`VersionError` says why."""
        if not self.path(vid).is_dir():
            raise VersionError(f"{self.asset}: version {vid} has no directory at {self.path(vid)}")
        self.recover()
        previous = self.current_id()
        snap = recorder.snapshot(self.current_dir) if recorder else None
        self._journal({"version": vid, "previous": previous, "recorder": snap, "swapped": False})
        try:
            staging = self._stage(vid)
            old = swap_in(staging, self.current_dir)
            self._journal({"version": vid, "previous": previous, "recorder": snap, "swapped": True})
            md5 = recorder.track(self.current_dir) if recorder else None
            record = self._commit(vid, previous, md5, **fields)
        except BaseException as exc:
            self._rollback(recorder, reason=f"promotion failed: {type(exc).__name__}: {exc}")
            if isinstance(exc, Exception):
                raise VersionError(
                    f"{self.asset} ({self.partition or 'unpartitioned'}): version {vid} was not promoted "
                    f"({type(exc).__name__}: {exc}); version {previous or '(none)'} is still current"
                ) from exc
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        (self.root / JOURNAL).unlink()
        self.prune()
        return record

    def _journal(self, entry: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.root / JOURNAL, json.dumps(entry, default=str))

    def _staging(self, vid: str) -> Path:
        return self.current_dir.with_name(f".{self.current_dir.name}.staging-{vid}")

    def _stage(self, vid: str) -> Path:
        staging = self._staging(vid)
        if staging.exists():
            shutil.rmtree(staging)
        link_tree(self.path(vid), staging)
        return staging

    def _commit(self, vid: str, previous: str | None, md5: str | None, **fields: Any) -> dict[str, Any]:
        if previous and previous != vid:
            self._write_record(previous, status="superseded", superseded_by=vid)
        atomic_write_text(self.root / CURRENT, vid)
        extra = {"md5": md5} if md5 else {}
        return self._write_record(vid, status="current", promoted=time.time(), **extra, **fields)

    def recover(self) -> bool:
        """Finish what a crash interrupted: with a journal present, roll the promotion back. True if it did."""
        if not (self.root / JOURNAL).exists():
            return False
        self._rollback(None, reason="interrupted during promotion (the process died before it finished)")
        return True

    def _rollback(self, recorder: Recorder | None, reason: str) -> None:
        journal = json.loads((self.root / JOURNAL).read_text())
        vid, previous = journal["version"], journal["previous"]
        new_in_place = self.current_dir.is_dir() and same_tree(self.current_dir, self.path(vid))
        if new_in_place or not self.current_dir.is_dir():
            self._restore_previous(previous, vid)
        if recorder is not None or journal.get("recorder") is not None:
            (recorder or _journal_recorder()).restore(self.current_dir, journal.get("recorder"))
        if previous:
            atomic_write_text(self.root / CURRENT, previous)
            self._write_record(previous, status="current")
        self.fail(vid, reason)
        for leftover in self.current_dir.parent.glob(f".{self.current_dir.name}.*-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        (self.root / JOURNAL).unlink()

    def _restore_previous(self, previous: str | None, vid: str) -> None:
        if previous is None:  # there was nothing current before this promotion
            if self.current_dir.exists():
                gone = self.current_dir.with_name(f".{self.current_dir.name}.rolledback-{vid}")
                self.current_dir.rename(gone)
                shutil.rmtree(gone, ignore_errors=True)
            return
        staging = self._stage(previous)
        old = swap_in(staging, self.current_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    # --- garbage collection ----------------------------------------------------------------------------

    def prune(self, keep: int | None = None) -> list[str]:
        """Delete superseded versions beyond the newest ``keep``; returns the ids removed."""
        keep = keep_versions() if keep is None else keep
        superseded = [r["version"] for r in self.records() if r.get("status") == "superseded"]
        doomed = superseded[: max(0, len(superseded) - keep)]
        for vid in doomed:
            self._remove(vid)
        return doomed

    def gc(self, keep: int, failed_older_than_s: float, dry_run: bool = False) -> list[str]:
        """Superseded versions beyond ``keep`` and failed ones older than ``failed_older_than_s`` seconds."""
        self.recover()
        records = self.records()
        superseded = [r["version"] for r in records if r.get("status") == "superseded"]
        doomed = superseded[: max(0, len(superseded) - keep)]
        now = time.time()
        doomed += [
            r["version"]
            for r in records
            if r.get("status") == "failed" and now - float(r.get("created", now)) >= failed_older_than_s
        ]
        if not dry_run:
            for vid in doomed:
                self._remove(vid)
        return doomed

    def _remove(self, vid: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.path(vid))
        self._record_path(vid).unlink(missing_ok=True)


def _journal_recorder() -> Recorder:
    from dagster_project.resources import DvcResource

    return DvcResource()


def stores(home: Path | None = None) -> Iterator[VersionStore]:
    """Every versioned asset partition under the home."""
    data = (home or lifecycle_home()) / "data"
    for versions in sorted(data.glob(f"*/{VERSIONS_DIR}/*")):
        if versions.is_dir():
            asset = versions.parent.parent.name
            part = None if versions.name == partition_dirname(None) else versions.name
            yield VersionStore(asset, part, home)
