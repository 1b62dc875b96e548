"""Fault tolerance at the Dagster level (Llama 3 paper §3.3.4): a ``pretrain_initial`` materialization whose
process group (the Dagster run and its training process) is SIGKILLed mid-run leaves its work dir; the next
materialization resumes from the newest checkpoint there, its loss curve equals an uninterrupted run's at
every step, and its metadata counts the interruption, the lost wall time and the redone steps."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from test_pretrain_pipes import _write_upstream

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e")]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = {
    "steps": 100,
    "data": {"batch_size": 4, "seq_len": 64},
    "schedule": {"warmup_steps": 2, "batch_ramp": []},
    "eval_every": 20,
    "ckpt_every": 10,
    "keep_last": 10,
}
OPS = {"pretrain_initial": {"config": {"train": TRAIN, "min_nats_below_unigram": -100.0}}}
MATERIALIZE = (
    "import json, sys\n"
    "from dagster_project.cli import materialize_lifecycle\n"
    "runs = materialize_lifecycle(['pretrain_initial'], 'snap-1', ops=json.loads(sys.argv[1]))\n"
    "sys.exit(0 if all(r['success'] for r in runs) else 1)\n"
)


def _materialize(home, **popen) -> subprocess.Popen:
    env = {**os.environ, "LIFECYCLE_HOME": str(home), "DAGSTER_HOME": str(home / ".dagster")}
    env["PYTHONPATH"] = REPO
    return subprocess.Popen(
        [sys.executable, "-c", MATERIALIZE, json.dumps(OPS)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def _steps(path) -> list[dict]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(x) for x in lines if x.strip().endswith("}")]


def _kill_mid_run(home) -> int:
    """Start a materialization in its own session; SIGKILL the whole group once it has logged a step past a
    checkpoint; the newest checkpoint step it left."""
    proc = _materialize(home, start_new_session=True)
    work_root = home / "data" / "_work" / "pretrain_initial" / "snap-1"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, f"the run ended before it was killed: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "the run never passed its first checkpoint"
            logged = [s["step"] for m in work_root.glob("*/metrics.jsonl") for s in _steps(m)]
            if logged and max(logged) >= 15:
                break
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    ckpts = [int(p.name.split("-")[-1]) for p in work_root.glob("*/checkpoints/step-*")]
    return max(ckpts)


def test_a_killed_materialization_resumes_from_its_last_checkpoint(home, tmp_path):
    _write_upstream(home, 150)
    reference_home = tmp_path / "reference"
    shutil.copytree(home, reference_home)  # the same tokenizer and shards, its own instance and work dirs
    reference = _materialize(reference_home)
    assert reference.wait(timeout=600) == 0, reference.stderr.read()[-2000:]

    resumed_from = _kill_mid_run(home)
    assert resumed_from >= 10 and resumed_from < TRAIN["steps"]
    again = _materialize(home)
    assert again.wait(timeout=600) == 0, again.stderr.read()[-2000:]

    final = {s["step"]: s for s in _steps(home / "data" / "pretrain_initial" / "snap-1" / "metrics.jsonl")}
    ref = {
        s["step"]: s
        for s in _steps(reference_home / "data" / "pretrain_initial" / "snap-1" / "metrics.jsonl")
    }
    assert sorted(final) == sorted(ref) == list(range(1, TRAIN["steps"] + 1))
    for step in ref:  # later lines win: the resumed run's values of the redone steps
        for key in ("loss", "lr", "grad_norm", "tokens_seen"):
            assert final[step][key] == ref[step][key], (step, key)

    import dagster as dg

    from dagster_project.cli import _instance

    event = _instance().get_latest_materialization_event(dg.AssetKey("pretrain_initial"))
    meta = {k: getattr(v, "value", v) for k, v in event.asset_materialization.metadata.items()}
    logged = [s["step"] for s in _steps(home / "data" / "pretrain_initial" / "snap-1" / "metrics.jsonl")]
    killed_at = next(i for i in range(1, len(logged)) if logged[i] <= logged[i - 1])  # the killed launch's
    assert logged[:killed_at] == list(range(1, killed_at + 1))  # last step, then resumed after the checkpoint
    assert logged[killed_at:] == list(range(resumed_from + 1, TRAIN["steps"] + 1))
    redone = killed_at - resumed_from
    assert meta["interruptions"] == 1 and meta["redone_steps"] == redone > 0
    assert meta["lost_wall_s"] > 0 and 0 < meta["effective_time_fraction"] < 1
    assert meta["final_step"] == TRAIN["steps"]
