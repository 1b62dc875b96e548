"""Reward modelling (Llama 3 paper §4.1): the base model with a scalar head, pairwise loss without margin.

The scalar head is one row of the LM head: the logit of a reserved special token that never occurs in text
(``REWARD_TOKEN``), read at a response's last token. It is a linear map of the final hidden state like any
scalar head, and it keeps the reward model an ordinary Llama checkpoint: ``init_from`` the base model,
FSDP2, checkpoints and the HF export work unchanged, and a reader needs only the token's id.

A record's responses are ranked edited > chosen > rejected (two or three of them). Each response is
encoded after its prompt as an assistant turn; its reward is the head's value at the turn's closing
``<|eot_id|>``. The loss is, over every ordered pair (better i, worse j) of one record,
``-log σ(r_i - r_j)`` — no margin term, as the paper says — averaged over the pairs of the micro-batch.
Evaluation reports pairwise accuracy (r_i > r_j) and the mean reward gap.

The paper puts a prompt and its shuffled responses in one row for efficiency; here each response is its
own row (the same loss; the shared-prompt row needs a prefix-sharing attention mask, not built yet).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ml.model.flops import flops_per_token
from ml.posttrain.records import check_preference_record, ranked_responses
from ml.tokens.chat import encode_chat_masked
from ml.tokens.tokenizer import special_token_id
from ml.train.config import TrainConfig
from ml.train.dist import DistInfo
from ml.train.tasks.base import Batch
from ml.train.tasks.chat_data import (
    ExampleStream,
    ExampleStreamTask,
    eval_index_batches,
    load_chat_data,
    pad_id_of,
    pad_right,
)

REWARD_TOKEN = "<|reserved_special_token_0|>"  # its logit is the reward (Llama 3.1 id 128002)


def ranked_pairs(group: torch.Tensor, rank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (better, worse) of every pair of rows of one group (record) with rank better < worse."""
    same = group[:, None] == group[None, :]
    better = rank[:, None] < rank[None, :]
    i, j = (same & better).nonzero(as_tuple=True)
    return i, j


def reward_ranking_loss(
    rewards: torch.Tensor, group: torch.Tensor, rank: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean over ranked pairs of -log σ(r_better - r_worse) and (accuracy, mean gap); rows (N,) each."""
    i, j = ranked_pairs(group, rank)
    if len(i) == 0:
        raise ValueError("reward_ranking_loss: the batch holds no ranked pair")
    gap = rewards[i] - rewards[j]
    parts = {"pair_accuracy": (gap > 0).float().mean(), "reward_gap": gap.mean()}
    return -F.logsigmoid(gap).mean(), parts


def sequence_rewards(model: Any, inputs: torch.Tensor, last: torch.Tensor, reward_id: int) -> torch.Tensor:
    """The reward of each row: the ``reward_id`` logit at its ``last`` token, (N,)."""
    logits = model(inputs)  # (N, T, V)
    rows = torch.arange(inputs.shape[0], device=inputs.device)
    return logits[rows, last, reward_id].float()


class RewardTask(ExampleStreamTask):
    """Preference records in ``data_dir`` ({train,val}.jsonl + tokenizer.json); a scalar-head model."""

    name = "reward"

    def __init__(self, cfg: TrainConfig, data_dir: Path, info: DistInfo):
        tok, records = load_chat_data(data_dir, check_preference_record)
        self.cfg, self.info, self.pad = cfg, info, pad_id_of(tok)
        self.reward_id = special_token_id(tok, REWARD_TOKEN)
        self.examples = {s: [self._encode(r, tok) for r in recs] for s, recs in records.items()}
        self.stream = ExampleStream(len(self.examples["train"]), cfg.data.batch_size, info, cfg.seed)
        self._flops = float(flops_per_token(cfg.model, cfg.data.seq_len))

    def _encode(self, record: dict[str, Any], tok: Any) -> list[list[int]]:
        seqs = []
        for text in ranked_responses(record):
            ids = encode_chat_masked([*record["prompt"], {"role": "assistant", "content": text}], tok).ids
            if len(ids) > self.cfg.data.seq_len:
                raise ValueError(
                    f"preference record {record['id']!r}: a response has {len(ids)} tokens > "
                    f"seq_len={self.cfg.data.seq_len}"
                )
            seqs.append(ids)
        return seqs

    def collate(self, split: str, idx: Any) -> Batch:
        """One row per response; ``group`` (record) and ``rank`` (0 = best) per row, ``last`` its eot."""
        rows, group, rank = [], [], []
        for g, i in enumerate(idx):
            for r, seq in enumerate(self.examples[split][i]):
                rows.append(seq), group.append(g), rank.append(r)
        return {
            "inputs": pad_right(rows, self.pad),
            "last": torch.tensor([len(s) - 1 for s in rows]),
            "group": torch.tensor(group),
            "rank": torch.tensor(rank),
        }

    def next_batch(self) -> Batch:
        return self.collate("train", self.stream.next_indices())

    def _loss(self, forward: Any, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        rewards = sequence_rewards(forward, batch["inputs"], batch["last"], self.reward_id)
        return reward_ranking_loss(rewards, batch["group"], batch["rank"])

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        return self._loss(model, batch)[0], int((batch["last"] + 1).sum())

    def eval_batches(self) -> list[Batch]:
        n = len(self.examples["val"])
        idx = eval_index_batches(n, self.cfg.data.batch_size, self.info, self.cfg.eval_batches)
        return [self.collate("val", rows) for rows in idx]

    def eval_step(self, forward: Any, batch: Batch) -> dict[str, torch.Tensor]:
        loss, parts = self._loss(forward, batch)
        return {"val_loss": loss.float(), **parts}
