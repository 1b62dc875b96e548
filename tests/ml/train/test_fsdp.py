"""FSDP2 over 2 gloo processes under torchrun equals one process with the same global batch, and a checkpoint
of either resumes at the other world size (2 ranks -> 1 process, 1 process -> 2 ranks, the latter past a
corrupt newer checkpoint)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from train_helpers import (
    REPO,
    copy_checkpoint,
    read_metrics,
    tiny_config,
    torchrun,
    train_cli,
    train_in_process,
    write_config,
)

from ml.model.hf import load_hf

K, N = 6, 12  # checkpoints at steps K and N; resumes start from K
RUN = tiny_config(steps=N, ckpt_every=K, eval_every=K, schedule={"warmup_steps": 3})
LOSS_REL, GRAD_NORM_REL = 1e-4, 1e-3  # 2 ranks vs 1 process: same windows, different reduction order


@pytest.fixture(scope="module")
def runs(token_shards, tmp_path_factory) -> SimpleNamespace:
    """RUN uninterrupted in this process and on 2 gloo ranks under torchrun (both checkpoint at K and N)."""
    root = tmp_path_factory.mktemp("fsdp")
    single = train_in_process(RUN, token_shards, root / "single")
    cfg_path = write_config(RUN, root / "cfg.yaml")
    out, metrics = root / "fsdp", root / "fsdp.jsonl"
    done = torchrun(train_cli(cfg_path, token_shards, out, metrics), timeout=180, cwd=REPO)
    assert done.returncode == 0, done.stderr[-4000:]
    return SimpleNamespace(
        cfg_path=cfg_path,
        single=single,
        single_out=root / "single",
        fsdp=read_metrics(metrics),
        fsdp_out=out,
        fsdp_stderr=done.stderr,
    )


def assert_matches_single(got: dict[int, dict], single: dict[int, dict], steps: range) -> None:
    """Per-step metrics of ``got`` equal the uninterrupted 1-process run within 2-vs-1-rank tolerances."""
    for step in steps:
        assert got[step]["loss"] == pytest.approx(single[step]["loss"], rel=LOSS_REL), step
        assert got[step]["grad_norm"] == pytest.approx(single[step]["grad_norm"], rel=GRAD_NORM_REL), step
        assert got[step]["lr"] == single[step]["lr"], step
        assert got[step]["tokens_seen"] == single[step]["tokens_seen"], step
    for step in (s for s in steps if s % K == 0):
        assert got[step]["val_loss"] == pytest.approx(single[step]["val_loss"], rel=LOSS_REL), step


def assert_weights_close(hf_a, hf_b) -> None:
    a, b = load_hf(hf_a).state_dict(), load_hf(hf_b).state_dict()
    for name in a:
        # Adam amplifies reduction-order noise in near-zero gradients: one element in 2K moves ~1.3e-5 after 12 steps.
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=5e-5, msg=name)


@pytest.mark.slow
def test_two_process_fsdp_matches_single_process(runs):
    assert "on 2 x cpu" in runs.fsdp_stderr
    assert sorted(runs.fsdp) == list(range(1, N + 1))  # rank 0 alone wrote metrics: one line per step
    assert_matches_single(runs.fsdp, runs.single, range(1, N + 1))

    # Sharded DCP state: one file per rank; the HF export gathered the full weights on rank 0.
    ckpt = runs.fsdp_out / "checkpoints" / f"step-{N:08d}"
    assert sorted(p.name for p in (ckpt / "dcp").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    ranks = [json.loads((ckpt / "train_state" / f"rank-{r:05d}.json").read_text()) for r in range(2)]
    assert (
        ranks[0]["task"]["data"]
        == ranks[1]["task"]["data"]
        == {  # world-size independent loader state
            **ranks[0]["task"]["data"],
            "epoch": 0,
            "windows_consumed": N * RUN["data"]["batch_size"],
            "global_batch_size": RUN["data"]["batch_size"],
        }
    )
    assert_weights_close(runs.fsdp_out / "hf", runs.single_out / "hf")


@pytest.mark.slow
def test_two_rank_checkpoint_resumes_in_one_process(runs, token_shards, tmp_path):
    copy_checkpoint(runs.fsdp_out, K, tmp_path)
    resumed = train_in_process(RUN, token_shards, tmp_path)
    assert sorted(resumed) == list(range(K + 1, N + 1))  # started from step K
    assert_matches_single(resumed, runs.single, range(K + 1, N + 1))
    assert_weights_close(tmp_path / "hf", runs.single_out / "hf")


@pytest.mark.slow
def test_one_process_checkpoint_resumes_on_two_ranks(runs, token_shards, tmp_path):
    """Resumes from step K past a corrupt newer checkpoint (step N truncated): both ranks skip it, rank 0
    keeps it aside."""
    copy_checkpoint(runs.single_out, K, tmp_path / "out")
    shard = copy_checkpoint(runs.single_out, N, tmp_path / "out") / "dcp" / "__0_0.distcp"
    truncated = shard.read_bytes()[:-10]
    shard.write_bytes(truncated)
    metrics = tmp_path / "m.jsonl"
    done = torchrun(train_cli(runs.cfg_path, token_shards, tmp_path / "out", metrics), timeout=180, cwd=REPO)
    assert done.returncode == 0, done.stderr[-4000:]
    assert (
        f"at step {K} ({K * 512:,} tokens), resharded from 1 to 2 ranks, skipping 1 newer corrupt "
        f"checkpoint(s): step-{N:08d} (kept as corrupt-step-{N:08d})"
    ) in done.stderr
    kept = tmp_path / "out" / "checkpoints" / f"corrupt-step-{N:08d}" / "dcp" / "__0_0.distcp"
    assert kept.read_bytes() == truncated
    resumed = read_metrics(metrics)
    assert sorted(resumed) == list(range(K + 1, N + 1))
    assert_matches_single(resumed, runs.single, range(K + 1, N + 1))
    dcp_files = (tmp_path / "out" / "checkpoints" / f"step-{N:08d}" / "dcp").glob("*.distcp")
    assert sorted(p.name for p in dcp_files) == ["__0_0.distcp", "__1_0.distcp"]
    assert_weights_close(tmp_path / "out" / "hf", runs.single_out / "hf")


# Rank 1 kills itself once rank 0 has logged step 3; torchrun must tear rank 0 down and fail the job.
DYING_RANK = """
import json, os, signal, sys, threading, time
from pathlib import Path
import torch
from ml.train.config import TrainConfig
from ml.train.engine import train

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
    done = torchrun([str(a) for a in args], timeout=120)
    assert done.returncode != 0
    assert "exitcode  : -9" in done.stderr and "Signal 9 (SIGKILL)" in done.stderr
    assert not (tmp_path / "out" / "hf").exists()
