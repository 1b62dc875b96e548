"""Direct preference optimization (Llama 3 paper §4.1): β = 0.1, formatting tokens masked, NLL on chosen.

For a pair (chosen y_c, rejected y_r) after a prompt x, with sequence log-probabilities summed over the
scored tokens of the policy π and the frozen reference π_ref (the model DPO starts from, ``init_from``)::

    loss = -log σ(β [(log π(y_c) - log π_ref(y_c)) - (log π(y_r) - log π_ref(y_r))])   mean over pairs
         + nll_coef · (-mean log π over the chosen scored tokens of the micro-batch)

Scored tokens are the assistant response's text only (ml/tokens/chat.py ``content``): the headers and the
closing ``<|eot_id|>`` are masked out of chosen and rejected as the paper does. The reference log-probs
of every example are computed once, when the reference is handed over, and kept with the example; when
the data directory holds them already (``reference_logps.json``, written by :func:`save_reference_logps`,
e.g. once for several DPO runs from one SFT model) they are read from there and no reference is built.

Checked against TRL's ``DPOTrainer`` (loss_type ["sigmoid", "sft"] with weights [1, nll_coef]; the "sft"
term is TRL's NLL on chosen completion tokens) on the same model, batch and β (tests/ml/train). One
deliberate difference: TRL appends EOS to a completion and scores it; we mask ``<|eot_id|>``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ml.model.flops import flops_per_token
from ml.model.llama import IGNORE_INDEX
from ml.posttrain.records import check_preference_record
from ml.tokens.chat import encode_chat_masked
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
    shifted_labels,
)

DPO_BETA = 0.1  # Llama 3 paper §4.1
DPO_NLL_COEF = 0.2  # Llama 3 paper §4.1
REFERENCE_LOGPS = "reference_logps.json"  # {split: [[chosen, rejected], ...]} in record order


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(label) per token (N, T), 0 where the label is ignored, and the scored-token mask (N, T)."""
    mask = labels != IGNORE_INDEX
    safe = labels.masked_fill(~mask, 0)
    logp = (
        torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
        .gather(-1, safe.unsqueeze(-1))
        .squeeze(-1)
    )
    return logp * mask, mask


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of log p(label) over each row's scored tokens: (N, T, V), (N, T) -> (N,)."""
    return token_logps(logits, labels)[0].sum(dim=-1)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Per-pair sigmoid DPO loss (B,) from sequence log-probs (B,) each."""
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -F.logsigmoid(beta * margin)


def dpo_objective(
    logits: torch.Tensor, labels: torch.Tensor, ref_logps: torch.Tensor, beta: float, nll_coef: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The DPO loss of one micro-batch whose rows are [chosen; rejected] (2B rows) and its parts.

    ``labels`` (2B, T): scored tokens, -100 elsewhere; ``ref_logps`` (2B,): the reference's sequence log-probs."""
    logp, mask = token_logps(logits, labels)  # (2B, T)
    seq = logp.sum(dim=-1)  # (2B,)
    pc, pr = seq.chunk(2)
    rc, rr = ref_logps.chunk(2)
    pairs = dpo_loss(pc, pr, rc, rr, beta)
    chosen_logp, chosen_mask = logp.chunk(2)[0], mask.chunk(2)[0]
    nll = -chosen_logp.sum() / chosen_mask.sum().clamp(min=1)
    reward_margin = beta * ((pc - rc) - (pr - rr))
    parts = {
        "dpo_loss": pairs.mean(),
        "nll_chosen": nll,
        "reward_accuracy": (reward_margin > 0).float().mean(),
        "reward_margin": reward_margin.mean(),
    }
    return pairs.mean() + nll_coef * nll, parts


class DPOTask(ExampleStreamTask):
    """Preference records in ``data_dir`` ({train,val}.jsonl + tokenizer.json); reference = ``init_from``."""

    name = "dpo"

    def __init__(
        self,
        cfg: TrainConfig,
        data_dir: Path,
        info: DistInfo,
        beta: float = DPO_BETA,
        nll_coef: float = DPO_NLL_COEF,
    ):
        if not cfg.init_from:
            raise ValueError("TrainConfig.init_from: DPO needs the model it starts from (also its reference)")
        tok, records = load_chat_data(data_dir, check_preference_record)
        self.cfg, self.info, self.beta, self.nll_coef = cfg, info, beta, nll_coef
        self.pad = pad_id_of(tok)
        self.examples = {s: [self._encode(r, tok) for r in recs] for s, recs in records.items()}
        self.ref: dict[str, torch.Tensor] = {}  # split -> (N, 2): reference log-probs of chosen, rejected
        cached = Path(data_dir) / REFERENCE_LOGPS
        if cached.is_file():
            self.ref = load_reference_logps(cached, {s: len(e) for s, e in self.examples.items()})
        self.stream = ExampleStream(len(self.examples["train"]), cfg.data.batch_size, info, cfg.seed)
        self._flops = float(flops_per_token(cfg.model, cfg.data.seq_len))

    def _encode(self, record: dict[str, Any], tok: Any) -> dict[str, Any]:
        out = {"id": record["id"]}
        for field in ("chosen", "rejected"):
            enc = encode_chat_masked(
                [*record["prompt"], {"role": "assistant", "content": record[field]}], tok
            )
            if len(enc.ids) - 1 > self.cfg.data.seq_len:
                raise ValueError(
                    f"preference record {record['id']!r}: {field} has {len(enc.ids)} tokens > "
                    f"seq_len={self.cfg.data.seq_len} + 1"
                )
            out[field] = shifted_labels(enc.ids, enc.content)
        return out

    def frozen_models(self) -> dict[str, str]:
        return {} if self.ref else {"reference": self.cfg.init_from}

    def bind_frozen(self, models: dict[str, nn.Module]) -> None:
        """Score every example with the reference once; the reference is not kept."""
        if not models:  # read from the data directory's cache
            return
        reference = models["reference"]
        device = next(reference.parameters()).device
        with torch.no_grad():
            for split, examples in self.examples.items():
                scores = []
                for start in range(0, len(examples), self.cfg.data.batch_size):
                    batch = self.collate(
                        split, range(start, min(start + self.cfg.data.batch_size, len(examples)))
                    )
                    logits = reference(batch["inputs"].to(device))
                    scores.append(sequence_logps(logits, batch["labels"].to(device)).view(2, -1).T.cpu())
                self.ref[split] = torch.cat(scores) if scores else torch.zeros(0, 2)

    def collate(self, split: str, idx: Any) -> Batch:
        """Rows [chosen of idx; rejected of idx], right-padded; ``ref_logps`` once the reference has scored."""
        exs = [self.examples[split][i] for i in idx]
        rows = [e["chosen"] for e in exs] + [e["rejected"] for e in exs]
        batch = {
            "inputs": pad_right([r[0] for r in rows], self.pad),
            "labels": pad_right([r[1] for r in rows], IGNORE_INDEX),
        }
        if split in self.ref:
            ref = self.ref[split][list(idx)]  # (B, 2)
            batch["ref_logps"] = torch.cat([ref[:, 0], ref[:, 1]])
        return batch

    def next_batch(self) -> Batch:
        return self.collate("train", self.stream.next_indices())

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        loss, _ = dpo_objective(
            model(batch["inputs"]), batch["labels"], batch["ref_logps"], self.beta, self.nll_coef
        )
        return loss, int((batch["labels"] != IGNORE_INDEX).sum())

    def eval_batches(self) -> list[Batch]:
        n = len(self.examples["val"])
        idx = eval_index_batches(n, self.cfg.data.batch_size, self.info, self.cfg.eval_batches)
        return [self.collate("val", rows) for rows in idx]

    def eval_step(self, forward: Any, batch: Batch) -> dict[str, torch.Tensor]:
        loss, parts = dpo_objective(
            forward(batch["inputs"]), batch["labels"], batch["ref_logps"], self.beta, self.nll_coef
        )
        return {"val_loss": loss.detach().float(), **{k: v.detach().float() for k, v in parts.items()}}


def save_reference_logps(task: DPOTask, path: Path) -> Path:
    """The reference log-probs a task computed (``bind_frozen``) as JSON, for later runs on the same data."""
    data = {split: ref.tolist() for split, ref in task.ref.items()}
    path.write_text(json.dumps(data))
    return path


def load_reference_logps(path: Path, sizes: dict[str, int]) -> dict[str, torch.Tensor]:
    """{split: (N, 2)} from ``path``; a ValueError naming the split whose count does not match the data."""
    data = json.loads(Path(path).read_text())
    out = {}
    for split, n in sizes.items():
        rows = data.get(split)
        if rows is None or len(rows) != n:
            got = "none" if rows is None else len(rows)
            raise ValueError(f"{path}: split {split!r} has {got} reference log-probs for {n} pairs")
        out[split] = torch.tensor(rows, dtype=torch.float32).reshape(n, 2)
    return out
