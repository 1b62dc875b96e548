"""SFT: prompt-masked labels on exact ids, packing with document masks, a short engine run."""

from __future__ import annotations

import torch
from posttrain_helpers import BOS, EOT, ONE, b, config, sft_records, write_data

from ml.model.llama import IGNORE_INDEX, Llama
from ml.train.engine import Trainer
from ml.train.tasks.sft import SFTTask, pack_examples

X = IGNORE_INDEX


def test_pack_examples_exact():
    examples = [
        ("a", [1, 2, 3], [X, 5, 6]),
        ("b", [7, 8], [9, X]),
        ("long", [1] * 7, [1] * 7),
        ("c", [4], [4]),
    ]
    p = pack_examples(examples, seq_len=6, pad_id=0)
    assert p.inputs.tolist() == [[1, 2, 3, 7, 8, 4]]
    assert p.labels.tolist() == [[X, 5, 6, 9, X, 4]]
    assert p.doc_ids.tolist() == [[0, 0, 0, 1, 1, 2]]
    assert p.dropped == ["long"]
    p = pack_examples(examples[:2], seq_len=4, pad_id=0)
    assert p.inputs.tolist() == [[1, 2, 3, 0], [7, 8, 0, 0]]
    assert p.labels.tolist() == [[X, 5, 6, X], [9, X, X, X]]
    assert p.doc_ids.tolist() == [[0, 0, 0, 1], [0, 0, 1, 1]]  # padding is a document of its own


def test_sft_labels_cover_only_the_assistant_turn(tmp_path):
    data = write_data(tmp_path, sft_records(4), sft_records(2, prefix="v"))
    task = SFTTask(config(task="sft", data=dict(seq_len=96, batch_size=1)), data, ONE)
    chat = [BOS, 262, *b("system"), 263, *b("\n\nAdd."), EOT, 262, *b("user"), 263, *b("\n\n0+1"), EOT]
    chat += [262, *b("assistant"), 263, *b("\n\n1"), EOT]
    row_inputs, row_labels = task.packed["train"].inputs[0].tolist(), task.packed["train"].labels[0].tolist()
    n = len(chat) - 1
    assert row_inputs[:n] == chat[:-1]
    assert row_labels[:n] == [X] * (n - 2) + [ord("1"), EOT]  # "1" then the eot that ends the turn
    assert task.packed["train"].doc_ids[0, n].item() == 1 and row_inputs[n] == BOS  # next chat packed after


def test_packed_loss_equals_chats_alone(tmp_path):
    data = write_data(tmp_path, sft_records(4), sft_records(2, prefix="v"))
    task = SFTTask(config(task="sft", data=dict(seq_len=96, batch_size=1)), data, ONE)
    torch.manual_seed(0)
    model = Llama.from_config(config().model)
    p = task.packed["train"]
    row, docs = p.inputs[:1], p.doc_ids[:1]
    assert docs.max().item() >= 2  # at least two chats in the row (plus padding)
    total, count = torch.zeros(()), 0
    for d in docs.unique().tolist():
        sel = docs[0] == d
        labels = p.labels[0, sel][None]
        n = int((labels != X).sum())
        if n:
            total = total + model(row[:, sel], labels=labels) * n
            count += n
    packed = model(row, doc_ids=docs, labels=p.labels[:1])
    torch.testing.assert_close(packed, total / count, atol=1e-5, rtol=1e-5)


def test_sft_trains_through_the_engine(tmp_path):
    torch.set_num_threads(1)
    data = write_data(tmp_path / "d", sft_records(8), sft_records(2, prefix="v"))
    cfg = config(task="sft", steps=12, data=dict(seq_len=96, batch_size=1), optimizer=dict(lr=1e-2))
    trainer = Trainer(cfg, SFTTask(cfg, data, ONE), tmp_path / "out", ONE)
    trainer.build()
    before = trainer.evaluate()["val_loss"]
    losses = [trainer.train_step()["loss"] for _ in range(12)]
    after = trainer.evaluate()["val_loss"]
    assert after < before - 1.0, (before, after, losses)


def test_sft_run_resumes_exactly(tmp_path):
    from train_helpers import copy_checkpoint

    from ml.train.engine import train

    torch.set_num_threads(1)
    data = write_data(tmp_path / "d", sft_records(8), sft_records(2, prefix="v"))
    cfg = config(task="sft", steps=6, ckpt_every=2, deterministic=True, data=dict(seq_len=96, batch_size=2))
    whole = train(cfg, data, tmp_path / "whole")
    resumed = train(cfg, data, copy_checkpoint(tmp_path / "whole", 4, tmp_path / "split").parents[1])
    assert resumed.start_step == 4 and resumed.final_step == 6
    assert resumed.losses == whole.losses[4:]
    assert (whole.hf_dir / "model.safetensors").is_file()
