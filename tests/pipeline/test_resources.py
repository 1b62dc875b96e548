import subprocess
import sys
import uuid

import pytest
import yaml

from dagster_project.resources import DvcResource, MlflowResource, directory_md5


def test_dvc_track_adds_artifact_and_returns_md5(home):
    art = home / "data" / "demo" / "p1"
    art.mkdir(parents=True)
    (art / "a.txt").write_text("hello")
    (art / "sub" / "deeper").mkdir(parents=True)
    (art / "sub" / "deeper" / "b.bin").write_bytes(bytes(range(256)) * 9)
    (art / "sub" / "c.txt").write_text("ünïcode\r\nline")
    md5 = DvcResource().track(art)
    dvc_file = yaml.safe_load((home / "data" / "demo" / "p1.dvc").read_text())
    assert dvc_file["outs"][0]["md5"] == md5 and md5.endswith(".dir")
    assert directory_md5(art) == md5  # computed without DVC, DVC's own md5
    assert directory_md5(art / "a.txt") == "5d41402abc4b2a76b9719d911017c592"  # md5("hello")
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
    # the way back to Dagster: links as tags and in the run's markdown description
    assert ra.data.tags["dagster.run_url"] == "http://127.0.0.1:3000/runs/run-1"
    assert ra.data.tags["dagster.asset_url"] == "http://127.0.0.1:3000/assets/a"
    assert ra.data.tags["mlflow.note.content"] == (
        "Materialization of [a](http://127.0.0.1:3000/assets/a) partition `p` in Dagster run "
        "[run-1](http://127.0.0.1:3000/runs/run-1)."
    )


def test_experiment_opens_on_runs_and_parent_runs_end_with_the_dagster_status(home):
    res = MlflowResource()
    assert res.end_parent_run("never-logged", "FINISHED") is None  # nothing logged: nothing to end
    for dagster_run, status in [("ok-run", "FINISHED"), ("bad-run", "FAILED"), ("stopped-run", "KILLED")]:
        res.start_asset_run(
            dagster_run_id=dagster_run, job_name="j", asset="a", partition=None, params={}, tags={}
        ).finish()
        parent_id = res.end_parent_run(dagster_run, status)
        parent = res.client().get_run(parent_id)
        assert (parent.info.status, parent.data.tags["dagster.run_id"]) == (status, dagster_run)
        assert parent.info.end_time is not None
    exp = res.client().get_experiment_by_name(res.experiment)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # not the GenAI traces view
    with pytest.raises(ValueError, match="FINISHED | FAILED | KILLED"):
        res.end_parent_run("ok-run", "DONE")


def test_run_status_sensors_end_the_parent_run(home):
    import dagster as dg

    from dagster_project.sensors import SENSORS, end_mlflow_parent

    assert {s.name for s in SENSORS} == {
        "mlflow_parent_on_success",
        "mlflow_parent_on_failure",
        "mlflow_parent_on_canceled",
    }
    res = MlflowResource()
    run_id = str(uuid.uuid4())
    log = res.start_asset_run(
        dagster_run_id=run_id, job_name="j", asset="a", partition=None, params={}, tags={}
    )
    log.finish()
    instance = dg.DagsterInstance.ephemeral()
    run = instance.create_run_for_job(
        dg.GraphDefinition("g").to_job(), run_id=run_id, status=dg.DagsterRunStatus.FAILURE
    )
    assert end_mlflow_parent(run, res) == res.client().get_run(log.run_id).data.tags["mlflow.parentRunId"]
    parent = res.client().get_run(res.client().get_run(log.run_id).data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FAILED"


def test_training_threads_come_from_the_field_then_the_environment(monkeypatch):
    import dagster as dg

    from dagster_project.resources import TorchrunResource

    monkeypatch.delenv("LIFECYCLE_TRAIN_THREADS", raising=False)
    assert TorchrunResource().resolved_threads() == 1
    monkeypatch.setenv("LIFECYCLE_TRAIN_THREADS", "2")
    assert TorchrunResource().resolved_threads() == 2
    assert TorchrunResource(threads=3).resolved_threads() == 3
    monkeypatch.setenv("LIFECYCLE_TRAIN_THREADS", "two")
    with pytest.raises(dg.Failure, match="LIFECYCLE_TRAIN_THREADS .* must be a positive integer, got 'two'"):
        TorchrunResource().resolved_threads()


def test_side_by_side_workers_train_on_their_share_of_the_cores(monkeypatch):
    import os

    from dagster_project.cli import _threads_per_worker

    monkeypatch.setenv("LIFECYCLE_TRAIN_THREADS", "2")
    _threads_per_worker(1)
    assert os.environ["LIFECYCLE_TRAIN_THREADS"] == "1"


def test_a_deferred_push_leaves_the_remote_to_push_all(home, monkeypatch):
    art = home / "data" / "demo" / "p2"
    art.mkdir(parents=True)
    (art / "a.txt").write_text("deferred")
    monkeypatch.setenv("LIFECYCLE_DVC_PUSH", "deferred")
    md5 = DvcResource().track(art)
    remote = home / "dvc-remote"
    pushed = lambda: {p.name for p in remote.rglob("*") if p.is_file()}  # noqa: E731
    assert not remote.exists() or not pushed()
    DvcResource().push_all()
    assert md5.removesuffix(".dir")[2:] + ".dir" in pushed()  # the directory's manifest is in the remote


def _pipeline_home(home, name: str):
    """A home whose dvc.yaml has two stages (``up`` -> ``down``) with a source dep and params, both outputs written."""
    (home / "params.yaml").write_text("preset: tiny\npartition: p\n")
    (home / "code.py").write_text("print('stage code')\n")
    stages = {
        "up": {"cmd": "true", "deps": ["code.py"], "params": ["preset"], "outs": ["data/up/${partition}"]},
        "down": {
            "cmd": "true",
            "deps": ["code.py", "data/up/p"],
            "params": ["partition"],
            "outs": ["data/down/p"],
        },
    }
    (home / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    for stage, text in (("up", name), ("down", name * 2)):
        out = home / "data" / stage / "p"
        out.mkdir(parents=True, exist_ok=True)
        (out / "part.txt").write_text(text)
    return home / "data" / "up" / "p", home / "data" / "down" / "p"


def test_a_stage_commit_writes_the_lock_dvc_itself_writes(home, tmp_path):
    up, down = _pipeline_home(home, "one")
    md5s = (DvcResource().track(up), DvcResource().track(down))
    ours = yaml.safe_load((home / "dvc.lock").read_text())
    assert [ours["stages"][s]["outs"][0]["md5"] for s in ("up", "down")] == list(md5s)
    assert ours["stages"]["up"]["params"] == {"params.yaml": {"preset": "tiny"}}

    # DVC's own `dvc commit --force` of both stages writes the same entries (its dvc.lock, re-read)
    def dvc(*a):
        return subprocess.run([sys.executable, "-m", "dvc", *a], cwd=home, capture_output=True, text=True)

    (home / "dvc.lock").unlink()
    assert dvc("commit", "--force", "up", "down").returncode == 0
    assert yaml.safe_load((home / "dvc.lock").read_text()) == ours
    status = dvc("status")
    assert status.returncode == 0 and "up to date" in status.stdout.lower()
    # a new version of one stage's output rewrites that entry only, and DVC reads it as up to date
    (up / "part.txt").write_text("two")
    DvcResource().track(up)
    again = yaml.safe_load((home / "dvc.lock").read_text())
    assert again["stages"]["down"] == ours["stages"]["down"]
    assert again["stages"]["up"]["outs"][0]["md5"] == directory_md5(up) != md5s[0]
    assert "data/up/p" not in dvc("status", "up").stdout
