"""Shared by the post-training task tests: a byte-tokenizer data directory, a tiny model saved in HF format."""

from __future__ import annotations

from pathlib import Path

import torch

from ml.model.hf import save_hf
from ml.model.llama import Llama
from ml.posttrain.records import write_jsonl
from ml.tokens.tokenizer import byte_tokenizer
from ml.train.config import TrainConfig
from ml.train.dist import DistInfo

# byte tokenizer with 16 specials: id = byte; BOS 256, PAD 260, START 262, END 263, EOM 264, EOT 265, PY 266
VOCAB = 272
BOS, PAD, START, END, EOT = 256, 260, 262, 263, 265
ONE = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))

MODEL = dict(
    preset="tiny", dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, vocab_size=VOCAB, max_seq_len=128
)


def config(**over) -> TrainConfig:
    base = dict(
        model=MODEL,
        optimizer=dict(lr=3e-3),
        schedule=dict(warmup_steps=2),
        data=dict(batch_size=2, seq_len=96),
        steps=4,
        eval_every=0,
        eval_batches=2,
        ckpt_every=0,
        seed=3,
        device="cpu",
    )
    return TrainConfig.from_dict(TrainConfig.layer(base, over))


def b(s: str) -> list[int]:
    return list(s.encode())


def preference_records(n: int, prefix: str = "p") -> list[dict]:
    """Prompts "what is i+j?", chosen the right sum, rejected a wrong one, every third edited."""
    out = []
    for k in range(n):
        i, j = k % 7, k // 7 + 1
        rec = {
            "id": f"{prefix}{k}",
            "prompt": [{"role": "user", "content": f"{i}+{j}?"}],
            "chosen": f"It is {i + j}.",
            "rejected": f"No idea, {i * j + 3}",
        }
        if k % 3 == 0:
            rec["edited"] = f"{i}+{j} = {i + j}."
        out.append(rec)
    return out


def sft_records(n: int, prefix: str = "s") -> list[dict]:
    return [
        {
            "id": f"{prefix}{k}",
            "messages": [
                {"role": "system", "content": "Add."},
                {"role": "user", "content": f"{k}+1"},
                {"role": "assistant", "content": f"{k + 1}"},
            ],
        }
        for k in range(n)
    ]


def write_data(directory: Path, train: list[dict], val: list[dict]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    byte_tokenizer(16).save(str(directory / "tokenizer.json"))
    write_jsonl(train, directory / "train.jsonl")
    write_jsonl(val, directory / "val.jsonl")
    return directory


def tiny_hf_model(directory: Path, seed: int = 0) -> tuple[Llama, Path]:
    cfg = config().model
    torch.manual_seed(seed)
    model = Llama.from_config(cfg)
    return model, save_hf(model, directory)
