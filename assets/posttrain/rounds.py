"""What the post-training round assets share: the round of a partition, the model a round starts from, the
training launch of a round's stage, and the chat model's files.

A round's assets are partitioned by (snapshot, round) (``ROUNDS``, dagster_project/partitions.py); the base
model and the synthetic data are read through ``SNAPSHOT_INPUT``. Round 1 starts from the base model; round
k from round k-1's chat model, read by partition key (the edge closes a cycle in the asset graph, which
Dagster cannot declare) and recorded among the asset's inputs (MLflow and the ``inputs`` metadata).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import torch

from assets.pretrain.training import copy_hf, vocab_unset
from dagster_project.artifacts import ChatModel, HFCheckpoint, SyntheticData, hf_tokenizer_files, load_handle
from dagster_project.partitions import SNAPSHOT_OF_ROUND, previous_round_partition, round_number
from ml.safety.tuning import SafetyMixConfig, safety_records
from ml.tokens.chat import encode_chat_masked
from ml.tokens.tokenizer import load_tokenizer
from ml.train.config import TrainConfig

SNAPSHOT_INPUT = dg.AssetIn(partition_mapping=SNAPSHOT_OF_ROUND)
# No eager automation for a round's assets: a new base model would start every registered round at once,
# and round k needs round k-1's chat model, an edge the automation cannot see. Rounds run in order through
# ``lifecycle run`` (or the ``posttrain_round`` job, one round after the other).
ROUND_AUTOMATION = None


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """The asset's in-process torch work (sampling, scoring, evaluation) on one intra-op thread, restored
    afterwards: training launches already run with ``OMP_NUM_THREADS=1``, and on the shared 2-core CPU two
    threads stalled (rejection sampling 35-42 s and the chat model's evaluation 50 s on two threads under
    load, against 10-16 s and 8-9 s on one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def round_of(context: dg.AssetExecutionContext) -> int:
    return round_number(context.partition_key.keys_by_dimension["training_round"])


def previous_chat_model(context: dg.AssetExecutionContext) -> ChatModel | None:
    """Round k-1's chat model of this snapshot (None in round 1); a ``dg.Failure`` naming it when missing."""
    prev = previous_round_partition(context.partition_key)
    if prev is None:
        return None
    return load_handle(ChatModel, context.instance, "chat_model", str(prev))


def starting_model(context: dg.AssetExecutionContext, base_model: HFCheckpoint) -> HFCheckpoint:
    """The model this round starts from: the base model in round 1, else round k-1's chat model."""
    return previous_chat_model(context) or base_model


def round_train_config(train: TrainConfig, init_from: HFCheckpoint, train_run_config=None) -> TrainConfig:
    """``train`` started from ``init_from``; unless the run config sets ``model.vocab_size``, the model's
    vocabulary and context follow the checkpoint it starts from (so the weights fit)."""
    cfg = train.replace(init_from=str(init_from.hf_dir))
    if vocab_unset(train_run_config):
        hf = json.loads((init_from.hf_dir / "config.json").read_text())
        cfg = cfg.replace_model(vocab_size=hf["vocab_size"], max_seq_len=hf["max_position_embeddings"])
    return cfg


def write_hf(src: Path, dst: Path, tokenizer_dir: Path) -> None:
    """An HF model directory with the tokenizer files of ``tokenizer_dir`` (chat template included), so
    ``transformers`` loads model and tokenizer from it."""
    copy_hf(src, dst, hf_tokenizer_files(tokenizer_dir))


def with_safety(
    mix: SafetyMixConfig, synthetic_data: SyntheticData, extra: list[dict], preference: bool, seq_len: int
) -> tuple[list[dict], dict[str, int]]:
    """``extra`` (the round's rejection records) plus the safety records that make ``mix.share`` of the
    stage's train set (synthetic train + extra + safety); items longer than ``seq_len`` tokens are left out.
    Returns the records and the safety counts (``safety.<kind>``, ``safety.dropped_too_long``, ...)."""
    base = synthetic_data.count("train", prefs=preference) + len(extra)
    tok = load_tokenizer(synthetic_data.path)
    records, counts = safety_records(
        mix, base, preference, lambda r: len(encode_chat_masked(r["messages"], tok).ids), seq_len
    )
    return [*extra, *records], {f"safety.{k}": v for k, v in sorted(counts.items())}


def records_digest(records: list[dict]) -> str:
    """A short hash of the records a stage adds to its data: part of its work dir's key, so changed safety
    data (a new answers file, another mix) starts a fresh run instead of resuming one trained on the old."""
    return hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()[:12]
