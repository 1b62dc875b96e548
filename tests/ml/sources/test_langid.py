"""The compiled language id gives py3langid's exact answer (language and float probability)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from py3langid.langid import MODEL_FILE, LanguageIdentifier

from ml.sources import langid
from ml.sources.extract import identify_language
from ml.sources.langid import CompiledLanguageId, language_identifier

LICENSES = Path("/usr/share/common-licenses")


@pytest.fixture(scope="module")
def reference() -> LanguageIdentifier:
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def real_texts() -> list[str]:
    """Licence texts of this machine, cut into pieces of several sizes (short pieces are the hard cases)."""
    texts = []
    for path in sorted(LICENSES.glob("*")) if LICENSES.is_dir() else []:
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            texts += [text, text[:5000], text[:300], text[:40], text[1000:1012]]
    return texts


ODD_TEXTS = [
    "", " ", "\n\n", "a", "HELLO WORLD THIS IS UPPER CASE", "Ärger über Öl und Straße", "ﬁ ligature and e\u0301",
    "日本語のテキストです。これは文です。", "这是一个中文句子，用于测试。", "Это русский текст для проверки.",
    "مرحبا بالعالم، هذا نص عربي", "emoji 😀🎉 and text", "lone surrogate \ud800 here", "1234567890 !!! ???",
    b"bytes input in english words", b"\xff\xfe invalid utf8 \xc3", "x" * 20000,
]  # fmt: skip


def test_equal_to_py3langid_on_real_and_odd_texts(reference: LanguageIdentifier):
    rng = random.Random(0)
    noise = [
        "".join(chr(rng.randrange(32, 0x3000)) for _ in range(rng.randrange(1, 400))) for _ in range(200)
    ]
    texts = real_texts() + ODD_TEXTS + noise
    assert len(texts) > 250
    ours = language_identifier()
    for text in texts:
        assert ours.classify(text) == reference.classify(text), repr(text[:60])


def test_equal_without_normalised_probabilities():
    raw = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=False)
    ours = CompiledLanguageId(LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=False))
    for text in [*ODD_TEXTS, *real_texts()[:20]]:
        assert ours.classify(text) == raw.classify(text), repr(text[:60])


def test_identify_language_cuts_at_max_chars():
    text = "The quick brown fox jumps over the lazy dog. " * 20
    lang, score = identify_language(text, max_chars=50)
    assert (lang, score) == language_identifier().classify(text[:50]) and lang == "en"


def test_falls_back_to_py3langid_without_numba(
    monkeypatch: pytest.MonkeyPatch, reference: LanguageIdentifier
):
    monkeypatch.setattr(langid, "numba", None)
    assert language_identifier().classify("Ceci est une phrase en français.") == reference.classify(
        "Ceci est une phrase en français."
    )
