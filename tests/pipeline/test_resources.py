import subprocess
import sys

import yaml

from dagster_project.resources import DvcResource, MlflowResource, directory_md5


def test_dvc_track_adds_artifact_and_returns_md5(home):
    art = home / "data" / "demo" / "p1"
    art.mkdir(parents=True)
    (art / "a.txt").write_text("hello")
    md5 = DvcResource().track(art)
    dvc_file = yaml.safe_load((home / "data" / "demo" / "p1.dvc").read_text())
    assert dvc_file["outs"][0]["md5"] == md5 and md5.endswith(".dir")
    assert (home / "dvc-remote").is_dir()  # pushed to the local remote
    # a new version gets a new md5 and the old one stays in the cache
    (art / "a.txt").write_text("hello again")
    md5_2 = DvcResource().track(art)
    assert md5_2 != md5
    status = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=home, capture_output=True, text=True)
    assert status.returncode == 0 and "up to date" in status.stdout.lower()


def test_dvc_off_hashes_content(home, monkeypatch):
    monkeypatch.setenv("LIFECYCLE_DVC", "off")
    art = home / "x"
    art.mkdir()
    (art / "f").write_text("1")
    assert DvcResource().track(art) == directory_md5(art)
    assert not (home / ".dvc").exists()


def test_mlflow_nests_asset_runs_under_one_parent(home):
    res = MlflowResource()
    a = res.start_asset_run(
        dagster_run_id="run-1",
        job_name="j",
        asset="a",
        partition="p",
        params={"x": 1, "n": {"y": [1, 2]}},
        tags={},
    )
    (home / "in").mkdir()
    a.log_input("upstream", home / "in", "abc123")
    a.log_metrics({"docs": 3, "dropped/too_short": 2, "cluster_size/101+": 1, "flag": True})
    a.finish()
    b = res.start_asset_run(
        dagster_run_id="run-1", job_name="j", asset="b", partition="p", params={}, tags={}
    )
    b.finish()
    client = res.client()
    ra, rb = client.get_run(a.run_id), client.get_run(b.run_id)
    assert ra.data.tags["mlflow.parentRunId"] == rb.data.tags["mlflow.parentRunId"]
    assert ra.data.params == {"x": "1", "n.y": "[1, 2]"}
    assert ra.data.metrics == {"docs": 3.0, "dropped/too_short": 2.0, "cluster_size/101plus": 1.0}
    assert [d.dataset.digest for d in ra.inputs.dataset_inputs] == ["abc123"]
    assert ra.data.tags["dagster.asset_key"] == "a" and ra.data.tags["dagster.partition"] == "p"
    assert a.url.startswith("http://127.0.0.1:5000/#/experiments/")
