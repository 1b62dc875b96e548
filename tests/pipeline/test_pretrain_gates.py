"""The pre-training stages' gates judge the numbers their artifact records: a made-up regression fails,
the honest numbers pass; interruptions and lost time are counted from the work dir's launch log."""

import json

from assets.pretrain.base_model import base_model_beats_unigram, base_model_matches_transformers
from assets.pretrain.initial import pretrain_initial_beats_unigram
from assets.pretrain.long_context import long_context_recovers_short_loss, long_context_solves_niah
from assets.pretrain.training import interruptions
from dagster_project.artifacts import HFCheckpoint


def _handle(tmp_path, name: str, files: dict) -> HFCheckpoint:
    path = tmp_path / name
    path.mkdir()
    for fname, content in files.items():
        (path / fname).write_text(json.dumps(content))
    return HFCheckpoint(asset=name, partition="p", path=path, md5="x")


def _stage(seq_len: int, before: float, after: float, niah: float, bound=0.05, bar=0.5) -> dict:
    return {
        "seq_len": seq_len,
        "short_loss_before": before,
        "short_loss": after,
        "max_short_loss_increase": bound,
        "recovered": after <= before + bound,
        "niah_accuracy": niah,
        "min_niah_accuracy": bar,
        "niah_solved": niah >= bar,
    }


def test_long_context_gates_fail_on_a_made_up_regression_and_pass_otherwise(tmp_path):
    good = [_stage(512, 5.00, 5.02, 0.8), _stage(1024, 5.02, 4.99, 0.7)]
    ok = _handle(tmp_path, "ok", {"stages.json": {"planned_seq_lens": [512, 1024], "stages": good}})
    assert long_context_recovers_short_loss(ok).passed and long_context_solves_niah(ok).passed
    assert long_context_recovers_short_loss(ok).metadata["1024.short_loss"].value == 4.99
    worse = [good[0], _stage(1024, 5.02, 5.20, 0.7)]  # short-context loss 0.18 nats worse than before
    bad = _handle(tmp_path, "bad", {"stages.json": {"planned_seq_lens": [512, 1024], "stages": worse}})
    result = long_context_recovers_short_loss(bad)
    assert not result.passed and "failed at [1024]" in result.description
    assert long_context_solves_niah(bad).passed
    blind = [_stage(512, 5.0, 5.0, 0.25)]  # retrieval at chance stops the climb after the first stage
    stopped = _handle(
        tmp_path, "stopped", {"stages.json": {"planned_seq_lens": [512, 1024], "stages": blind}}
    )
    assert not long_context_solves_niah(stopped).passed
    assert not long_context_recovers_short_loss(stopped).passed  # stage 1024 never ran


def test_unigram_and_transformers_gates(tmp_path):
    evals = {"unigram_nats": 7.1, "val_loss": 5.3, "nats_below_unigram": 1.8, "min_nats_below_unigram": 1.5}
    assert pretrain_initial_beats_unigram(_handle(tmp_path, "a", {"evals.json": evals})).passed
    short = {**evals, "val_loss": 5.9, "nats_below_unigram": 1.2}
    assert not pretrain_initial_beats_unigram(_handle(tmp_path, "b", {"evals.json": short})).passed
    base = {
        "average_loss": 5.0,
        "unigram_nats": 7.0,
        "nats_below_unigram": 2.0,
        "min_nats_below_unigram": 1.5,
        "transformers_loss": 5.00001,
        "max_hf_loss_diff": 1e-4,
    }
    assert base_model_beats_unigram(_handle(tmp_path, "c", {"evals.json": base})).passed
    assert base_model_matches_transformers(_handle(tmp_path, "d", {"evals.json": base})).passed
    drifted = {**base, "transformers_loss": 5.01}
    assert not base_model_matches_transformers(_handle(tmp_path, "e", {"evals.json": drifted})).passed


def test_interruptions_count_killed_and_failed_launches_and_redone_steps(tmp_path):
    launches = [
        {"event": "start", "time": 100.0},  # killed (-9): no end recorded, ran until the next launch
        {"event": "start", "time": 130.0},
        {"event": "failed", "time": 140.0, "error": "Failure: rank 0 exited"},
        {"event": "start", "time": 150.0},
        {"event": "done", "time": 210.0},
    ]
    (tmp_path / "launches.jsonl").write_text("".join(json.dumps(r) + "\n" for r in launches))
    steps = [1, 2, 3, 4, 3, 4, 5, 5, 6, 7, 8]  # resumed from step 2, then from step 4
    (tmp_path / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in steps)
    )
    assert interruptions(tmp_path) == {
        "interruptions": 2,
        "lost_wall_s": 40.0,
        "redone_steps": 3,
        "effective_time_fraction": round(1 - 40 / 100, 4),
    }
