"""Needle in a haystack (Llama 3 paper §3.4.2: long-context stages advance once the model solves it).

An item hides one needle, ``The secret number for <key> is <value>.``, at a relative ``depth`` of a
haystack of held-out text cut to a target ``length`` in tokens, and ends with the question
``The secret number for <key> is``. The key is a random pronounceable word and the value a random
``value_digits``-digit number, both drawn per item from a seeded generator, so the answer is never in the
haystack itself and no two items share a needle.

Scoring asks the model which of ``n_choices`` candidate values (the true one and random distractors of
the same number of digits) continues the question: the candidate with the highest summed log-probability
is the model's answer (chance ``1 / n_choices``). Accuracy is reported per (length, depth) cell: the heat
map of the paper's NIAH figures.

Items are token-id lists (built with the run's tokenizer), so the same items score any model of that
vocabulary; a length counts every token the model sees: haystack, needle, question and the longest answer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ml.config import ConfigError, StageConfig
from ml.plots import agg_subplots, figure_png

NEEDLE = "The secret number for {key} is {value}."
QUESTION = "The secret number for {key} is"
_CONSONANTS, _VOWELS = "bdfgklmnprstvz", "aeiou"


@dataclasses.dataclass(frozen=True)
class NiahConfig(StageConfig):
    """Which cells to build and how many items per cell."""

    lengths: tuple[int, ...] = (256,)  # context lengths in tokens (a long-context stage tests its own)
    depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)  # chosen: the usual 5 depths of NIAH plots
    items_per_cell: int = 8  # chosen: 8 x 5 depths = 40 items per length, a few seconds on the tiny CPU model
    n_choices: int = 4  # the true value + 3 random distractors (chance 25%)
    value_kind: str = "word"  # word (a made-up word, as rare in the haystack as the key) | number
    value_syllables: int = 3
    value_digits: int = 4
    key_syllables: int = 3  # keys like "kovari": 3 consonant-vowel syllables
    seed: int = 0

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {},
        "small": dict(lengths=(2048,), items_per_cell=20),
        "8b": dict(lengths=(131072,), items_per_cell=20, depths=tuple(i / 10 for i in range(11))),
        "70b": dict(lengths=(131072,), items_per_cell=20, depths=tuple(i / 10 for i in range(11))),
        "405b": dict(lengths=(131072,), items_per_cell=20, depths=tuple(i / 10 for i in range(11))),
    }

    def __post_init__(self) -> None:
        if self.value_kind not in ("word", "number"):
            raise ConfigError(f"NiahConfig.value_kind must be word | number, got {self.value_kind!r}")
        for name in ("items_per_cell", "value_digits", "value_syllables", "key_syllables"):
            if getattr(self, name) < 1:
                raise ConfigError(f"NiahConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_choices < 2:
            raise ConfigError(f"NiahConfig.n_choices must be >= 2, got {self.n_choices}")
        if not self.lengths or any(n < 16 for n in self.lengths):
            raise ConfigError(f"NiahConfig.lengths must be >= 16 tokens each, got {self.lengths}")
        if any(not 0.0 <= d <= 1.0 for d in self.depths) or not self.depths:
            raise ConfigError(f"NiahConfig.depths must lie in [0, 1], got {self.depths}")


Encode = Callable[[str], list[int]]


def _key(rng: np.random.Generator, syllables: int) -> str:
    return "".join(rng.choice(list(_CONSONANTS)) + rng.choice(list(_VOWELS)) for _ in range(syllables))


def _values(rng: np.random.Generator, cfg: NiahConfig) -> list[str]:
    """``cfg.n_choices`` distinct values: made-up words of ``value_syllables`` or numbers of ``value_digits``."""
    values: list[str] = []
    while len(values) < cfg.n_choices:
        if cfg.value_kind == "word":
            v = _key(rng, cfg.value_syllables)
        else:
            v = str(int(rng.integers(10 ** (cfg.value_digits - 1), 10**cfg.value_digits)))
        if v not in values:
            values.append(v)
    return values


def _item(hay: np.ndarray, rng: np.random.Generator, encode: Encode, length: int, depth: float, cfg) -> dict:
    """One item: haystack cut so that haystack + needle + question + the longest answer is ``length`` tokens."""
    key = _key(rng, cfg.key_syllables)
    values = _values(rng, cfg)
    needle = encode(" " + NEEDLE.format(key=key, value=values[0]) + " ")
    question = encode("\n" + QUESTION.format(key=key))
    choices = [encode(" " + v) for v in values]
    n_hay = length - len(needle) - len(question) - max(len(c) for c in choices)
    if n_hay < 1:
        raise ValueError(f"NIAH length {length} is too short for a needle, question and answer")
    start = int(rng.integers(0, len(hay) - n_hay + 1))
    cut = hay[start : start + n_hay].tolist()
    at = int(round(depth * n_hay))
    context = cut[:at] + needle + cut[at:] + question
    order = rng.permutation(cfg.n_choices)
    return {
        "length": length,
        "depth": depth,
        "key": key,
        "value": values[0],
        "context": context,
        "choices": [choices[i] for i in order],
        "label": int(np.flatnonzero(order == 0)[0]),
    }


def build_niah(haystack_texts: Sequence[str], encode: Encode, cfg: NiahConfig) -> pd.DataFrame:
    """Items for every (length, depth) cell of ``cfg`` from held-out ``haystack_texts`` (joined by blank lines).

    ``encode`` maps text to token ids (no special tokens). Deterministic for the same texts, encoder and seed.
    """
    hay = np.array(encode("\n\n".join(haystack_texts)), dtype=np.int64)
    if len(hay) < max(cfg.lengths):
        raise ValueError(
            f"NIAH haystack has {len(hay)} tokens, fewer than the longest length {max(cfg.lengths)}"
        )
    rng = np.random.default_rng(cfg.seed)
    rows = [
        _item(hay, rng, encode, length, depth, cfg)
        for length in cfg.lengths
        for depth in cfg.depths
        for _ in range(cfg.items_per_cell)
    ]
    return pd.DataFrame(rows)


# (context ids, [choice ids, ...]) -> summed log-probability of each choice after the context
ChoiceScorer = Callable[[list[int], list[list[int]]], list[float]]


def score_niah(items: pd.DataFrame, score_choices: ChoiceScorer) -> pd.DataFrame:
    """Per-item correctness, then accuracy per (length, depth) cell with the item count and chance level."""
    correct = [
        int(np.argmax(score_choices(list(item.context), [list(c) for c in item.choices]))) == int(item.label)
        for item in items.itertuples(index=False)
    ]
    scored = items.assign(correct=correct)
    table = scored.groupby(["length", "depth"], as_index=False).agg(
        accuracy=("correct", "mean"), items=("correct", "size")
    )
    table["chance"] = 1.0 / items["choices"].map(len).mean()
    return table


def accuracy_at(table: pd.DataFrame, length: int) -> float:
    """Mean accuracy over the depths of one length (every depth weighs the same)."""
    rows = table[table["length"] == length]
    if rows.empty:
        raise KeyError(f"no NIAH cells at length {length}; have {sorted(set(table['length']))}")
    return float(rows["accuracy"].mean())


def heatmap_png(table: pd.DataFrame, title: str = "needle in a haystack") -> bytes:
    """Accuracy by depth (rows) x context length (columns), the paper's NIAH plot, as PNG bytes."""
    grid = table.pivot(index="depth", columns="length", values="accuracy").sort_index()
    fig, ax = agg_subplots(figsize=(1.6 + 0.9 * grid.shape[1], 3.5), dpi=100)
    im = ax.imshow(grid.to_numpy(), vmin=0.0, vmax=1.0, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [f"{d:.0%}" for d in grid.index])
    for (i, j), v in np.ndenumerate(grid.to_numpy()):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("needle depth")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="accuracy")
    return figure_png(fig)
