"""Held-out splits of the synthetic data by id: stable, disjoint, and refused by training."""

from __future__ import annotations

import json

import pytest
import torch

from ml.posttrain.code_synth import generate_code_tasks
from ml.posttrain.math_synth import generate_math
from ml.posttrain.records import RecordError, read_jsonl, split_of, write_posttrain_splits
from ml.tokens.tokenizer import byte_tokenizer
from ml.train.config import TrainConfig
from ml.train.dist import DistInfo
from ml.train.tasks.sft import SFTTask

ONE = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
MODEL = dict(
    preset="tiny", dim=32, n_layers=1, n_heads=4, n_kv_heads=2, ffn_dim=64, vocab_size=272, max_seq_len=512
)


def _records(n_math: int, n_code: int) -> list[dict]:
    return [p.to_record() for p in generate_math(n_math, seed=5)] + [
        t.to_record() for t in generate_code_tasks(n_code, seed=5)
    ]


def test_splits_are_by_id_and_disjoint(tmp_path):
    counts = write_posttrain_splits(
        _records(90, 30), tmp_path, heldout_fraction=0.2, val_fraction=0.1, seed=0
    )
    assert counts == {"train": 88, "val": 13, "heldout": 19}
    ids = {s: {r["id"] for r in read_jsonl(tmp_path / f"{s}.jsonl", lambda r, w: r)} for s in counts}
    assert not ids["heldout"] & (ids["train"] | ids["val"])
    assert all(split_of(i, 0.2) == "heldout" for i in ids["heldout"])
    # more data later: every earlier held-out id is still held out, no earlier training id moved there
    write_posttrain_splits(
        _records(150, 50), tmp_path / "more", heldout_fraction=0.2, val_fraction=0.3, seed=0
    )
    more = {r["id"] for r in read_jsonl(tmp_path / "more" / "heldout.jsonl", lambda r, w: r)}
    assert ids["heldout"] <= more and not (ids["train"] | ids["val"]) & more


def test_training_refuses_a_heldout_record(tmp_path):
    write_posttrain_splits(_records(40, 0), tmp_path, heldout_fraction=0.2, val_fraction=0.1, seed=0)
    byte_tokenizer(16).save(str(tmp_path / "tokenizer.json"))
    cfg = TrainConfig.from_dict(
        dict(task="sft", model=MODEL, data=dict(seq_len=512, batch_size=1), device="cpu")
    )
    task = SFTTask(cfg, tmp_path, ONE)  # the clean split trains
    assert task.packed["train"].inputs.shape[0] > 0
    leaked = (tmp_path / "heldout.jsonl").read_text().splitlines()[0]
    with (tmp_path / "train.jsonl").open("a") as f:
        f.write(leaked + "\n")
    with pytest.raises(RecordError, match=f"train.jsonl: record id '{json.loads(leaked)['id']}' is held out"):
        SFTTask(cfg, tmp_path, ONE)
