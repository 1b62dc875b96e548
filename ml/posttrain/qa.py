"""Corpus-grounded QA (Llama 3 paper §4.3: questions over documents whose answers are checkable spans).

A question is asked over a window of a held-out corpus document (documents the base model never trained
on): "which word comes right after the phrase P in the text?". The phrase is chosen so that it occurs
exactly once in the window, which makes the answer — the next word — a unique, checkable span of the
window; a window without such a phrase yields no question. The id hashes the document id and the
phrase's offset, so a question keeps its held-out split (ml/posttrain/records.py) across runs.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from typing import Any

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
_ANSWER = re.compile(r"^Answer:\s*(?P<value>\S+)\s*$")


def _question(window: str, phrase: str) -> str:
    return f'Text: {window}\n\nQuestion: which word comes right after "{phrase}" in the text?'


def make_question(doc_id: str, text: str, rng: random.Random, window_words: int, phrase_words: int = 3):
    """An SFT record (family ``qa``, exact ``answer``) over a random window of ``text``, or None."""
    words = text.split()
    if len(words) < phrase_words + 2:
        return None
    start = rng.randrange(0, max(1, len(words) - window_words + 1))
    window_list = words[start : start + window_words]
    window = " ".join(window_list)
    for pos in rng.sample(range(len(window_list) - phrase_words), len(window_list) - phrase_words):
        phrase = " ".join(window_list[pos : pos + phrase_words])
        answer = window_list[pos + phrase_words]
        if not _WORD.fullmatch(answer) or window.count(phrase) != 1 or '"' in phrase:
            continue
        rid = hashlib.sha256(f"{doc_id}:{start + pos}".encode()).hexdigest()[:16]
        reply = f'The word after "{phrase}" is {answer}.\nAnswer: {answer}'
        return {
            "id": f"qa-{rid}",
            "family": "qa",
            "answer": answer,
            "messages": [
                {"role": "user", "content": _question(window, phrase)},
                {"role": "assistant", "content": reply},
            ],
        }
    return None


def corpus_questions(
    docs: Sequence[tuple[str, str]], n: int, seed: int, window_words: int
) -> list[dict[str, Any]]:
    """Up to ``n`` questions over ``docs`` ((id, text) pairs), cycling over the documents in a seeded order."""
    if not docs or n <= 0:
        return []
    rng = random.Random(seed)
    order = rng.sample(range(len(docs)), len(docs))
    out: list[dict[str, Any]] = []
    for i in range(min(len(order) * 2, n * 4)):
        doc_id, text = docs[order[i % len(order)]]
        rec = make_question(doc_id, text, rng, window_words)
        if rec is not None and all(r["id"] != rec["id"] for r in out):
            out.append(rec)
        if len(out) == n:
            break
    return out


def verify_answer(reply: str, expected: str) -> bool:
    """The reply's last line is ``Answer: <expected>`` (a QA reply is judged by its answer span only)."""
    lines = [ln for ln in reply.strip().splitlines() if ln.strip()]
    m = _ANSWER.match(lines[-1]) if lines else None
    return bool(m) and m["value"] == expected
