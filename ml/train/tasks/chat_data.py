"""What the post-training tasks (sft, reward, dpo) share: their data directory and the example stream.

A post-training data directory holds ``tokenizer.json`` (the chat format's special tokens) and
``train.jsonl`` / ``val.jsonl`` records (ml/posttrain/records.py formats); a ``heldout.jsonl`` next to them
is checked to share no id with either. The tasks encode every record
once at start-up (tiny to moderate sets; pre-tokenized shards are the scale-out path).

:class:`ExampleStream` walks the training examples in a seeded random order per epoch, ``batch_size`` global
examples per micro-batch, of which each rank takes its own slice; its state is (epoch, examples consumed
in the epoch), independent of the world size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from ml.posttrain.records import RecordError, read_jsonl
from ml.tokens.tokenizer import PAD, load_tokenizer, special_token_id
from ml.train.dist import DistInfo
from ml.train.tasks.base import Task

SPLITS = ("train", "val")


def load_chat_data(
    data_dir: Path, check: Callable[[Any, str], dict[str, Any]]
) -> tuple[Tokenizer, dict[str, list[dict[str, Any]]]]:
    """The tokenizer and checked records of each split in ``data_dir``."""
    data_dir = Path(data_dir)
    missing = [n for n in ("tokenizer.json", *(f"{s}.jsonl" for s in SPLITS)) if not (data_dir / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{data_dir}: post-training data lacks {', '.join(missing)}")
    tok = load_tokenizer(data_dir / "tokenizer.json")
    records = {s: read_jsonl(data_dir / f"{s}.jsonl", check) for s in SPLITS}
    heldout_path = data_dir / "heldout.jsonl"
    if heldout_path.is_file():  # training never sees a held-out record (ml/posttrain/records.py)
        heldout = {r["id"] for r in read_jsonl(heldout_path, lambda r, where: r)}
        for split, recs in records.items():
            for r in recs:
                if r["id"] in heldout:
                    raise RecordError(f"{data_dir / (split + '.jsonl')}: record id {r['id']!r} is held out")
    return tok, records


def pad_id_of(tok: Tokenizer) -> int:
    return special_token_id(tok, PAD)


def shifted_labels(ids: Sequence[int], mask: Sequence[bool]) -> tuple[list[int], list[int]]:
    """(inputs, labels): inputs = ids[:-1]; labels[t] = ids[t+1] where mask[t+1], else -100."""
    return list(ids[:-1]), [i if m else -100 for i, m in zip(ids[1:], mask[1:], strict=True)]


def pad_right(rows: Sequence[Sequence[int]], value: int, length: int | None = None) -> torch.Tensor:
    """(N, length or longest) long tensor of the rows, right-padded with ``value``."""
    T = length if length is not None else max(len(r) for r in rows)
    out = torch.full((len(rows), T), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
    return out


class ExampleStream:
    """Seeded epochs over ``n`` examples; each micro-batch is ``batch_size`` global examples, sliced per rank."""

    def __init__(self, n: int, batch_size: int, info: DistInfo, seed: int):
        if n < batch_size:
            raise ValueError(f"{n} training examples cannot fill one batch of {batch_size}")
        if batch_size % info.world_size:
            raise ValueError(f"batch_size={batch_size} is not divisible by world size {info.world_size}")
        self.n, self.batch_size, self.info, self.seed = n, batch_size, info, seed
        self.epoch, self.position = 0, 0

    def _order(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def next_indices(self) -> list[int]:
        """This rank's example indices of the next micro-batch (the epoch's tail that cannot fill one is skipped)."""
        if self.position + self.batch_size > self.n:
            self.epoch, self.position = self.epoch + 1, 0
        batch = self._order()[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        per_rank = self.batch_size // self.info.world_size
        return batch[self.info.rank * per_rank : (self.info.rank + 1) * per_rank]

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "n": self.n, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (state["n"], state["batch_size"]) != (self.n, self.batch_size):
            raise ValueError(
                f"saved over {state['n']} examples in batches of {state['batch_size']}, this run has "
                f"{self.n} in batches of {self.batch_size}"
            )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


def eval_index_batches(n: int, batch_size: int, info: DistInfo, max_batches: int) -> list[list[int]]:
    """This rank's slices of the first ``max_batches`` consecutive batches of the evaluation examples."""
    per_rank = max(1, batch_size // info.world_size)
    out = []
    for start in range(0, min(n, max_batches * batch_size), batch_size):
        rows = list(range(start, min(start + batch_size, n)))[
            info.rank * per_rank : (info.rank + 1) * per_rank
        ]
        if rows:
            out.append(rows)
    return out


class ExampleStreamTask(Task):
    """A post-training task drawing its examples from one :class:`ExampleStream` (``self.stream``): the
    micro-batches per step are ``cfg.data.grad_accum``, the FLOPs per token fixed at construction
    (``self._flops``), and the checkpointed data state is the stream's position."""

    cfg: Any
    stream: ExampleStream
    _flops: float

    def micro_batches(self, tokens_seen: int) -> int:
        return self.cfg.data.grad_accum

    def flops_per_token(self) -> float:
        return self._flops

    def state_dict(self) -> dict[str, Any]:
        return {"data": self.stream.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state["data"])
