"""What every pre-training stage asset does around the engine: a work dir keyed by inputs and config (so a
crash resumes from its last checkpoint), the torchrun launch through Pipes, the launch log that counts
interruptions and lost time, the metrics curves into MLflow, and the held-out documents the evals score."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from dagster_project.artifacts import CuratedCorpus, DocShards, HFCheckpoint, Tokenizer, TokenShards
from dagster_project.configs import resolve_config
from dagster_project.home import lifecycle_home, partition_dirname
from dagster_project.partitions import SNAPSHOTS
from dagster_project.resources import TorchrunResource
from dagster_project.stage import StageRun, stage_asset
from ml.config import StageConfig
from ml.eval.model_evals import evaluate_model
from ml.eval.multiple_choice import MultipleChoiceConfig, build_items
from ml.eval.niah import NiahConfig, build_niah
from ml.io import atomic_write_text
from ml.tokens.shards import ShardConfig, val_mask, written_config
from ml.tokens.tokenizer import load_tokenizer
from ml.train.config import TrainConfig
from ml.train.engine import final_metrics
from ml.train.report import read_metrics

# A crashed training run (a killed rank, a lost node) fails the asset; Dagster re-launches it and the
# engine resumes from the newest intact checkpoint in the same work dir (Llama 3 paper §3.3.4).
TRAIN_RETRY = dg.RetryPolicy(max_retries=2, delay=1)


@dataclasses.dataclass
class StageTraining:
    """One finished engine run: its work dir, rank 0's final report and per-step metrics, interruptions."""

    work: Path
    final: dict
    metrics: list[dict]
    launches: dict


def training_asset(*gates: Callable) -> Callable[[Callable], dg.AssetsDefinition]:
    """``stage_asset`` for a stage that trains: an HF checkpoint per snapshot, gated by ``gates``, the crashed
    launch retried (``TRAIN_RETRY``)."""
    return stage_asset(
        HFCheckpoint,
        gates=list(gates),
        partitions_def=SNAPSHOTS,
        kinds={"pytorch"},
        retry_policy=TRAIN_RETRY,
    )


def vocab_unset(train_run_config) -> bool:
    """True unless the run config sets ``train.model.vocab_size`` (else the model follows the tokenizer)."""
    model = getattr(train_run_config, "model", None) if train_run_config is not None else None
    return getattr(model, "vocab_size", None) is None


def resolve_train_config(cls: type[StageConfig], config, token_shards: TokenShards) -> Any:
    """The stage's config from the run config; unless ``train.model.vocab_size`` is set there, the embedding
    follows the tokenizer the shards were made with."""
    cfg = resolve_config(cls, config)
    if vocab_unset(config.train):
        cfg = cfg.replace(train=cfg.train.replace_model(vocab_size=token_shards.vocab_size))
    return cfg


def stage_mix(
    run: StageRun,
    cfg: StageConfig,
    make_mix: Callable[..., dict],
    corpus: CuratedCorpus,
    tokenizer: Tokenizer,
    token_shards: TokenShards,
) -> tuple[Path, dict]:
    """The stage's re-weighted token shards at ``<work dir "mix">/shards`` (``make_mix`` of the curated
    documents, split as the main shards); returns that work dir and the mix's report."""
    mix_dir = work_dir(run, cfg, "mix")
    tok = load_tokenizer(tokenizer.path)
    mix = make_mix(corpus.read(), tok, mix_dir / "shards", shard_config(token_shards), cfg)
    return mix_dir, mix


def work_dir(run: StageRun, cfg: StageConfig, name: str = "") -> Path:
    """``data/_work/<asset>/<partition>/<key>``: the key hashes the inputs' md5s, the config and ``name``
    (a stage within the asset), so new data or a new config starts fresh and a re-launch resumes."""
    fingerprint = json.dumps([run.input_md5, cfg.to_dict(), name], sort_keys=True).encode()
    work = work_root(run) / hashlib.sha256(fingerprint).hexdigest()[:12]
    work.mkdir(parents=True, exist_ok=True)
    return work


def work_root(run: StageRun) -> Path:
    return lifecycle_home() / "data" / "_work" / run.asset / partition_dirname(run.partition)


def prune_work(run: StageRun, keep: list[Path]) -> None:
    """Finished: work dirs of other inputs/configs are not needed any more."""
    for stale in work_root(run).iterdir():
        if stale not in keep:
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()


def train_stage(
    context: dg.AssetExecutionContext,
    run: StageRun,
    torchrun: TorchrunResource,
    cfg: TrainConfig,
    data: Path,
    name: str = "",
) -> StageTraining:
    """Run (or resume, or find finished) ``cfg`` on the token shards at ``data``; log its curves as
    ``<name>/<metric>`` in MLflow."""
    work = work_dir(run, cfg, f"{name}@{data}")  # resumes only the same run on the same token shards
    atomic_write_text(work / "train_config.yaml", cfg.to_yaml())
    args = ["--config", str(work / "train_config.yaml"), "--data", str(data), "--out", str(work)]
    log = work / "launches.jsonl"
    start = time.time()
    _append(log, {"event": "start", "time": start, "run_id": context.run_id})
    try:
        torchrun.launch(context, args)
    except BaseException as exc:
        _append(log, {"event": "failed", "time": time.time(), "error": f"{type(exc).__name__}: {exc}"[:500]})
        raise
    _append(log, {"event": "done", "time": time.time()})
    metrics = read_metrics(work / "metrics.jsonl")
    prefix = f"{name}/" if name else ""
    run.log.log_metric_series(
        [(m["step"], {prefix + k: v for k, v in m.items() if k != "step"}) for m in metrics]
    )
    # the run's own train_result.json, not the Pipes report: a Pipes message can be lost (Dagster's file
    # reader raced a half-written line under load on one make run, leaving the figures empty)
    result = work / "train_result.json"
    if not result.exists():
        raise dg.Failure(
            description=f"{name or 'training'} finished without {result}: the run did not complete"
        )
    final = final_metrics(json.loads(result.read_text()))
    return StageTraining(work, final, metrics, interruptions(work))


def _append(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def interruptions(work: Path) -> dict[str, float]:
    """Launches of this work dir that did not finish (failed, or never recorded an end: the process was
    killed), the wall time they ran, the steps that had to be redone after resuming (logged twice), and the
    share of wall time that produced the final curve."""
    records = [json.loads(x) for x in (work / "launches.jsonl").read_text().splitlines() if x.strip()]
    starts = [i for i, r in enumerate(records) if r["event"] == "start"]
    spans = [records[i:j] for i, j in zip(starts, [*starts[1:], len(records)], strict=True)]
    lost, total, count = 0.0, 0.0, 0
    for n, span in enumerate(spans):
        ends = [r for r in span[1:] if r["event"] in ("done", "failed")]
        nxt = spans[n + 1][0]["time"] if n + 1 < len(spans) else span[0]["time"]
        end = ends[0]["time"] if ends else nxt  # killed: it ran at most until the next launch
        total += end - span[0]["time"]
        if not ends or ends[0]["event"] == "failed":
            count += 1
            lost += end - span[0]["time"]
    raw = [
        json.loads(x)["step"]
        for x in (work / "metrics.jsonl").read_text().splitlines()
        if x.strip().endswith("}")
    ]
    return {
        "interruptions": count,
        "lost_wall_s": round(lost, 3),
        "redone_steps": len(raw) - len(set(raw)),
        "effective_time_fraction": round(1.0 - lost / total, 4) if total > 0 else 1.0,
    }


def copy_hf(src: Path, dst: Path, tokenizer_files: list[Path]) -> None:
    """An HF model directory (weights + config) with the tokenizer's files, so ``from_pretrained`` works."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy2(src / name, dst / name)
    for f in tokenizer_files:
        shutil.copy2(f, dst / f.name)


def shard_config(shards: TokenShards) -> ShardConfig:
    """The split settings of the main token shards, for a stage's re-weighted shards (same validation docs)."""
    return written_config(shards.manifest["config"])


@dataclasses.dataclass
class EvalSuite:
    """Held-out documents (encoded as the shards hold them) and the MC / NIAH items built once from them,
    so every model a stage compares is scored on the same items."""

    docs: pd.DataFrame
    ids: list[np.ndarray]
    seq_len: int
    encode: Callable[[str], list[int]]
    mc_items: pd.DataFrame | None = None
    niah_items: pd.DataFrame | None = None
    group_by: tuple[str, ...] = ()

    @classmethod
    def build(
        cls,
        corpus: DocShards,
        shards: TokenShards,
        tokenizer: Tokenizer,
        max_doc_tokens: int,
        seq_len: int,
        *,
        niah: NiahConfig | None = None,
        mc: MultipleChoiceConfig | None = None,
        group_by: tuple[str, ...] = (),
    ) -> EvalSuite:
        docs = heldout_docs(corpus, shards)
        tok = load_tokenizer(tokenizer.path)

        def encode(text: str) -> list[int]:
            return tok.encode(text, add_special_tokens=False).ids

        return cls(
            docs=docs,
            ids=encode_docs(docs["text"].tolist(), tokenizer.path, shards, max_doc_tokens),
            seq_len=seq_len,
            encode=encode,
            mc_items=build_items(docs, mc) if mc is not None else None,
            niah_items=build_niah(docs["text"].tolist(), encode, niah) if niah is not None else None,
            group_by=group_by,
        )

    def evaluate(
        self, hf_dir: Path, *, niah: bool = True, niah_lengths: tuple[int, ...] | None = None, mc: bool = True
    ) -> dict:
        items = self.niah_items if niah else None
        if items is not None and niah_lengths is not None:
            items = items[items["length"].isin(niah_lengths)]
        return evaluate_model(
            hf_dir,
            docs=self.docs,
            doc_ids=self.ids,
            seq_len=self.seq_len,
            group_by=self.group_by,
            encode=self.encode,
            mc_items=self.mc_items if mc else None,
            niah_items=items,
        )


def heldout_docs(corpus: DocShards, shards: TokenShards) -> pd.DataFrame:
    """The curated documents of the token shards' validation split (one row per document id)."""
    df = corpus.read().drop_duplicates("id").reset_index(drop=True)
    return df[val_mask(df, shards.manifest["config"])].reset_index(drop=True)


def encode_docs(
    texts: list[str], tokenizer_dir: Path, shards: TokenShards, max_tokens: int
) -> list[np.ndarray]:
    """Each text as the shards hold it (``<|begin_of_text|> … <|end_of_text|>``), cut to ``max_tokens``."""
    tok = load_tokenizer(tokenizer_dir)
    bos, eos = shards.manifest.get("bos_id"), shards.manifest.get("eos_id")
    out = []
    for enc in tok.encode_batch(texts, add_special_tokens=False):
        ids = ([bos] if bos is not None else []) + enc.ids + ([eos] if eos is not None else [])
        out.append(np.array(ids[:max_tokens], dtype=np.int64))
    return out
