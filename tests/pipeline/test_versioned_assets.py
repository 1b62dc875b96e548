"""A failed run never replaces the good version (issue 12, item 6), through Dagster, DVC and MLflow:
garbage input that fails a blocking check, and a DVC push that fails, both leave the previous version
current on disk and in DVC; downstream keeps reading the version its upstream's materialization recorded."""

import subprocess
import sys
from pydoc_data.topics import topics

import pytest
import yaml
from pipeline_helpers import asset_metadata, run_assets, write_wet

from dagster_project.versions import VersionStore
from ml.io import read_shards

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e")]

TEXTS = [t for t in topics.values() if len(t) > 800]


def ingest(paths, partition="p", raise_on_error=True, select=("raw_crawl",)):
    cfg = {"ops": {"raw_crawl": {"config": {"warc_paths": [str(p) for p in paths]}}}}
    return run_assets(list(select), cfg, partition=partition, raise_on_error=raise_on_error)


def dvc_md5(home, partition="p"):
    return yaml.safe_load((home / "data" / "raw_crawl" / f"{partition}.dvc").read_text())["outs"][0]["md5"]


def snapshot_dir(path):
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def check_evaluations(result):
    return {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def test_garbage_input_fails_its_check_and_the_good_version_stays_current(home, tmp_path):
    good = ingest([write_wet(tmp_path / "good.warc.wet.gz", TEXTS[:5], "https://good.example/")])
    v1 = asset_metadata(good, "raw_crawl")
    assert v1["version_status"] == "current" and check_evaluations(good) == {"raw_crawl_has_records": True}
    current = home / "data" / "raw_crawl" / "p"
    before, md5_before = snapshot_dir(current), dvc_md5(home)
    assert md5_before == v1["dvc_md5"]

    (tmp_path / "junk.warc.gz").write_bytes(b"")  # an empty download
    bad = ingest([tmp_path / "junk.warc.gz"], raise_on_error=False)
    assert not bad.success and check_evaluations(bad) == {"raw_crawl_has_records": False}
    v2 = asset_metadata(bad, "raw_crawl")
    assert v2["version_status"] == "failed" and v2["previous_version"] == v1["version"]
    assert snapshot_dir(current) == before and dvc_md5(home) == md5_before  # nothing changed
    store = VersionStore("raw_crawl", "p")
    assert store.current_id() == v1["version"]
    failed = store.record(v2["version"])
    assert (
        failed["status"] == "failed" and failed["reason"] == "blocking check(s) failed: raw_crawl_has_records"
    )
    assert store.path(v2["version"]).is_dir()  # kept for inspection

    # downstream, run on its own later, reads the version that passed, not the newest materialization
    docs = ingest([], select=("extracted_docs",))
    meta = asset_metadata(docs, "extracted_docs")
    assert meta["inputs"]["raw_crawl"]["version"] == v1["version"]
    assert len(read_shards(home / "data" / "extracted_docs" / "p" / "docs")) == 5

    # lineage walks back to the version that was read, not to the newer failed one
    from dagster_project.cli import _instance, main
    from dagster_project.lineage import lineage

    node = lineage(_instance(), "extracted_docs", "p")
    assert (node.version, node.run_id, node.facts["dvc_md5"]) == (
        meta["version"],
        docs.run_id,
        meta["dvc_md5"],
    )
    assert [(n.asset, n.version, n.run_id) for n in node.inputs] == [
        ("raw_crawl", v1["version"], good.run_id)
    ]
    assert node.code_version and node.inputs[0].facts["dvc_md5"] == v1["dvc_md5"]
    assert main(["lineage", "extracted_docs", "--partition", "p"]) == 0
    assert main(["lineage", "extracted_docs", "--partition", "p", "--version", "v0-none"]) == 1


def test_a_failed_dvc_push_leaves_the_previous_version_current(home, tmp_path):
    v1 = asset_metadata(
        ingest([write_wet(tmp_path / "a.warc.wet.gz", TEXTS[:3], "https://a.example/")]), "raw_crawl"
    )
    current = home / "data" / "raw_crawl" / "p"
    before, md5_before = snapshot_dir(current), dvc_md5(home)
    (tmp_path / "not-a-dir").write_text("the remote is a file: every push fails")
    subprocess.run(
        [sys.executable, "-m", "dvc", "remote", "modify", "local", "url", str(tmp_path / "not-a-dir")],
        cwd=home,
        check=True,
    )
    result = ingest(
        [write_wet(tmp_path / "b.warc.wet.gz", TEXTS[3:7], "https://b.example/")], raise_on_error=False
    )
    assert not result.success and not result.get_asset_materialization_events()  # Dagster records no version
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error.message
    assert "was not promoted" in failure and f"{v1['version']} is still current" in failure
    assert snapshot_dir(current) == before and dvc_md5(home) == md5_before
    store = VersionStore("raw_crawl", "p")
    assert store.current_id() == v1["version"]
    (failed,) = [r for r in store.records() if r["status"] == "failed"]
    assert failed["reason"].startswith("promotion failed:")
