"""Corpus QA, preference pairs from verified records, and semantic dedup: exact values on small cases."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from ml.posttrain.code_synth import generate_code_tasks
from ml.posttrain.math_synth import generate_math
from ml.posttrain.preferences import code_task_of, corrupt_code, corrupt_math, corrupt_qa, preference_pairs
from ml.posttrain.pruning import semantic_dedup
from ml.posttrain.qa import make_question, verify_answer
from ml.posttrain.sandbox import backend

TEXT = "alpha beta gamma delta alpha beta epsilon zeta"


def test_a_question_asks_for_the_word_after_a_unique_phrase():
    rec = make_question("d1", TEXT, random.Random(0), window_words=8)
    phrase = rec["messages"][0]["content"].split('"')[1]
    assert TEXT.count(phrase) == 1  # "alpha beta" occurs twice, so the phrase is never just that
    words = TEXT.split()
    n = len(phrase.split())
    at = [i for i in range(len(words)) if " ".join(words[i : i + n]) == phrase][0]
    assert rec["answer"] == words[at + n]
    assert verify_answer(rec["messages"][1]["content"], rec["answer"])
    assert not verify_answer("Answer: nope", rec["answer"]) and not verify_answer("", rec["answer"])
    assert make_question("d2", "too short", random.Random(0), 8) is None


def test_corruptions_fail_their_verifiers():
    p = generate_math(1, seed=0)[0]
    assert corrupt_math(p.solution) == (
        "Move the constant to the right side: 3 - (-45) = 48\nDivide both sides by 8: 48 / 8 = 6\n"
        "Check by substitution: 8 * (6) + (-45) = 7\nAnswer: 7"
    )
    assert corrupt_code("```python\ndef f(x):\n    return x * 5\n```") == (
        "```python\ndef f(x):\n    return x * 6\n```"
    )
    assert corrupt_code("```python\ndef f(x):\n    return x\n```") is None
    rec = make_question("d1", TEXT, random.Random(0), window_words=8)
    bad = corrupt_qa(rec)
    assert not verify_answer(bad, rec["answer"]) and bad.splitlines()[0].startswith("The word after")


@pytest.mark.skipif(backend() != "bwrap", reason="bubblewrap not installed")
def test_pairs_keep_the_record_and_count_what_gave_none():
    records = [p.to_record() for p in generate_math(2)] + [t.to_record() for t in generate_code_tasks(2)]
    pairs, counts = preference_pairs(records)
    # clamp_scale's x * 6 still clamps to the same value on every one of its tests: no pair, counted
    assert counts == Counter({"pairs": 3, "pair_mutation_passes": 1})
    kept = [records[i] for i in (0, 1, 3)]
    assert [p["id"] for p in pairs] == [r["id"] for r in kept]
    assert all(p["chosen"] == r["messages"][-1]["content"] for p, r in zip(pairs, kept, strict=True))
    assert pairs[2]["rejected"] == "```python\ndef every_kth(xs):\n    return xs[::5]\n```"
    task = code_task_of(records[2])
    assert task.function == "clamp_scale" and task.tests[0] == ([47, -4, 27], 27)


def _rec(i: str, text: str) -> dict:
    return {"id": i, "messages": [{"role": "user", "content": text}, {"role": "assistant", "content": "ok"}]}


def test_semantic_dedup_drops_near_copies_with_the_similarity():
    recs = [
        _rec("a", "the cat sat on the mat"),
        _rec("b", "the cat sat on the mat!"),
        _rec("c", "zebra quantum"),
    ]
    kept, dropped = semantic_dedup(recs, 0.9)  # a and b: cosine 0.930; c: 0.136 and 0.134
    assert [r["id"] for r in kept] == ["a", "c"]
    assert [(d["id"], d["drop_reason"]) for d in dropped] == [("b", "near_duplicate")]
    assert dropped[0]["drop_detail"] == "cosine 0.930 >= 0.9 with a"
    assert [r["id"] for r in semantic_dedup(recs, 1.0)[0]] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="threshold must be in \\(0, 1\\], got 0"):
        semantic_dedup(recs, 0)
