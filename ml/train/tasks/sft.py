"""Supervised fine-tuning (Llama 3 paper §4.1): next-token loss on the assistant turns only.

Each chat is encoded with its SFT targets (ml/tokens/chat.py: the assistant turns' python_tag, content
and eot/eom; system, user and ipython turns and every header are masked to -100). Chats are packed into
rows of ``seq_len`` tokens in order, with one document id per chat, so the model's document mask keeps
every chat from attending to another and RoPE positions restart per chat: a packed chat's loss terms
equal running it alone (tested). A chat longer than ``seq_len`` is dropped and counted, never cut.
The loss is the mean over the micro-batch's target tokens.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ml.model.flops import flops_per_token
from ml.model.llama import IGNORE_INDEX
from ml.posttrain.records import check_sft_record
from ml.tokens.chat import encode_chat_masked
from ml.train.config import TrainConfig
from ml.train.dist import DistInfo
from ml.train.tasks.base import Batch
from ml.train.tasks.chat_data import (
    ExampleStream,
    ExampleStreamTask,
    load_chat_data,
    pad_id_of,
    shifted_labels,
)


@dataclasses.dataclass(frozen=True)
class PackedRows:
    """inputs, labels, doc_ids: (N, seq_len); dropped: ids of examples longer than a row."""

    inputs: torch.Tensor
    labels: torch.Tensor
    doc_ids: torch.Tensor
    dropped: list[str]


def pack_examples(
    examples: Sequence[tuple[str, list[int], list[int]]], seq_len: int, pad_id: int
) -> PackedRows:
    """Pack (id, inputs, labels) examples in order into rows: a row is closed when the next one does not fit;
    the rest of a row is padding (pad_id, label -100) in a document of its own."""
    rows: list[tuple[list[int], list[int], list[int]]] = []
    row: tuple[list[int], list[int], list[int]] = ([], [], [])
    dropped: list[str] = []

    def close() -> None:
        n_pad, doc = seq_len - len(row[0]), (row[2][-1] + 1 if row[2] else 0)
        rows.append((row[0] + [pad_id] * n_pad, row[1] + [IGNORE_INDEX] * n_pad, row[2] + [doc] * n_pad))

    for ex_id, inputs, labels in examples:
        if len(inputs) > seq_len:
            dropped.append(ex_id)
            continue
        if len(row[0]) + len(inputs) > seq_len:
            close()
            row = ([], [], [])
        doc = row[2][-1] + 1 if row[2] else 0
        row[0].extend(inputs), row[1].extend(labels), row[2].extend([doc] * len(inputs))
    if row[0]:
        close()
    if not rows:
        return PackedRows(*(torch.zeros(0, seq_len, dtype=torch.long) for _ in range(3)), dropped)
    return PackedRows(*(torch.tensor([r[k] for r in rows]) for k in range(3)), dropped)


class SFTTask(ExampleStreamTask):
    """Chats in ``data_dir`` ({train,val}.jsonl SFT records + tokenizer.json); batches of packed rows."""

    name = "sft"

    def __init__(self, cfg: TrainConfig, data_dir: Path, info: DistInfo):
        tok, records = load_chat_data(data_dir, check_sft_record)
        self.cfg, self.info, pad = cfg, info, pad_id_of(tok)
        seq_len = cfg.data.seq_len
        self.packed = {}
        for split, recs in records.items():
            examples = []
            for r in recs:
                enc = encode_chat_masked(r["messages"], tok)
                examples.append((r["id"], *shifted_labels(enc.ids, enc.targets)))
            self.packed[split] = pack_examples(examples, seq_len, pad)
        self.stream = ExampleStream(len(self.packed["train"].inputs), cfg.data.batch_size, info, cfg.seed)
        self._flops = float(flops_per_token(cfg.model, seq_len))

    def _rows(self, split: str, idx: list[int]) -> Batch:
        p = self.packed[split]
        return {"inputs": p.inputs[idx], "labels": p.labels[idx], "doc_ids": p.doc_ids[idx]}

    def next_batch(self) -> Batch:
        return self._rows("train", self.stream.next_indices())

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        loss = model(batch["inputs"], doc_ids=batch["doc_ids"], labels=batch["labels"])
        return loss, int((batch["labels"] != IGNORE_INDEX).sum())

    def eval_batches(self) -> list[Batch]:
        n, per_rank = len(self.packed["val"].inputs), self.cfg.data.batch_size // self.info.world_size
        rows = list(range(n))[self.info.rank :: self.info.world_size][: per_rank * self.cfg.eval_batches]
        return [self._rows("val", rows[i : i + per_rank]) for i in range(0, len(rows), per_rank)]

    def eval_step(self, forward: Any, batch: Batch) -> dict[str, torch.Tensor]:
        return {
            "val_loss": forward(batch["inputs"], doc_ids=batch["doc_ids"], labels=batch["labels"]).float()
        }
