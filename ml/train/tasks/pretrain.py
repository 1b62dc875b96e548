"""Pre-training (Llama 3 paper §3.4.1): next-token loss on token shards, attention inside documents,
and the batch/sequence-length ramp (a longer sequence restarts the loader on windows of the new length)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ml.config import ConfigError
from ml.model.flops import flops_per_token
from ml.train.config import TrainConfig
from ml.train.data import TokenLoader
from ml.train.dist import DistInfo
from ml.train.schedule import batch_schedule
from ml.train.tasks.base import Batch, Task


class PretrainTask(Task):
    """Token shards in ``data_dir`` (``train`` and ``val`` splits, ml/tokens/shards.py format)."""

    name = "pretrain"

    def __init__(self, cfg: TrainConfig, data_dir: Path, info: DistInfo):
        data, ramp = cfg.data, cfg.schedule.batch_ramp
        if data.batch_size % info.world_size:
            raise ConfigError(
                f"TrainConfig.data.batch_size={data.batch_size} is not divisible by world size {info.world_size}"
            )
        longest = max([data.seq_len] * (not ramp) + [stage[2] for stage in ramp])
        if longest > cfg.model.max_seq_len:
            raise ConfigError(
                f"TrainConfig: sequence length {longest} exceeds the model's max_seq_len={cfg.model.max_seq_len}"
            )
        self.cfg, self.data_dir, self.info = cfg, Path(data_dir), info
        self.seq_len = batch_schedule(0, ramp)[1] if ramp else data.seq_len
        self._restart_loader()
        vocab = self.loader.stream.vocab_size
        if vocab > cfg.model.vocab_size:
            raise ConfigError(
                f"{self.data_dir}: token shards use a vocabulary of {vocab} ids, the model has "
                f"vocab_size={cfg.model.vocab_size}: set TrainConfig.model.vocab_size"
            )
        self._val: tuple[int, list[Batch]] = (-1, [])
        self._val_info: dict[str, float] = {}
        self._flops: dict[int, float] = {}

    def _make_loader(self, split: str) -> TokenLoader:
        return TokenLoader(
            self.data_dir,
            batch_size=self.cfg.data.batch_size // self.info.world_size,
            seq_len=self.seq_len,
            split=split,
            rank=self.info.rank,
            world_size=self.info.world_size,
            seed=self.cfg.seed,
        )

    def _restart_loader(self) -> None:
        """Epoch 0 of the windows of ``self.seq_len``."""
        self.loader = self._make_loader("train")
        self._batches = iter(self.loader)

    def micro_batches(self, tokens_seen: int) -> int:
        """``grad_accum``, or under a ramp the scheduled batch in micro-batches of ``batch_size`` sequences."""
        ramp = self.cfg.schedule.batch_ramp
        if not ramp:
            return self.cfg.data.grad_accum
        batch_tokens, seq_len = batch_schedule(tokens_seen, ramp)
        if seq_len != self.seq_len:
            self.seq_len = seq_len
            self._restart_loader()
        return max(1, batch_tokens // (self.cfg.data.batch_size * seq_len))

    def next_batch(self) -> Batch:
        return next(self._batches)._asdict()  # inputs, targets, doc_ids: (B_rank, T)

    def _forward(self, forward: Any, batch: Batch) -> torch.Tensor:
        doc_ids = batch["doc_ids"] if self.cfg.data.doc_mask else None
        return forward(batch["inputs"], doc_ids=doc_ids, labels=batch["targets"])

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        return self._forward(model, batch), batch["inputs"].numel()

    def eval_batches(self) -> list[Batch]:
        """``eval_batches`` batches of windows spread evenly over the validation split, at the current
        sequence length (the fixed validation budget: tokens and documents covered in :meth:`eval_info`)."""
        if self._val[0] != self.seq_len:
            loader = self._make_loader("val")
            windows = loader.val_windows(self.cfg.eval_batches)
            val = loader.val_batches(self.cfg.eval_batches)
            self._val = (self.seq_len, [b._asdict() for b in val])
            self._val_info = {
                "val_tokens": float(len(windows) * self.seq_len),
                "val_docs": float(loader.docs_in(windows)),
            }
        return self._val[1]

    def eval_info(self) -> dict[str, float]:
        """This rank's validation budget: target tokens scored and documents they come from."""
        return dict(self._val_info)

    def eval_step(self, forward: Any, batch: Batch) -> dict[str, torch.Tensor]:
        return {"val_loss": self._forward(forward, batch).float()}

    def flops_per_token(self) -> float:
        if self.seq_len not in self._flops:
            self._flops[self.seq_len] = float(flops_per_token(self.cfg.model, self.seq_len))
        return self._flops[self.seq_len]

    def state_dict(self) -> dict[str, Any]:
        return {"seq_len": self.seq_len, "data": self.loader.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["seq_len"] != self.seq_len:
            if not self.cfg.schedule.batch_ramp:
                raise ValueError(
                    f"saved with seq_len={state['seq_len']}, this run has seq_len={self.seq_len}"
                )
            self.seq_len = int(state["seq_len"])  # the ramp stage the checkpoint was in
            self._restart_loader()
        try:
            self.loader.load_state_dict(state["data"])  # world-size independent: any saving world size
        except (KeyError, ValueError) as exc:
            raise ValueError(f"data-loader state does not fit this run: {exc}") from exc
