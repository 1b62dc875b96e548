"""Exact resume: a run SIGKILLed after a checkpoint and resumed in a new process matches an uninterrupted run
at every step (CPU, fp32, deterministic algorithms, one thread); a corrupt newest checkpoint is skipped (kept
aside for inspection) and the run resumes exactly from the newest intact one."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from train_helpers import (
    REPO,
    copy_checkpoint,
    read_metrics,
    reseal_manifest,
    subprocess_env,
    tiny_config,
    train_cli,
    train_in_process,
    write_config,
)

from ml.io import sha256_file
from ml.train import checkpoint as ckpt
from ml.train.checkpoint import CheckpointError, SkippedCheckpoint
from ml.train.config import TrainConfig
from ml.train.engine import train

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


# ---- a corrupt newest checkpoint ----------------------------------------------------------------------

FALLBACK = tiny_config(steps=12, ckpt_every=4, eval_every=4, keep_last=3, schedule={"warmup_steps": 2})


@pytest.fixture(scope="module")
def source_run(token_shards, tmp_path_factory):
    """An uninterrupted run of FALLBACK: its result and work dir (checkpoints at steps 4, 8 and 12)."""
    out = tmp_path_factory.mktemp("fallback_source")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    result = train(TrainConfig.from_dict(FALLBACK), token_shards, out)
    torch.set_num_threads(threads)
    return result, out


def _copies(source_out, out, steps):
    return {step: copy_checkpoint(source_out, step, out) for step in steps}


def _truncate(path):
    """Cut the end off checkpoint ``path``'s DCP shard; the reason verification will give."""
    shard = path / "dcp" / "__0_0.distcp"
    size = shard.stat().st_size
    shard.write_bytes(shard.read_bytes()[:-10])
    return f"{shard}: truncated or resized: {size - 10} bytes, manifest says {size}"


def _tamper(path):
    """Flip the last byte of checkpoint ``path``'s safetensors weights; the reason verification will give."""
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    return f"{weights}: sha256 mismatch with the manifest (corrupt or tampered)"


def _contents(path):
    return {str(f.relative_to(path)): sha256_file(f) for f in sorted(path.rglob("*")) if f.is_file()}


def test_resume_skips_a_corrupt_newest_checkpoint_and_matches_a_run_from_the_intact_one(
    source_run, token_shards, tmp_path, capsys, _one_thread
):
    """Steps 4 (intact) and 8 (truncated): the run resumes at 4, steps 5..12 equal those of a run resumed
    from a lone copy of step 4 and of the uninterrupted run, and step 8 is kept aside byte for byte.
    Before: restore raised step 8's CheckpointError and the run could not resume."""
    source, source_out = source_run
    cfg = TrainConfig.from_dict(FALLBACK)
    reference = train(cfg, token_shards, copy_checkpoint(source_out, 4, tmp_path / "ref").parents[1])
    out = tmp_path / "run"
    paths = _copies(source_out, out, (4, 8))
    why = _truncate(paths[8])
    corrupt = _contents(paths[8])
    kept = out / "checkpoints" / "corrupt-step-00000008"
    with pytest.warns(UserWarning) as warned:
        result = train(cfg, token_shards, out)

    assert (result.start_step, result.final_step) == (reference.start_step, reference.final_step) == (4, 12)
    assert result.losses == reference.losses == source.losses[4:]
    assert result.val_losses == reference.val_losses == source.val_losses[1:]
    assert result.tokens_seen == reference.tokens_seen == source.tokens_seen
    assert result.skipped_checkpoints == [SkippedCheckpoint(paths[8], kept, why)]
    assert [str(w.message) for w in warned if "corrupt" in str(w.message)] == [
        f"checkpoint {paths[8]} is corrupt, skipped (kept as {kept}): {why}"
    ]
    assert (
        f"[ml.train] resumed from {paths[4]} at step 4 (2,048 tokens), skipping 1 newer corrupt checkpoint(s): "
        f"step-00000008 (kept as {kept.name})\n"
    ) in capsys.readouterr().err
    assert _contents(kept) == corrupt  # kept for inspection, byte for byte
    assert [s for s, _ in ckpt.list_checkpoints(out / "checkpoints")] == [4, 8, 12]
    for _, path in ckpt.list_checkpoints(out / "checkpoints"):
        ckpt.verify_checkpoint(path)
    assert json.loads(json.dumps(result.to_dict()))["skipped_checkpoints"] == [
        {"path": str(paths[8]), "kept_at": str(kept), "reason": why}
    ]


def test_keep_last_never_prunes_in_favour_of_corrupt_checkpoints(
    source_run, token_shards, tmp_path, _one_thread
):
    """Corrupt checkpoints are moved out of ``step-*``: keep_last=1 keeps the one just written, not the
    corrupt step 12, and re-saving step 8 does not overwrite the corrupt step 8."""
    _, source_out = source_run
    out = tmp_path / "run"
    paths = _copies(source_out, out, (4, 8, 12))
    why = {8: _truncate(paths[8]), 12: _tamper(paths[12])}
    corrupt = {step: _contents(paths[step]) for step in (8, 12)}
    cfg = TrainConfig.from_dict(TrainConfig.layer(FALLBACK, {"steps": 8, "keep_last": 1}))
    with pytest.warns(UserWarning, match="is corrupt, skipped"):
        result = train(cfg, token_shards, out)

    assert (result.start_step, result.final_step) == (4, 8)
    kept = {step: out / "checkpoints" / f"corrupt-step-{step:08d}" for step in (8, 12)}
    assert result.skipped_checkpoints == [SkippedCheckpoint(paths[s], kept[s], why[s]) for s in (12, 8)]
    assert ckpt.list_checkpoints(out / "checkpoints") == [(8, paths[8])]
    assert ckpt.verify_checkpoint(paths[8])["step"] == 8
    assert {step: _contents(kept[step]) for step in (8, 12)} == corrupt
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "corrupt-step-00000008",
        "corrupt-step-00000012",
        "step-00000008",
    ]


def test_no_intact_checkpoint_is_an_error_listing_each(source_run, token_shards, tmp_path, _one_thread):
    """Before: only the newest one's error; now every checkpoint and why, and nothing is moved."""
    _, source_out = source_run
    out = tmp_path / "run"
    paths = _copies(source_out, out, (4, 8))
    why = {4: _tamper(paths[4]), 8: _truncate(paths[8])}
    before = {step: _contents(paths[step]) for step in (4, 8)}
    message = (
        f"{out / 'checkpoints'}: no intact checkpoint to resume from (2, newest first):\n"
        f"  step-00000008: {why[8]}\n"
        f"  step-00000004: {why[4]}"
    )
    with pytest.raises(CheckpointError, match=f"^{re.escape(message)}$"):
        train(TrainConfig.from_dict(FALLBACK), token_shards, out)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000004", "step-00000008"]
    assert {step: _contents(paths[step]) for step in (4, 8)} == before


def test_an_intact_checkpoint_without_rng_state_is_a_checkpoint_error(
    source_run, token_shards, tmp_path, _one_thread
):
    """Before: KeyError 'rng' from Trainer.restore. An intact (verified) checkpoint that does not load is
    not skipped: it is this run's state, and the error says what is wrong with it."""
    _, source_out = source_run
    path = copy_checkpoint(source_out, 4, tmp_path)
    state_file = path / "train_state" / "rank-00000.json"
    state = json.loads(state_file.read_text())
    del state["rng"]
    state_file.write_text(json.dumps(state))
    reseal_manifest(path)
    message = f"{path}: the training state has no entry 'rng'"
    with pytest.raises(CheckpointError, match=f"^{re.escape(message)}$"):
        train(TrainConfig.from_dict(FALLBACK), token_shards, tmp_path)
