"""The FP8 model stage: quantize a checkpoint (``ml.infer.fp8``), save and load it, and measure its quality
against the bf16 model (Llama 3 paper §6.2).

The paper checks FP8 with the reward-model score distribution of 100K responses. No reward model exists
in this project yet, so the score here is each held-out document's log-likelihood per token under the
model (``ml.eval.val_loglik``), which is what a reward model's score would be replaced by for a base
model: the gate bounds the perplexity increase and the distance between the two score distributions
(Kolmogorov–Smirnov statistic), plus the mean per-document change.

Saved layout (``fp8/``): ``model.safetensors`` (FFN weights of the converted layers in e4m3 with fp32 row
scales, every other tensor in bf16), ``config.json`` (HF Llama keys) and ``fp8_config.json``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_model, save_model
from scipy.stats import ks_2samp

from ml.config import ConfigError, StageConfig
from ml.eval.val_loglik import doc_logliks, perplexity
from ml.infer.fp8 import FP8Config, fp8_summary, quantize_model
from ml.model.hf import CONFIG_FILE, config_from_hf, hf_config_dict
from ml.model.llama import Llama

FP8_CONFIG_FILE = "fp8_config.json"
WEIGHTS_FILE = "model.safetensors"


@dataclasses.dataclass(frozen=True)
class FP8ModelConfig(StageConfig):
    """The quantization recipe, the evaluation budget and the quality bounds of the FP8 model."""

    fp8: FP8Config = dataclasses.field(default_factory=FP8Config)
    eval_docs: int = 256  # validation documents scored (spread over the split); 0 = all
    eval_tokens_per_doc: int = 1024  # first N tokens of each (capped by the model's context)
    batch_size: int = 8
    # Measured first on tiny (a 1.8M model, 2 of 4 FFNs in FP8): perplexity +0.2%, KS 0.02. The paper gives
    # no number, only that FP8 "has negligible impact" on the score distribution; the bounds are "chosen".
    max_ppl_increase: float = 0.02  # chosen: relative, (ppl_fp8 / ppl_bf16 - 1)
    max_score_ks: float = 0.10  # chosen: KS distance of the per-document nats/token distributions

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(eval_docs=64, eval_tokens_per_doc=256),  # chosen: seconds on CPU
        "small": dict(eval_docs=512, eval_tokens_per_doc=2048),
        "8b": dict(eval_docs=2048, eval_tokens_per_doc=4096),
        "70b": dict(eval_docs=2048, eval_tokens_per_doc=4096),
        "405b": dict(eval_docs=2048, eval_tokens_per_doc=4096),
    }

    def __post_init__(self) -> None:
        if self.eval_docs < 0 or self.eval_tokens_per_doc < 2 or self.batch_size <= 0:
            raise ConfigError(
                "FP8ModelConfig: eval_docs >= 0, eval_tokens_per_doc >= 2 and batch_size > 0 required, got "
                f"{self.eval_docs}, {self.eval_tokens_per_doc}, {self.batch_size}"
            )
        if self.max_ppl_increase < 0 or not 0 <= self.max_score_ks <= 1:
            raise ConfigError(
                f"FP8ModelConfig: max_ppl_increase >= 0 and max_score_ks in [0, 1], got "
                f"{self.max_ppl_increase}, {self.max_score_ks}"
            )
        if self.eval_docs and self.eval_docs * self.max_score_ks < 2:
            # the KS distance of two N-document samples moves in steps of 1/N: one document changing rank
            # must not by itself exceed the bound
            raise ConfigError(
                f"FP8ModelConfig.eval_docs={self.eval_docs}: the KS bound {self.max_score_ks} needs at least "
                f"{math.ceil(2 / self.max_score_ks)} documents (KS moves in steps of 1/eval_docs)"
            )


def quantized_copy(model: Llama, cfg: FP8Config) -> Llama:
    """A bf16 copy of ``model`` with the FFNs of the middle layers in FP8 (the original is untouched)."""
    return quantize_model(copy.deepcopy(model).to(torch.bfloat16), cfg).eval()


def save_fp8(model: Llama, cfg: FP8Config, directory: Path) -> Path:
    """``model.safetensors`` + ``config.json`` + ``fp8_config.json`` (with the converted layers)."""
    directory.mkdir(parents=True, exist_ok=True)
    save_model(model, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    (directory / CONFIG_FILE).write_text(
        json.dumps(hf_config_dict(model.cfg, torch.bfloat16), indent=2) + "\n"
    )
    record = {**cfg.to_dict(), **{k: v for k, v in fp8_summary(model).items() if k != "fp8_modules"}}
    (directory / FP8_CONFIG_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return directory


def read_fp8_config(directory: Path) -> tuple[FP8Config, dict[str, Any]]:
    """The recipe saved by :func:`save_fp8` and the whole record (with the converted layers)."""
    record = json.loads((directory / FP8_CONFIG_FILE).read_text())
    # checkpoints written before fast accumulation was a setting ran _scaled_mm with exact accumulation
    record.setdefault("fast_accum", False)
    return FP8Config.from_dict({f.name: record[f.name] for f in dataclasses.fields(FP8Config)}), record


def load_fp8(directory: Path) -> Llama:
    """The model written by :func:`save_fp8`; every tensor is checked against the converted structure."""
    cfg = config_from_hf(
        json.loads((directory / CONFIG_FILE).read_text()), where=str(directory / CONFIG_FILE)
    )
    fp8, _ = read_fp8_config(directory)
    model = quantize_model(Llama.from_config(cfg).to(torch.bfloat16), fp8)
    load_model(model, str(directory / WEIGHTS_FILE), strict=True)
    return model.eval()


def compare_quality(reference: pd.DataFrame, fp8: pd.DataFrame) -> dict[str, float]:
    """Perplexities, their relative increase, the KS statistic of per-document nats/token and the mean
    and largest per-document change (fp8 - reference, nats/token)."""
    delta = fp8["nats_per_token"].to_numpy() - reference["nats_per_token"].to_numpy()
    ppl_ref, ppl_fp8 = perplexity(reference), perplexity(fp8)
    return {
        "docs": float(len(reference)),
        "tokens": float(reference["tokens"].sum()),
        "ppl_bf16": ppl_ref,
        "ppl_fp8": ppl_fp8,
        "ppl_increase": ppl_fp8 / ppl_ref - 1.0,
        "score_ks": float(ks_2samp(reference["nats_per_token"], fp8["nats_per_token"]).statistic),
        "score_mean_delta": float(delta.mean()),
        "score_max_abs_delta": float(np.abs(delta).max()),
    }


def evaluate_fp8(
    reference: Llama, fp8: Llama, docs: list[np.ndarray], batch_size: int
) -> tuple[dict[str, float], pd.DataFrame]:
    """Quality numbers and the per-document table (``nats_bf16``, ``nats_fp8``) of both models on ``docs``."""
    ref = doc_logliks(reference.to(torch.bfloat16).eval(), docs, batch_size)
    got = doc_logliks(fp8, docs, batch_size)
    table = ref[["doc", "tokens"]].assign(nats_bf16=ref["nats_per_token"], nats_fp8=got["nats_per_token"])
    return compare_quality(ref, got), table
