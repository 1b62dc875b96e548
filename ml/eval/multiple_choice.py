"""A multiple-choice evaluation built from held-out documents: which paragraph really comes next?

Each item takes one paragraph boundary of a held-out document: the context is the text before it (its last
``max_context_chars``), the answer is the paragraph after it, and the distractors are paragraphs drawn from
*other* documents of the same language and class, so surface cues (language, domain, formatting) do not
give the answer away. Everything is ordered by stable hashes of (seed, ids), so the same documents and
config give the same items on any machine; ``items_version`` is the md5 of the items' canonical JSON.

Scoring is model-agnostic: ``score_items`` takes ``logprob(context, continuation) -> (sum_logprob,
n_chars)`` and reports accuracy by length-normalized log-likelihood (the lm-eval "acc_norm" rule) and the
normalized NLL of the correct answer (nats per character), the x axis of the Llama 3 paper's two-stage
downstream forecast (§3.2.1).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ml.config import ConfigError, StageConfig
from ml.tokens.shards import split_keys

_SPLITS = {"paragraph": re.compile(r"\n\s*\n"), "line": re.compile(r"\n")}


@dataclasses.dataclass(frozen=True)
class MultipleChoiceConfig(StageConfig):
    """How items are cut from held-out documents."""

    n_items: int = 600  # chosen: >= 500 so accuracy's standard error is <= 2.2 points
    n_choices: int = 4  # answer + 3 distractors (chance 25%)
    max_context_chars: int = 400  # the end of the text before the boundary
    max_choice_chars: int = 160  # the start of each candidate paragraph
    min_paragraph_chars: int = 40  # shorter paragraphs (headings, blank-ish lines) are not boundaries
    max_items_per_doc: int = 3
    # what a "paragraph" is: text between blank lines, or one line (corpora whose documents are mostly one
    # blank-line block, such as unwrapped man pages and licences, have few paragraph boundaries)
    unit: str = "paragraph"
    group_by: tuple[str, ...] = ("lang", "domain")  # distractors share these columns with the answer
    seed: int = 0

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # chosen: the tiny corpus holds out ~50 documents, mostly one blank-line block each: lines as units,
        # up to 20 boundaries per document, so >= 500 items come from held-out text; context and choice short
        # enough to fit the tiny sweep's 64-token sequences together
        "tiny": dict(
            unit="line",
            max_items_per_doc=20,
            min_paragraph_chars=30,
            max_context_chars=160,
            max_choice_chars=80,
        ),
        "small": dict(n_items=2000, max_context_chars=1500, max_choice_chars=400),
        "8b": dict(n_items=5000, max_context_chars=4000, max_choice_chars=600),
        "70b": dict(n_items=5000, max_context_chars=4000, max_choice_chars=600),
        "405b": dict(n_items=5000, max_context_chars=4000, max_choice_chars=600),
    }

    def __post_init__(self) -> None:
        for name in ("n_items", "max_context_chars", "max_choice_chars", "max_items_per_doc"):
            if getattr(self, name) < 1:
                raise ConfigError(f"MultipleChoiceConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.unit not in _SPLITS:
            raise ConfigError(f"MultipleChoiceConfig.unit must be {' | '.join(_SPLITS)}, got {self.unit!r}")
        if self.n_choices < 2:
            raise ConfigError(f"MultipleChoiceConfig.n_choices must be >= 2, got {self.n_choices}")


def _key(*parts: Any) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "big")


def _paragraphs(text: str, cfg: MultipleChoiceConfig) -> list[str]:
    return [p.strip() for p in _SPLITS[cfg.unit].split(text) if len(p.strip()) >= cfg.min_paragraph_chars]


def _boundaries(doc_id: str, paras: list[str], cfg: MultipleChoiceConfig) -> list[int]:
    """Indices i >= 1 of paragraphs that become answers (context = paragraphs before i), hash-ordered."""
    order = sorted(range(1, len(paras)), key=lambda i: _key(cfg.seed, doc_id, i))
    return sorted(order[: cfg.max_items_per_doc])


def _pool(df: pd.DataFrame, cfg: MultipleChoiceConfig) -> dict[tuple, list[tuple[str, str]]]:
    """Candidate distractor paragraphs per group: (document key, paragraph) pairs."""
    pool: dict[tuple, list[tuple[str, str]]] = {}
    for row in df.itertuples(index=False):
        group = tuple(getattr(row, c) for c in cfg.group_by)
        for para in _paragraphs(row.text, cfg):
            pool.setdefault(group, []).append((row.doc_key, para[: cfg.max_choice_chars]))
    return pool


def _distractors(pool: list[tuple[str, str]], doc_id: str, answer: str, k: int, seed_key: tuple) -> list[str]:
    """``k`` paragraphs of other documents, none equal to the answer, chosen by hash order."""
    picked: list[str] = []
    for other_id, para in sorted(pool, key=lambda dp: _key(*seed_key, dp[0], dp[1])):
        if other_id != doc_id and para != answer and para not in picked:
            picked.append(para)
            if len(picked) == k:
                return picked
    return picked


def _doc_items(row, pool, cfg: MultipleChoiceConfig) -> Iterable[dict[str, Any]]:
    paras = _paragraphs(row.text, cfg)
    group = tuple(getattr(row, c) for c in cfg.group_by)
    key = row.doc_key
    for i in _boundaries(key, paras, cfg):
        answer = paras[i][: cfg.max_choice_chars]
        sep = "\n\n" if cfg.unit == "paragraph" else "\n"
        context = sep.join(paras[:i])[-cfg.max_context_chars :] + sep
        others = _distractors(pool.get(group, []), key, answer, cfg.n_choices - 1, (cfg.seed, key, i))
        if len(others) < cfg.n_choices - 1:
            continue  # too few documents in this language and class to draw distractors from
        choices = sorted([answer, *others], key=lambda c: _key(cfg.seed, key, i, c))
        yield {
            "item_id": f"{key}#{i}",
            "doc_id": str(row.id),
            **{c: getattr(row, c) for c in cfg.group_by},
            "context": context,
            "choices": choices,
            "label": choices.index(answer),
        }


def build_items(docs: pd.DataFrame, cfg: MultipleChoiceConfig) -> pd.DataFrame:
    """Items from ``docs`` (columns ``id``, ``text`` and ``cfg.group_by``), at most ``cfg.n_items``.

    Every choice (order, answer paragraphs, distractors, choice order) hashes the document's text key
    (``ml.tokens.shards.split_keys``), not its id, so a re-crawl of the same pages gives the same items;
    ``doc_id`` keeps the id for provenance."""
    missing = {"id", "text", *cfg.group_by} - set(docs.columns)
    if missing:
        raise ValueError(f"build_items: documents lack column(s) {sorted(missing)}")
    docs = docs.assign(doc_key=split_keys(docs, "text")).sort_values(["doc_key", "id"], kind="stable")
    pool = _pool(docs, cfg)
    order = sorted(docs.itertuples(index=False), key=lambda r: _key(cfg.seed, r.doc_key))
    items: list[dict[str, Any]] = []
    for row in order:
        items.extend(_doc_items(row, pool, cfg))
        if len(items) >= cfg.n_items:
            break
    return pd.DataFrame(items[: cfg.n_items])


def items_version(items: pd.DataFrame) -> str:
    payload = json.dumps(items.to_dict(orient="records"), sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.md5(payload.encode()).hexdigest()


LogProb = Callable[[str, str], tuple[float, int]]  # (context, continuation) -> (sum log p, characters)
# (context, continuations) -> (sum log p, characters) of each: one call per item, so a model can batch them
ChoicesLogProb = Callable[[str, list[str]], list[tuple[float, int]]]


def score_items(items: pd.DataFrame, logprob: LogProb) -> dict[str, float]:
    """Accuracy (argmax of log-likelihood per character) and the correct answer's NLL per character."""
    return score_items_batched(items, lambda context, choices: [logprob(context, c) for c in choices])


def score_items_batched(items: pd.DataFrame, logprobs: ChoicesLogProb) -> dict[str, float]:
    """:func:`score_items` with every choice of an item scored in one call."""
    correct, nll = [], []
    for item in items.itertuples(index=False):
        scores = logprobs(item.context, list(item.choices))
        per_char = [lp / max(n, 1) for lp, n in scores]
        correct.append(int(np.argmax(per_char)) == int(item.label))
        nll.append(-per_char[int(item.label)])
    n_choices = float(np.mean([len(c) for c in items["choices"]])) if len(items) else float("nan")
    return {
        "accuracy": float(np.mean(correct)) if correct else float("nan"),
        "normalized_nll": float(np.mean(nll)) if nll else float("nan"),
        "items": float(len(items)),
        "chance": 1.0 / n_choices if len(items) else float("nan"),
    }
