"""NIAH items (needle at the configured depth, exact lengths, deterministic) and their scoring."""

import re

import pytest

from ml.eval.niah import NiahConfig, accuracy_at, build_niah, heatmap_png, score_niah

WORDS = {}


def encode(text: str) -> list[int]:
    """A word-level encoder: one id per word or punctuation mark (ids assigned on first sight)."""
    return [WORDS.setdefault(w, len(WORDS)) for w in re.findall(r"\w+|[^\w\s]", text)]


HAYSTACK = [" ".join(f"w{i % 97}" for i in range(j, j + 400)) for j in range(5)]


def test_items_have_the_length_and_needle_depth_asked_for():
    cfg = NiahConfig(lengths=(64, 128), depths=(0.0, 0.5, 1.0), items_per_cell=3)
    items = build_niah(HAYSTACK, encode, cfg)
    assert len(items) == 2 * 3 * 3
    again = build_niah(HAYSTACK, encode, cfg)
    assert items.drop(columns=["context", "choices"]).equals(again.drop(columns=["context", "choices"]))
    for item in items.itertuples(index=False):
        longest = max(len(c) for c in item.choices)
        assert len(item.context) + longest == item.length
        needle = encode(f"The secret number for {item.key} is {item.value}.")
        at = next(i for i in range(len(item.context)) if item.context[i : i + len(needle)] == needle)
        haystack = item.length - longest - len(needle) - len(encode(f"The secret number for {item.key} is"))
        assert at == round(item.depth * haystack)
        assert item.choices[item.label] == encode(item.value) and len(set(map(tuple, item.choices))) == 4


def test_scoring_a_retriever_and_a_guesser():
    items = build_niah(HAYSTACK, encode, NiahConfig(lengths=(64,), depths=(0.0, 1.0), items_per_cell=8))

    def retriever(context, choices):  # finds the choice that occurs in the context
        text = " ".join(map(str, context))
        return [1.0 if f" {' '.join(map(str, c))} " in f" {text} " else 0.0 for c in choices]

    table = score_niah(items, retriever)
    assert table["accuracy"].tolist() == [1.0, 1.0] and table["items"].tolist() == [8, 8]
    assert table["chance"].tolist() == [0.25, 0.25] and accuracy_at(table, 64) == 1.0
    first = score_niah(items, lambda context, choices: [1.0] + [0.0] * (len(choices) - 1))
    expected = items.assign(hit=items["label"] == 0).groupby("depth")["hit"].mean().tolist()
    assert first["accuracy"].tolist() == expected
    assert heatmap_png(table)[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(KeyError, match="no NIAH cells at length 128"):
        accuracy_at(table, 128)


def test_bad_config_is_refused():
    with pytest.raises(ValueError):
        NiahConfig(depths=(1.5,))
    with pytest.raises(ValueError, match="fewer than the longest length"):
        build_niah(["a b c"], encode, NiahConfig(lengths=(64,)))
