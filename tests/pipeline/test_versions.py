"""Versioned artifacts (dagster_project/versions.py): immutable versions, promotion after the checks, a
crash at every step of the swap leaving the old or the new version current, rollback of DVC's record,
garbage collection."""

import json
import multiprocessing
import os
import time

import pytest

from dagster_project import versions
from dagster_project.versions import VersionError, VersionStore


class FakeRecorder:
    """Stands in for DVC: remembers what it recorded, can be told to fail."""

    def __init__(self, fail: bool = False):
        self.fail = fail
        self.record: str | None = None
        self.restored = 0

    def track(self, path):
        if self.fail:
            raise RuntimeError("push to remote 'local' failed: disk full")
        self.record = (path / "data.txt").read_text()
        return "md5-" + self.record

    def snapshot(self, path):
        return self.record

    def restore(self, path, snap):
        self.record = snap
        self.restored += 1


def write_version(store: VersionStore, text: str, run_id: str) -> str:
    vid = store.begin(run_id)
    store.path(vid).mkdir(parents=True)
    (store.path(vid) / "data.txt").write_text(text)
    (store.path(vid) / "sub").mkdir()
    (store.path(vid) / "sub" / "more.txt").write_text(text * 2)
    return vid


def current_text(store: VersionStore) -> str | None:
    store.recover()
    f = store.current_dir / "data.txt"
    return f.read_text() if f.exists() else None


@pytest.fixture
def store(tmp_path):
    return VersionStore("docs", "snap", home=tmp_path)


def test_promote_links_the_version_into_current_and_supersedes_the_previous(store, tmp_path):
    rec = FakeRecorder()
    v1 = write_version(store, "one", "run-aaaaaaaa")
    assert store.record(v1)["status"] == "pending" and not store.current_dir.exists()
    assert store.promote(v1, rec)["md5"] == "md5-one"
    assert current_text(store) == "one" and store.current_id() == v1
    assert store.current_dir == tmp_path / "data" / "docs" / "snap"
    assert os.path.samefile(store.current_dir / "sub" / "more.txt", store.path(v1) / "sub" / "more.txt")
    v2 = write_version(store, "two", "run-bbbbbbbb")
    store.promote(v2, rec)
    assert current_text(store) == "two" and rec.record == "two"
    assert [(r["version"], r["status"]) for r in store.records()] == [(v1, "superseded"), (v2, "current")]
    assert (store.path(v1) / "data.txt").read_text() == "one"  # the old version is intact
    leftovers = sorted(p.name for p in store.current_dir.parent.iterdir())
    assert leftovers == [".versions", "snap"]  # no staging or old dirs left behind


def test_failed_recorder_rolls_back_to_the_previous_version(store):
    rec = FakeRecorder()
    v1 = write_version(store, "one", "run-aaaaaaaa")
    store.promote(v1, rec)
    v2 = write_version(store, "two", "run-bbbbbbbb")
    rec.fail = True
    with pytest.raises(
        VersionError, match=rf"version {v2} was not promoted .*disk full.*{v1} is still current"
    ):
        store.promote(v2, rec)
    assert current_text(store) == "one" and store.current_id() == v1
    assert rec.record == "one" and rec.restored == 1
    assert store.record(v2)["status"] == "failed" and "disk full" in store.record(v2)["reason"]
    assert store.record(v1)["status"] == "current"
    assert (store.path(v2) / "data.txt").read_text() == "two"  # kept for inspection


def _crash_after(step: str, store: VersionStore, vid: str, exchange: bool) -> None:
    """In a forked child: promote ``vid``, dying (os._exit, no cleanup) right after ``step``."""
    if not exchange:
        versions._exchange = lambda a, b: False
    if step == "first-rename":  # the two-rename fallback, killed between its renames
        real_rename = os.rename

        def rename_then_die(self, target):
            real_rename(self, target)
            if ".old-" in str(target):
                os._exit(9)
            return target

        versions.Path.rename = rename_then_die
    else:
        real = {"stage": VersionStore._stage, "swap": versions.swap_in, "commit": VersionStore._commit}
        if step == "swap":
            versions.swap_in = lambda *a: (real["swap"](*a), os._exit(9))
        elif step == "stage":
            VersionStore._stage = lambda self, v: (real["stage"](self, v), os._exit(9))
        elif step == "commit":
            VersionStore._commit = lambda self, *a, **k: (real["commit"](self, *a, **k), os._exit(9))
    store.promote(vid, None)
    os._exit(0)


# renameat2 exchanges in one syscall; the two-rename fallback (filesystems without it) has a step between
STEPS = [(s, True) for s in ("stage", "swap", "commit")] + [
    (s, False) for s in ("stage", "first-rename", "swap", "commit")
]


@pytest.mark.parametrize(
    ("step", "exchange"), STEPS, ids=[f"{s}-{'exchange' if e else 'renames'}" for s, e in STEPS]
)
def test_a_kill_at_any_step_leaves_the_old_or_the_new_version_current(store, step, exchange):
    v1 = write_version(store, "one", "run-aaaaaaaa")
    store.promote(v1, None)
    v2 = write_version(store, "two", "run-bbbbbbbb")
    child = multiprocessing.get_context("fork").Process(target=_crash_after, args=(step, store, v2, exchange))
    child.start()
    child.join()
    assert child.exitcode == 9
    assert (store.root / versions.JOURNAL).exists()  # the crash left its journal behind
    fresh = VersionStore("docs", "snap", home=store.home)
    assert current_text(fresh) == "one" and fresh.current_id() == v1  # rolled back on the next access
    assert fresh.record(v2)["status"] == "failed" and "interrupted" in fresh.record(v2)["reason"]
    assert sorted(p.name for p in fresh.current_dir.parent.iterdir()) == [".versions", "snap"]
    fresh.promote(v2, None)  # and the version can still be promoted afterwards
    assert current_text(fresh) == "two"


def test_a_kill_during_the_first_promotion_leaves_nothing_current(store):
    v1 = write_version(store, "one", "run-aaaaaaaa")
    child = multiprocessing.get_context("fork").Process(target=_crash_after, args=("swap", store, v1, True))
    child.start()
    child.join()
    assert child.exitcode == 9 and (store.current_dir / "data.txt").exists()  # swapped in, not committed
    assert current_text(store) is None and store.current_id() is None  # as before: nothing current


def test_a_current_dir_from_before_versioning_is_adopted(store):
    store.current_dir.mkdir(parents=True)
    (store.current_dir / "data.txt").write_text("legacy")
    v1 = write_version(store, "one", "run-aaaaaaaa")
    assert store.record("v00000000T000000.000000-legacy")["status"] == "current"
    FakeRecorder().fail = True
    with pytest.raises(VersionError):
        store.promote(v1, FakeRecorder(fail=True))
    assert current_text(store) == "legacy"


def test_prune_and_gc(store, monkeypatch):
    monkeypatch.setenv("LIFECYCLE_KEEP_VERSIONS", "2")
    vids = []
    for i in range(5):
        vids.append(write_version(store, f"v{i}", f"run-{i:08d}"))
        store.promote(vids[-1], None)
    assert [r["version"] for r in store.records()] == vids[2:]  # current + 2 superseded kept
    bad = write_version(store, "bad", "run-bad00000")
    store.fail(bad, "blocking check(s) failed: contract")
    assert store.gc(keep=0, failed_older_than_s=3600, dry_run=True) == vids[2:4]
    rec = json.loads((store.root / f"{bad}.json").read_text())
    rec["created"] = time.time() - 7200
    (store.root / f"{bad}.json").write_text(json.dumps(rec))
    assert store.gc(keep=1, failed_older_than_s=3600) == [vids[2], bad]
    assert [r["version"] for r in store.records()] == vids[3:]
    assert current_text(store) == "v4"


def test_keep_versions_is_validated(monkeypatch):
    monkeypatch.setenv("LIFECYCLE_KEEP_VERSIONS", "0")
    with pytest.raises(VersionError, match="LIFECYCLE_KEEP_VERSIONS must be an integer >= 1, got '0'"):
        versions.keep_versions()


def test_cli_lists_versions_and_collects_garbage(tmp_path, monkeypatch, capsys):
    from dagster_project.cli import main

    monkeypatch.setenv("LIFECYCLE_HOME", str(tmp_path))
    store = VersionStore("docs", "snap")
    v1 = write_version(store, "one", "run-aaaaaaaa")
    store.promote(v1, None)
    v2 = write_version(store, "two", "run-bbbbbbbb")
    store.promote(v2, None)
    v3 = write_version(store, "bad", "run-cccccccc")
    store.fail(v3, "blocking check(s) failed: contract")
    assert main(["versions", "docs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[2:4] for line in lines] == [[v1, "superseded"], [v2, "current"], [v3, "failed"]]
    assert main(["gc", "--keep", "0", "--failed-older-than-days", "0", "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"would remove docs/snap/{v1}",
        f"would remove docs/snap/{v3}",
    ]
    assert main(["gc", "--keep", "0", "--failed-older-than-days", "0"]) == 0
    assert [r["version"] for r in store.records()] == [v2] and current_text(store) == "two"
    assert main(["gc", "--keep", "-1"]) == 2
