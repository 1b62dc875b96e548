"""FSDP2 over 2 gloo processes under torchrun equals one process with the same global batch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from train_helpers import REPO, TINY_TRAIN, subprocess_env, train_cli, train_in_process, write_config

from ml.hf import load_hf
from ml.train.checkpoint import CheckpointError
from ml.train.loop import TrainConfig, train

RUN = {**TINY_TRAIN, "steps": 12, "ckpt_every": 6, "eval_every": 6, "warmup_steps": 3}


def _torchrun(args: list[str], timeout: int, **kwargs) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node 2 *args`` on one thread per rank; output captured."""
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


@pytest.mark.slow
def test_two_process_fsdp_matches_single_process(token_shards, tmp_path):
    single = train_in_process(RUN, token_shards, tmp_path / "single")

    cfg_path = write_config(RUN, tmp_path / "cfg.yaml")
    out, metrics = tmp_path / "fsdp", tmp_path / "fsdp.jsonl"
    done = _torchrun(train_cli(cfg_path, token_shards, out, metrics), timeout=180, cwd=REPO)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "on 2 x cpu" in done.stderr

    fsdp = {r["step"]: r for r in map(json.loads, metrics.read_text().splitlines())}
    assert sorted(fsdp) == list(range(1, 13))  # rank 0 alone wrote metrics: one line per step
    for step in range(1, 13):
        assert fsdp[step]["loss"] == pytest.approx(single[step]["loss"], rel=1e-4), step
        assert fsdp[step]["grad_norm"] == pytest.approx(single[step]["grad_norm"], rel=1e-3), step
        assert fsdp[step]["tokens_seen"] == single[step]["tokens_seen"]
    for step in (6, 12):
        assert fsdp[step]["val_loss"] == pytest.approx(single[step]["val_loss"], rel=1e-4)

    # Sharded DCP state: one file per rank; the HF export gathered the full weights on rank 0.
    ckpt = out / "checkpoints" / "step-00000012"
    assert sorted(p.name for p in (ckpt / "dcp").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert sorted(p.name for p in (ckpt / "train_state").iterdir()) == ["rank-00000.json", "rank-00001.json"]
    a, b = load_hf(out / "hf").state_dict(), load_hf(tmp_path / "single" / "hf").state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)

    # Resuming a 2-rank checkpoint in one process is refused (per-rank loader state would not map).
    with pytest.raises(CheckpointError, match="world size 2, resuming with 1"):
        train(TrainConfig.from_dict(RUN), token_shards, out)


# Rank 1 kills itself once rank 0 has logged step 3; torchrun must tear rank 0 down and fail the job.
DYING_RANK = """
import json, os, signal, sys, threading, time
from pathlib import Path
import torch
from ml.train.loop import TrainConfig, train

torch.set_num_threads(1)
cfg_path, data, out, marker = sys.argv[1:]
if os.environ["RANK"] == "1":
    def die():
        while not Path(marker).exists():
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGKILL)
    threading.Thread(target=die, daemon=True).start()

def on_metrics(step, m):
    if step == 3:
        Path(marker).write_text("3")
        time.sleep(0.5)

train(TrainConfig.from_yaml(cfg_path), Path(data), Path(out), on_metrics=on_metrics)
"""


@pytest.mark.slow
def test_a_dead_rank_fails_the_whole_job(token_shards, tmp_path):
    run = {**RUN, "steps": 200, "ckpt_every": 0, "dist_timeout_s": 30}
    cfg_path = write_config(run, tmp_path / "cfg.yaml")
    (tmp_path / "dying.py").write_text(DYING_RANK)
    args = [tmp_path / "dying.py", cfg_path, token_shards, tmp_path / "out", tmp_path / "m"]
    done = _torchrun([str(a) for a in args], timeout=120)
    assert done.returncode != 0
    assert "exitcode  : -9" in done.stderr and "Signal 9 (SIGKILL)" in done.stderr
    assert not (tmp_path / "out" / "hf").exists()
