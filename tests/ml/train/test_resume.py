"""Exact resume: a run SIGKILLed after a checkpoint and resumed in a new process matches an uninterrupted run
at every step (CPU, fp32, deterministic algorithms, one thread)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from train_helpers import (
    REPO,
    read_metrics,
    subprocess_env,
    tiny_config,
    train_cli,
    train_in_process,
    write_config,
)

RUN = tiny_config(steps=30, ckpt_every=10, eval_every=10, keep_last=3)

# The victim: trains, and once step 13 is logged (a checkpoint exists at step 10, and the optimizer, data
# loader and RNG have moved on past it) it signals the test and waits to be killed.
VICTIM = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import torch
    from ml.train.config import TrainConfig
    from ml.train.engine import train

    torch.set_num_threads(1)
    cfg_path, data, out, metrics, marker = sys.argv[1:]
    sink = open(metrics, "a")

    def on_metrics(step, m):
        sink.write(json.dumps({"step": step, **m}) + "\\n")
        sink.flush()
        if step == 13:
            Path(marker).write_text("13")
            time.sleep(600)

    train(TrainConfig.from_yaml(cfg_path), Path(data), Path(out), on_metrics=on_metrics)
    """
)


def _env() -> dict[str, str]:
    return subprocess_env(PYTHONUNBUFFERED="1")


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(token_shards, tmp_path):
    reference = train_in_process(RUN, token_shards, tmp_path / "ref")

    cfg_path = write_config(RUN, tmp_path / "cfg.yaml")
    (tmp_path / "victim.py").write_text(VICTIM)
    out, metrics, marker = tmp_path / "run", tmp_path / "metrics.jsonl", tmp_path / "reached"
    victim = subprocess.Popen(
        [
            sys.executable,
            str(tmp_path / "victim.py"),
            str(cfg_path),
            str(token_shards),
            str(out),
            str(metrics),
            str(marker),
        ],
        env=_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert victim.poll() is None, f"victim exited early: {victim.stderr.read()}"
            assert time.monotonic() < deadline, "victim never reached step 13"
            time.sleep(0.05)
        os.kill(victim.pid, signal.SIGKILL)
    finally:
        if victim.poll() is None:
            victim.kill()
        victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000010"]
    assert not (out / "hf").exists()

    resumed = subprocess.run(
        [sys.executable, *train_cli(cfg_path, token_shards, out, metrics)],
        env=_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr and "step-00000010" in resumed.stderr

    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 14)) + list(
        range(11, 31)
    )  # killed at 13, resumed at 10
    after = read_metrics(metrics)  # later lines win: the resumed run's steps 11..30
    for step in range(1, 31):
        for key in ("loss", "lr", "grad_norm", "tokens_seen"):
            assert after[step][key] == reference[step][key], (step, key)
    for step in (10, 20, 30):
        assert after[step]["val_loss"] == reference[step]["val_loss"]
    result = json.loads((out / "train_result.json").read_text())
    assert (result["start_step"], result["final_step"]) == (10, 30)


def test_run_cli_requires_a_config(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "ml.train.run", "--data", str(tmp_path), "--out", str(tmp_path)],
        env=_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "give --config and/or --preset" in done.stderr
