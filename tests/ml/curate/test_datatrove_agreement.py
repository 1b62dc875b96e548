"""Our Gopher rules decide like datatrove's (the reference FineWeb used) on real documents.

Deliberate differences, each neutralised below so the decisions can be compared:
- Word split: both sides split on whitespace. datatrove's English default is spaCy's tokenizer (not a
  dependency here); its filters accept any ``WordTokenizer``, so the test hands it ``str.split``.
- Symbol-only words: ours are words made only of Unicode punctuation, ASCII symbols or control
  characters; datatrove uses a fixed list of ~260 punctuation characters. No document here has a word
  that one definition calls a symbol and the other does not often enough to change a decision.
- Top n-gram: an n-gram that occurs once scores 0 for us (it is not repeated); datatrove scores its
  characters. This only differs on documents of a few words, which the length rule drops on both sides.
- Duplicate n-grams: ours compares n-grams as word tuples; datatrove joins the words without a separator
  (so "ab c" equals "a bc"). No decision here depends on such a collision.
"""

from __future__ import annotations

import pandas as pd
from datatrove.data import Document
from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
from datatrove.utils.word_tokenizers import WordTokenizer

from ml.curate.filters import FilterConfig, heuristic_filter

GOPHER_RULES = (
    "length", "alpha_ratio", "mean_word_length", "symbol_ratio", "ellipsis_lines", "bullet_lines",
    "stop_words", "dup_lines", "dup_ngram_coverage",
)  # fmt: skip


class WhitespaceWords(WordTokenizer):
    """Words as Gopher and our filters count them: split on whitespace."""

    def word_tokenize(self, text: str) -> list[str]:
        return text.split()

    def sent_tokenize(self, text: str) -> list[str]:
        return [text]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [(0, len(text))]


def datatrove_keeps(docs: pd.DataFrame) -> list[bool]:
    """FineWeb's order: repetition then quality; a document is kept when both keep it."""
    words = WhitespaceWords()
    steps = [GopherRepetitionFilter(language=words), GopherQualityFilter(language=words)]
    keeps = []
    for i, text in enumerate(docs["text"]):
        doc = Document(text=text, id=str(i))
        keeps.append(all(step.filter(doc) is True for step in steps))
    return keeps


def test_gopher_decisions_equal_datatrove_on_real_documents(local_web_docs: pd.DataFrame):
    docs = local_web_docs[local_web_docs["lang"] == "en"].reset_index(drop=True)
    assert len(docs) >= 500
    ours = heuristic_filter(docs, FilterConfig(enabled=GOPHER_RULES))
    kept = set(ours.kept["id"])
    our_keeps = [i in kept for i in docs["id"]]
    theirs = datatrove_keeps(docs)
    disagree = [docs["id"][i] for i, (a, b) in enumerate(zip(our_keeps, theirs, strict=True)) if a != b]
    assert disagree == []
    # the rules act on this corpus: both sides drop a real share, repetition among the reasons
    assert 0.1 < 1 - sum(theirs) / len(theirs) < 0.9
    assert (ours.dropped["reason"] == "dup_ngram_coverage").sum() > 0


def test_ngram_counts_equal_datatrove_by_hand():
    from datatrove.pipeline.filters.gopher_repetition_filter import (
        find_all_duplicate,
        find_top_duplicate,
        get_n_grams,
    )

    from ml.curate.filters import dup_ngram_char_frac, top_ngram_char_frac

    text = "to be or not to be that is the question to be or not to be again"
    words = text.split()
    for n in (2, 3, 4):
        assert top_ngram_char_frac(words, n, len(text)) == find_top_duplicate(get_n_grams(words, n)) / len(
            text
        )
    for n in range(5, 11):
        assert dup_ngram_char_frac(words, n, len(text)) == find_all_duplicate(words, n) / len(text)
    assert dup_ngram_char_frac(words, 5, len(text)) == len("tobeornotto") / len(text)
