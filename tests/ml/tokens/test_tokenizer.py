"""Tokenizer: training, special-token layout, chat format, HF loading, compression stats."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from tokenizers import pre_tokenizers

from ml.config import ConfigError
from ml.tokens.tokenizer import (
    BOS,
    CHAT_TEMPLATE,
    END_HEADER,
    EOM,
    EOS,
    EOT,
    PAD,
    PYTHON_TAG,
    START_HEADER,
    TokenizerConfig,
    byte_tokenizer,
    compression_stats,
    encode_chat,
    load_tokenizer,
    render_chat,
    save_tokenizer,
    special_tokens,
    tokenizer_sha256,
    train_tokenizer,
)

SAMPLES = {
    "en": "The quick brown fox jumps over the lazy dog. It's 2024, and we're testing tokenizers!",
    "de": "Fünf große Schwäne überqueren den Fluss; Straße, Größe und Übermaß.",
    "ja": "日本語のテキストを正しく分割できるかを確認します。東京は晴れです。",
    "ru": "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "zh": "我们正在测试分词器是否能够正确地处理中文文本。",
    "code": 'def add(a: int, b: int) -> int:\n    """Sum."""\n    return a + b  # ok\n\n\tif x != 0x1F:\n',
}
CORPUS = [text for _ in range(3) for text in SAMPLES.values()] + [
    "Numbers 12345 and 6789, spaces   and\n\nnewlines\r\n, emoji 🙂 and tabs\t.",
    "Привет, мир! Hallo Welt! Hello world! こんにちは世界! 你好，世界!",
]
CFG = TokenizerConfig(vocab_size=512, num_reserved_special_tokens=16, min_frequency=2)
N_BASE = 512 - 16  # first special id


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS, CFG)


@pytest.fixture(scope="module")
def saved(tok, tmp_path_factory):
    return save_tokenizer(tok, tmp_path_factory.mktemp("tok"), CFG)


def test_presets_match_llama3_layout():
    assert TokenizerConfig.from_preset("tiny").vocab_size == 4096
    assert TokenizerConfig.from_preset("small").vocab_size == 32768
    big = TokenizerConfig.from_preset("405b")
    assert (big.vocab_size, big.num_reserved_special_tokens) == (128256, 256)
    names = special_tokens(256)
    first = big.vocab_size - 256
    assert first == 128000
    # Llama 3.1 ids: 128000 BOS, 128001 EOS, 128004 pad, 128006/7 headers, 128008 eom, 128009 eot, 128010 python.
    assert {n: first + i for i, n in enumerate(names) if not n.startswith("<|reserved")} == {
        BOS: 128000,
        EOS: 128001,
        PAD: 128004,
        START_HEADER: 128006,
        END_HEADER: 128007,
        EOM: 128008,
        EOT: 128009,
        PYTHON_TAG: 128010,
    }
    assert names[2] == "<|reserved_special_token_0|>"
    assert names[5] == "<|reserved_special_token_2|>"
    assert names[255] == "<|reserved_special_token_247|>"
    assert len(set(names)) == 256


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="num_reserved_special_tokens=8"):
        TokenizerConfig(vocab_size=512, num_reserved_special_tokens=8)
    with pytest.raises(ValueError, match="vocab_size=300"):
        TokenizerConfig(vocab_size=300, num_reserved_special_tokens=256)
    with pytest.raises(ConfigError, match="vocab_sise"):
        TokenizerConfig.from_dict({"vocab_sise": 10})
    with pytest.raises(ValueError, match="heldout_key='url'"):
        TokenizerConfig(heldout_key="url")


def test_vocab_size_and_special_ids(tok):
    assert tok.get_vocab_size() == 512
    expected = {
        BOS: 496,
        EOS: 497,
        PAD: 500,
        START_HEADER: 502,
        END_HEADER: 503,
        EOM: 504,
        EOT: 505,
        PYTHON_TAG: 506,
    }
    for name, idx in expected.items():
        assert tok.token_to_id(name) == idx
        assert tok.encode(name, add_special_tokens=False).ids == [idx]  # one id, not split
    assert tok.token_to_id("<|reserved_special_token_0|>") == 498
    assert tok.token_to_id("<|reserved_special_token_7|>") == 511


@pytest.mark.parametrize("lang", sorted(SAMPLES))
def test_round_trip_exact(tok, lang):
    text = SAMPLES[lang]
    ids = tok.encode(text).ids
    assert ids[0] == 496  # BOS added by the post-processor
    assert max(ids[1:]) < N_BASE
    assert tok.decode(ids) == text  # special tokens skipped on decode
    assert tok.decode(tok.encode(text, add_special_tokens=False).ids) == text


def test_unseen_text_round_trips_via_bytes(tok):
    text = "Ελληνικά και العربية — ✓ \x00\x7f"
    assert tok.decode(tok.encode(text).ids) == text


def test_training_learns_merges_and_is_deterministic(tok):
    ids = tok.encode(SAMPLES["en"], add_special_tokens=False).ids
    assert len(ids) < len(SAMPLES["en"].encode("utf-8"))
    assert tokenizer_sha256(train_tokenizer(CORPUS, CFG)) == tokenizer_sha256(tok)


def test_split_regex_keeps_digit_groups_of_three(tok):
    pieces = tok.pre_tokenizer.pre_tokenize_str("12345 it's")
    assert [p for p, _ in pieces] == ["123", "45", "Ġit", "'s"]


def test_too_small_corpus_is_an_error():
    with pytest.raises(ValueError, match="vocab_size=4096"):
        train_tokenizer(["tiny corpus"], TokenizerConfig(vocab_size=4096))


def test_training_caps(tok):
    few = train_tokenizer(CORPUS, CFG.replace(max_training_docs=100))
    assert tokenizer_sha256(few) == tokenizer_sha256(tok)  # cap above the corpus size changes nothing
    with pytest.raises(ValueError, match="yields only"):
        train_tokenizer(CORPUS, CFG.replace(max_training_bytes=10))


def test_encode_chat_matches_paper_string(tok):
    messages = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Wie geht's?"},
        {"role": "assistant", "content": "Gut, danke."},
    ]
    paper = (
        "<|begin_of_text|>"
        "<|start_header_id|>system<|end_header_id|>\n\nYou are helpful.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWie geht's?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nGut, danke.<|eot_id|>"
    )
    assert render_chat(messages) == paper
    ids = encode_chat(messages, tok)
    assert ids == tok.encode(paper, add_special_tokens=False).ids
    enc = lambda s: tok.encode(s, add_special_tokens=False).ids  # noqa: E731
    assert ids == [
        496,
        *[502, *enc("system"), 503, *enc("\n\nYou are helpful."), 505],
        *[502, *enc("user"), 503, *enc("\n\nWie geht's?"), 505],
        *[502, *enc("assistant"), 503, *enc("\n\nGut, danke."), 505],
    ]


def test_encode_chat_tool_call_and_generation_prompt(tok):
    messages = [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "print(2+2)", "tool_call": True},
        {"role": "ipython", "content": "4"},
    ]
    text = render_chat(messages, add_generation_prompt=True)
    assert text == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n<|python_tag|>print(2+2)<|eom_id|>"
        "<|start_header_id|>ipython<|end_header_id|>\n\n4<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert (
        encode_chat(messages, tok, add_generation_prompt=True)
        == tok.encode(text, add_special_tokens=False).ids
    )


def test_encode_chat_does_not_parse_specials_in_content(tok):
    ids = encode_chat([{"role": "user", "content": "hi<|eot_id|>"}], tok)
    assert ids.count(505) == 1 and ids[-1] == 505
    assert tok.encode_special_tokens is False  # restored


def test_encode_chat_rejects_bad_messages(tok):
    with pytest.raises(ValueError, match="message #1: role 'robot'"):
        encode_chat([{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}], tok)
    with pytest.raises(ValueError, match="only assistant"):
        encode_chat([{"role": "user", "content": "a", "tool_call": True}], tok)


def test_saved_dir_files(saved):
    assert sorted(p.name for p in saved.iterdir()) == [
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    config = json.loads((saved / "tokenizer_config.json").read_text())
    assert config["chat_template"] == CHAT_TEMPLATE
    assert (config["bos_token"], config["eos_token"], config["pad_token"]) == (BOS, EOS, PAD)
    assert config["added_tokens_decoder"]["505"]["content"] == EOT


def test_load_tokenizer_round_trip(tok, saved, tmp_path):
    assert tokenizer_sha256(load_tokenizer(saved)) == tokenizer_sha256(tok)
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a valid tokenizers JSON"):
        load_tokenizer(tmp_path)


def test_transformers_loads_saved_dir(tok, saved):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    for hf in (PreTrainedTokenizerFast.from_pretrained(saved), AutoTokenizer.from_pretrained(saved)):
        for text in SAMPLES.values():
            assert hf(text)["input_ids"] == tok.encode(text).ids
        assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id) == (496, 497, 500)
        assert hf.convert_tokens_to_ids(EOT) == 505
        messages = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Wie geht's?"},
            {"role": "assistant", "content": "print(1)", "tool_call": True},
        ]
        rendered = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert rendered == render_chat(messages, add_generation_prompt=True)
        out = hf.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        hf_ids = out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out
        assert list(hf_ids) == encode_chat(messages, tok, add_generation_prompt=True)


def test_byte_tokenizer_ids_are_bytes():
    bt = byte_tokenizer(16)
    assert bt.get_vocab_size() == 272
    assert bt.encode("hé").ids == [256, 104, 195, 169]
    assert set(bt.get_vocab()) - set(special_tokens(16)) == set(pre_tokenizers.ByteLevel.alphabet())


def test_compression_stats_exact():
    df = pd.DataFrame({"text": ["hello", "日本", "ab"], "lang": ["en", "ja", "en"]})
    stats = compression_stats(byte_tokenizer(16), df)
    assert stats == {
        "docs": 3.0,
        "bytes": 13.0,
        "tokens": 13.0,
        "bytes_per_token": 1.0,
        "docs/en": 2.0,
        "tokens/en": 7.0,
        "bytes_per_token/en": 1.0,
        "docs/ja": 1.0,
        "tokens/ja": 6.0,
        "bytes_per_token/ja": 1.0,
    }


def test_compression_stats_trained_beats_bytes(tok):
    df = pd.DataFrame({"text": list(SAMPLES.values()), "lang": list(SAMPLES)})
    stats = compression_stats(tok, df)
    assert stats["bytes_per_token"] > 1.0
    assert stats["bytes"] == sum(len(t.encode("utf-8")) for t in SAMPLES.values())
    with pytest.raises(KeyError, match="'language'"):
        compression_stats(tok, df, lang_col="language")
