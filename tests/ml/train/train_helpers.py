"""Shared constants and helpers for the training-engine tests: configs, CLI commands, synthetic token shards."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from ml.io import sha256_file
from ml.tokens.shards import MANIFEST, ShardInfo, ShardManifest
from ml.train import report
from ml.train.config import TrainConfig
from ml.train.engine import train

REPO = Path(__file__).resolve().parents[3]

VOCAB = 256
BOS, EOS = 1, 2

# ~133K parameters (2 layers, dim 64), sequences of 64: every test run stays in seconds on one core.
TINY_OVERRIDES = dict(
    dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=192, vocab_size=VOCAB, max_seq_len=128
)
TINY_TRAIN = dict(
    model={"preset": "tiny", **TINY_OVERRIDES},
    optimizer=dict(lr=3e-3),
    schedule=dict(warmup_steps=5),
    data=dict(batch_size=8, seq_len=64),
    steps=50,
    eval_every=25,
    eval_batches=2,
    ckpt_every=0,
    keep_last=2,
    seed=1234,
    deterministic=True,
    precision="fp32",
    device="cpu",
)


def tiny_config(**over) -> dict:
    """TINY_TRAIN with ``over`` layered on top (nested configs merged key by key), as a raw config dict."""
    return TrainConfig.layer(TINY_TRAIN, over)


def train_in_process(run: dict, data: Path, out: Path) -> dict[int, dict]:
    """Train config dict ``run`` on ``data`` into ``out`` in this process (one thread); metrics by step."""
    torch.set_num_threads(1)
    metrics: dict[int, dict] = {}
    train(TrainConfig.from_dict(run), data, out, on_metrics=lambda s, m: metrics.update({s: m}))
    return metrics


def write_config(run: dict, path: Path) -> Path:
    """``run`` as a TrainConfig YAML file at ``path``."""
    path.write_text(TrainConfig.from_dict(run).to_yaml())
    return path


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a child Python that imports ``ml`` from this checkout on one thread."""
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **extra}


def train_cli(cfg_path: Path, data: Path, out: Path, metrics: Path) -> list[str]:
    """Arguments after the interpreter that run ``ml.train.run`` with a metrics JSONL sink."""
    return [
        "-m", "ml.train.run",
        "--config", str(cfg_path),
        "--data", str(data),
        "--out", str(out),
        "--metrics-jsonl", str(metrics),
    ]  # fmt: skip


def torchrun(args: list[str], timeout: int, nproc: int = 2, **kwargs) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node nproc *args`` on one thread per rank; output captured."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            str(nproc),
            *args,
        ],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def read_metrics(path: Path) -> dict[int, dict]:
    """A metrics JSONL file by step (a later line for a step wins, as after a resume)."""
    return {r["step"]: r for r in report.read_metrics(path)}


def copy_checkpoint(src_out: Path, step: int, dst_out: Path) -> Path:
    """Checkpoint ``step`` of the run in ``src_out`` as the only checkpoint of a new run in ``dst_out``."""
    name = f"step-{step:08d}"
    return Path(shutil.copytree(src_out / "checkpoints" / name, dst_out / "checkpoints" / name))


def reseal_manifest(path: Path) -> None:
    """Rewrite checkpoint ``path``'s manifest to match its files as they are now: what an attacker who
    controls the whole folder does, so that the sha256 check passes and the loader's own checks are tested."""
    manifest_path = path / "checkpoint.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"] = {
        str(f.relative_to(path)): {"bytes": f.stat().st_size, "sha256": sha256_file(f)}
        for f in sorted(path.rglob("*"))
        if f.is_file() and f != manifest_path
    }
    manifest_path.write_text(json.dumps(manifest))


def synthetic_docs(n_docs: int, seed: int) -> list[np.ndarray]:
    """Documents ``BOS body EOS`` whose bodies follow a sparse Markov chain (4 likely successors per token)."""
    rng = np.random.default_rng(seed)
    chain = np.random.default_rng(0).integers(3, VOCAB, size=(VOCAB, 4))  # same chain for every split
    docs = []
    for _ in range(n_docs):
        n = int(rng.integers(16, 160))
        body = np.empty(n, dtype=np.int64)
        body[0] = rng.integers(3, VOCAB)
        for i in range(1, n):
            body[i] = chain[body[i - 1], rng.integers(0, 4)]
        docs.append(np.concatenate([[BOS], body, [EOS]]).astype(np.uint32))
    return docs


def write_synthetic_shards(
    directory: Path, n_train_docs: int = 600, n_val_docs: int = 40, seed: int = 0
) -> Path:
    """A token-shard directory in ml/tokens/shards.py's format (two train shards, one val shard)."""
    directory.mkdir(parents=True, exist_ok=True)
    splits_docs = {"train": synthetic_docs(n_train_docs, seed), "val": synthetic_docs(n_val_docs, seed + 1)}
    shards: dict[str, list[ShardInfo]] = {}
    splits: dict[str, dict[str, int]] = {}
    for split, docs in splits_docs.items():
        parts = [docs[: len(docs) // 2], docs[len(docs) // 2 :]] if split == "train" else [docs]
        infos = []
        for k, part in enumerate(parts):
            name = f"{split}-{k:05d}"
            tokens = np.concatenate(part).astype("<u4")
            starts = np.concatenate([[0], np.cumsum([len(d) for d in part[:-1]])]).astype("<i8")
            tokens.tofile(directory / f"{name}.bin")
            np.save(directory / f"{name}.idx.npy", starts, allow_pickle=False)
            infos.append(
                ShardInfo(
                    file=f"{name}.bin",
                    index_file=f"{name}.idx.npy",
                    tokens=len(tokens),
                    docs=len(part),
                    sha256=sha256_file(directory / f"{name}.bin"),
                    index_sha256=sha256_file(directory / f"{name}.idx.npy"),
                )
            )
        shards[split] = infos
        n_tok = int(sum(len(d) for d in docs))
        splits[split] = {"docs": len(docs), "unique_docs": len(docs), "tokens": n_tok}
    manifest = ShardManifest(
        directory=directory,
        vocab_size=VOCAB,
        dtype="uint32",
        bos_id=BOS,
        eos_id=EOS,
        tokenizer_sha256="synthetic",
        shards=shards,
        splits=splits,
        tokens_per_source={},
        tokens_per_class={},
        tokens_per_lang={},
        mix={},
        class_col="domain",
        config={},
    )
    (directory / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=2))
    return directory
