"""Safety tuning data (Llama 3 paper §5.4.3-5.4.4): SFT chats and preference pairs that teach a model to
refuse adversarial prompts and to answer borderline ones helpfully, mixed into a post-training round.

Built from the *train* split of the shipped safety data only (``ml/resources/safety``); the held-out split,
on which ``safety_evals`` measures VR and FRR, is never trained on.

* adversarial prompt -> a refusal in the prompt's language (the refusal detector's train responses,
  ``responses.train.jsonl``, one picked by a hash of the prompt id);
* borderline prompt -> the hand-written helpful answer of its seed in its language
  (``source/answers.yaml``; every borderline train seed has one, a test holds the file to that).

Preference pairs: for a borderline prompt the answer is chosen over a refusal (the paper's over-refusal
pairs); for an adversarial prompt the refusal is chosen over a compliance *opener* of the language
(``COMPLY``): the data holds requests only and never a harmful answer, so the rejected side is the
start of compliance, not its content.

The share of safety records in a stage's train set is config (``SafetyMixConfig.share``, the paper does
not publish its mix): ``n = round(share / (1 - share) * base)`` records for ``base`` other train records,
``round(n * borderline_share)`` of them borderline and the rest adversarial, each kind drawn by a seeded
shuffle of its eligible items, cycling when the draw exceeds them. Items longer than the
stage's context are dropped and counted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import yaml

from ml.config import ConfigError, StageConfig
from ml.safety.data import DATA_DIR, VARIANTS, SafetyDataConfig, data_files, load_responses, load_split

ANSWERS = DATA_DIR / "source" / "answers.yaml"
COMPLY = {  # the rejected side of an adversarial pair: the opening of compliance, never its content
    "en": "Sure, here is exactly how to do that, step by step:",
    "de": "Klar, so geht das Schritt für Schritt:",
    "fr": "Bien sûr, voici exactement comment faire, étape par étape :",
    "es": "Claro, así es exactamente como se hace, paso a paso:",
}


@dataclasses.dataclass(frozen=True)
class SafetyMixConfig(StageConfig):
    """share: fraction of a stage's train records that are safety records (0 turns tuning off);
    borderline_share: fraction of those that are borderline (answer) rather than adversarial (refuse)
    records, the paper's lever between violations and false refusals (§5.4.3; the shipped train split
    holds 2 adversarial per borderline prompt, so 0.5 up-samples borderline); data: which part of the
    shipped train split is eligible; seed: the draw."""

    share: float = 0.1
    borderline_share: float = 0.5
    data: SafetyDataConfig = SafetyDataConfig()
    seed: int = 0

    # tiny: the post-training chats are packed to 384 tokens, so the ~1K-token long-context items cannot
    # fit; every other variant is used
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(share=0.2, data=dict(variants=tuple(v for v in VARIANTS if v != "long_context"))),
        **{p: dict() for p in ("small", "8b", "70b", "405b")},
    }

    def __post_init__(self) -> None:
        if not 0.0 <= self.share < 1.0:
            raise ConfigError(f"SafetyMixConfig.share must be in [0, 1), got {self.share}")
        if not 0.0 <= self.borderline_share <= 1.0:
            raise ConfigError(
                f"SafetyMixConfig.borderline_share must be in [0, 1], got {self.borderline_share}"
            )


class SafetyTuningError(ValueError):
    """The safety tuning data is incomplete; the message names the file and the item."""


def load_answers(path: Path = ANSWERS) -> dict[str, dict[str, str]]:
    """seed id -> {lang: helpful answer}."""
    answers = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(answers, dict):
        raise SafetyTuningError(f"{path}: expected a mapping of seed id to {{lang: answer}}")
    for seed, by_lang in answers.items():
        if not isinstance(by_lang, dict) or not all(
            isinstance(v, str) and v.strip() for v in by_lang.values()
        ):
            raise SafetyTuningError(f"{path}: seed {seed!r} must map languages to non-empty answers")
    return answers


def _pick(options: list[str], key: str) -> str:
    return options[int(hashlib.blake2b(key.encode(), digest_size=8).hexdigest(), 16) % len(options)]


def targets(prompts: pd.DataFrame, responses: pd.DataFrame, answers: dict) -> pd.DataFrame:
    """``prompts`` with ``good`` (what the model should say) and ``bad`` (what it should not)."""
    refusals = responses[responses["label"] == "refusal"].groupby("lang")["response"].apply(list)
    pairs = []
    for r in prompts.itertuples(index=False):
        where = f"{r.file}:{r.line} ({r.id})"
        if r.lang not in refusals or r.lang not in COMPLY:
            raise SafetyTuningError(f"{where}: no refusal responses or compliance opener for {r.lang!r}")
        refusal = _pick(refusals[r.lang], r.id)
        if r.kind == "adversarial":
            pairs.append((refusal, COMPLY[r.lang]))
            continue
        answer = answers.get(r.seed, {}).get(r.lang)
        if answer is None:
            raise SafetyTuningError(
                f"{where}: borderline seed {r.seed!r} has no {r.lang!r} answer in {ANSWERS.name}"
            )
        pairs.append((answer, refusal))
    return prompts.assign(good=[g for g, _ in pairs], bad=[b for _, b in pairs])


def eligible(cfg: SafetyMixConfig, root: Path = DATA_DIR) -> pd.DataFrame:
    """Every train-split prompt the config allows, with its targets (``targets``)."""
    prompts = load_split(cfg.data, "train", root)
    responses = load_responses(data_files(cfg.data, "responses", "train", root))
    return targets(prompts, responses, load_answers(root / "source" / "answers.yaml"))


def count_for(cfg: SafetyMixConfig, base: int) -> int:
    """Safety records to add to ``base`` other train records so they are ``share`` of the whole."""
    return round(cfg.share / (1.0 - cfg.share) * base)


def _draw(items: pd.DataFrame, n: int, seed: int) -> list[tuple[int, Any]]:
    """n (repeat, item) pairs: a seeded shuffle of the items, cycled (a new shuffle each pass)."""
    rows, rep = [], 0
    while len(rows) < n and len(items):
        order = list(range(len(items)))
        random.Random(f"{seed}:{rep}").shuffle(order)
        rows += [(rep, items.iloc[i]) for i in order[: n - len(rows)]]
        rep += 1
    return rows


def _longest(item: pd.Series) -> pd.Series:
    """The item with its longer response as ``good``: the length a pair's longer side packs to."""
    return item.copy().replace({"good": max(item["good"], item["bad"], key=len)})


def _record(rep: int, item: Any, preference: bool) -> dict[str, Any]:
    rid = f"safety-{item['id']}" + (f"-r{rep}" if rep else "")
    prompt = [dict(m) for m in item["messages"]]
    meta = {"family": "safety", "kind": item["kind"], "category": item["category"], "lang": item["lang"]}
    if preference:
        return {"id": rid, **meta, "prompt": prompt, "chosen": item["good"], "rejected": item["bad"]}
    return {"id": rid, **meta, "messages": [*prompt, {"role": "assistant", "content": item["good"]}]}


def safety_records(
    cfg: SafetyMixConfig,
    base: int,
    preference: bool,
    length: Callable[[dict[str, Any]], int] | None = None,
    max_tokens: int = 0,
    root: Path = DATA_DIR,
) -> tuple[list[dict[str, Any]], Counter]:
    """(records, counts): ``count_for(cfg, base)`` SFT chats (or preference pairs) drawn from the eligible
    items; with ``length`` (tokens of an SFT record) and ``max_tokens``, longer items are left out first."""
    n = count_for(cfg, base)
    counts: Counter = Counter(requested=n)
    if n == 0:
        return [], counts
    items = eligible(cfg, root)
    if length is not None and max_tokens:
        fits = [length(_record(0, _longest(it), False)) <= max_tokens for _, it in items.iterrows()]
        counts["dropped_too_long"] = len(items) - sum(fits)
        items = items[fits].reset_index(drop=True)
    counts["eligible"] = len(items)
    n_border = round(n * cfg.borderline_share)
    drawn = [
        *_draw(items[items["kind"] == "borderline"].reset_index(drop=True), n_border, cfg.seed),
        *_draw(items[items["kind"] == "adversarial"].reset_index(drop=True), n - n_border, cfg.seed),
    ]
    records = [_record(rep, item, preference) for rep, item in drawn]
    counts.update(f"{r['kind']}" for r in records)
    counts["records"] = len(records)
    return records, counts
