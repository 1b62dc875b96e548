"""The interface between the training engine and an objective.

The engine (ml/train/engine.py) owns everything that does not depend on the objective: building the model,
compile, FSDP2, the optimizer and LR schedule, gradient accumulation and clipping, checkpoint/resume,
``init_from``, metrics and the HF export. A :class:`Task` owns the rest: where batches come from, the loss,
and what evaluation measures. One module per objective under ml/train/tasks/:

* ``pretrain``: token shards, next-token loss with a document mask, the batch/sequence ramp
  (Llama 3 paper §3.4.1).
* ``sft`` (§4.1): packed chat sequences whose prompt tokens are masked out of the loss (targets -100);
  the same ``loss`` shape as pretraining, another data iterator; ``tokens`` counts target tokens.
* ``reward`` (§4.1): ranked responses (edited > chosen > rejected) of one prompt in one batch dict; the scalar
  head is the LM head's row of a reserved token (so the reward model stays an ordinary Llama checkpoint);
  loss ``-logsigmoid(r_better - r_worse)`` over ranked pairs; eval metrics: pairwise accuracy, reward gap.
* ``dpo`` (§4.1): pairs scored by the trained policy and a frozen reference: :meth:`Task.frozen_models`
  names ``{"reference": <HF dir or checkpoint>}``, the engine builds, loads, shards and freezes it and
  hands it over in :meth:`Task.bind_frozen`, where the task scores every example once and keeps the
  reference log-probs with the examples.

Contract:

* Batches are dicts of CPU tensors (the engine moves them to the device); a task's batch is this rank's
  share of the global micro-batch.
* The data iterator is the task's; its ``state_dict`` is JSON data and independent of the world size, so
  a checkpoint saved on N ranks resumes on M (see ml/train/data.py for the token loader's argument).
* ``loss(model, batch)`` returns ``(loss, tokens)``: a scalar tensor, the mean over this micro-batch
  (the engine averages micro-batches equally: ``(loss / accum).backward()``), and the number of tokens
  the micro-batch trained on, on this rank (the engine sums over ranks for throughput and ``tokens_seen``).
* ``eval_step(forward, batch)`` returns per-batch metric tensors; the engine averages each over the
  task's ``eval_batches()`` and over ranks, under ``no_grad`` and ``model.eval()``.
"""

from __future__ import annotations

import abc
from typing import Any

import torch
from torch import nn

Batch = dict[str, torch.Tensor]


class Task(abc.ABC):
    """One training objective: data iterator, loss and evaluation metrics."""

    name: str = ""

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Adapt the freshly built model before compile and FSDP (a reward model's scalar head); default as is."""
        return model

    def frozen_models(self) -> dict[str, str]:
        """Extra models to build frozen (no grad, eval mode, sharded like the policy): name -> weights path."""
        return {}

    def bind_frozen(self, models: dict[str, nn.Module]) -> None:
        """Receive the models asked for in :meth:`frozen_models`, built and loaded, before the first step."""
        if models:
            raise NotImplementedError(f"{type(self).__name__} asked for no frozen models")

    @abc.abstractmethod
    def micro_batches(self, tokens_seen: int) -> int:
        """Micro-batches in the next optimizer step (a batch ramp grows it with ``tokens_seen``)."""

    @abc.abstractmethod
    def next_batch(self) -> Batch:
        """This rank's next training micro-batch."""

    @abc.abstractmethod
    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        """``(mean loss over the micro-batch, tokens trained on)`` with autograd through ``model``."""

    @abc.abstractmethod
    def eval_batches(self) -> list[Batch]:
        """This rank's fixed evaluation batches (the same ones at every evaluation of one data layout)."""

    def eval_info(self) -> dict[str, float]:
        """Facts about the evaluation batches reported with every evaluation (e.g. tokens and documents
        covered); none by default."""
        return {}

    @abc.abstractmethod
    def eval_step(self, forward: Any, batch: Batch) -> dict[str, torch.Tensor]:
        """Metrics of one evaluation batch (scalar tensors) computed with ``forward`` (the model's call)."""

    @abc.abstractmethod
    def flops_per_token(self) -> float:
        """Training FLOPs per token at the current data layout (for MFU)."""

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """The data iterator's position as JSON data, independent of the world size."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`; ValueError naming the mismatch when it does not fit this run."""
