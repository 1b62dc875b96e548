"""Chat protocol: loss masks on exact ids, parsing back, and agreement with transformers' chat template."""

from __future__ import annotations

import pytest

from ml.tokens.chat import ChatFormatError, decode_chat, encode_chat_masked, parse_chat, parse_reply
from ml.tokens.tokenizer import (
    TokenizerConfig,
    byte_tokenizer,
    encode_chat,
    render_chat,
    save_tokenizer,
    train_tokenizer,
)

# byte tokenizer with 16 specials: id = byte, then BOS 256, START 262, END 263, EOM 264, EOT 265, PYTHON 266
BOS, START, END, EOM, EOT, PY = 256, 262, 263, 264, 265, 266
NL = [10, 10]

TOOL_CHAT = [
    {"role": "system", "content": "Use tools."},
    {"role": "user", "content": "2+3?"},
    {"role": "assistant", "content": "print(2+3)", "tool_call": True},
    {"role": "ipython", "content": "5"},
    {"role": "assistant", "content": "It is 5."},
    {"role": "user", "content": "Thanks <|eot_id|>"},
    {"role": "assistant", "content": "\nYou're welcome!"},
]


def b(s: str) -> list[int]:
    return list(s.encode())


@pytest.fixture(scope="module")
def bt():
    return byte_tokenizer(16)


@pytest.fixture(scope="module")
def bpe():
    corpus = ["Use tools and print results. It is 5.\n\nYou're welcome!\n\nThanks a lot."] * 20 + [
        "assistant user system ipython " * 5,
        *["a\n\n\nb"] * 40,
    ]
    return train_tokenizer(corpus, TokenizerConfig(vocab_size=336, num_reserved_special_tokens=16))


def test_masks_on_exact_ids(bt):
    enc = encode_chat_masked(
        [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "yo"},
            {"role": "assistant", "content": "f()", "tool_call": True},
        ],
        bt,
    )
    user = [START, *b("user"), END, *NL, *b("hi"), EOT]
    a1_head, a1_body = [START, *b("assistant"), END, *NL], [*b("yo"), EOT]
    a2_head, a2_body = [START, *b("assistant"), END, *NL], [PY, *b("f()"), EOM]
    assert enc.ids == [BOS, *user, *a1_head, *a1_body, *a2_head, *a2_body]
    expect_targets = [0] * (1 + len(user) + len(a1_head)) + [1] * 3 + [0] * len(a2_head) + [1] * 5
    assert [int(x) for x in enc.targets] == expect_targets
    expect_content = [0] * (1 + len(user) + len(a1_head)) + [1, 1, 0] + [0] * len(a2_head) + [0, 1, 1, 1, 0]
    assert [int(x) for x in enc.content] == expect_content


def test_encode_chat_is_the_masked_ids(bt, bpe):
    for tok in (bt, bpe):
        enc = encode_chat_masked(TOOL_CHAT, tok, add_generation_prompt=True)
        assert enc.ids == encode_chat(TOOL_CHAT, tok, add_generation_prompt=True)
        header = len(encode_chat([], tok, add_generation_prompt=True)) - 1
        assert sum(enc.targets[-header - 5 :]) == 5  # "You're welcome!" ends in targets ...
        assert not any(enc.targets[-header:])  # ... the open header is never one


def test_straddling_newline_token_counts_as_content(bpe):
    enc = encode_chat_masked([{"role": "assistant", "content": "\nYou're welcome!"}], bpe)
    first = enc.targets.index(True)
    assert bpe.decode([enc.ids[first]]).startswith("\n\n\n")  # "\n\n" + "\n" merged into one token
    assert enc.content[first] and sum(enc.targets) == sum(enc.content) + 1  # + eot


@pytest.mark.parametrize("gen", [False, True])
def test_parse_and_decode_round_trip(bt, bpe, gen):
    messages = TOOL_CHAT[:-1] + [{"role": "assistant", "content": "", "tool_call": True}]
    messages.append({"role": "ipython", "content": ""})
    text = render_chat(messages, add_generation_prompt=gen)
    with pytest.raises(ChatFormatError, match="message #6 must open"):  # the string is ambiguous: the typed
        parse_chat(text, allow_generation_prompt=gen)  # <|eot_id|> closes message #5 early
    for tok in (bt, bpe):
        ids = encode_chat(messages, tok, add_generation_prompt=gen)
        assert decode_chat(ids, tok, allow_generation_prompt=gen) == messages  # ids are not ambiguous


def test_parse_chat_round_trips_plain_text():
    messages = [m for m in TOOL_CHAT if "<|" not in m["content"]]
    assert parse_chat(render_chat(messages)) == messages


def test_parse_errors_name_the_message(bt):
    ok = render_chat([{"role": "user", "content": "a"}])
    with pytest.raises(ChatFormatError, match="starts with <\\|begin_of_text\\|>"):
        parse_chat(ok[len("<|begin_of_text|>") :])
    with pytest.raises(ChatFormatError, match="message #1: role 'robot'"):
        parse_chat(ok + "<|start_header_id|>robot<|end_header_id|>\n\nx<|eot_id|>")
    with pytest.raises(
        ChatFormatError, match=r"message #1 \(assistant\): the content must end with <\|eot_id\|>"
    ):
        parse_chat(ok + "<|start_header_id|>assistant<|end_header_id|>\n\nunfinished")
    with pytest.raises(ChatFormatError, match=r"message #0 \(user\): only assistant"):
        parse_chat("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<|python_tag|>x<|eom_id|>")
    with pytest.raises(ChatFormatError, match="generation prompt"):
        parse_chat(render_chat([], add_generation_prompt=True))
    assert parse_chat(render_chat([], add_generation_prompt=True), allow_generation_prompt=True) == []


def test_parse_reply(bt):
    assert parse_reply([*b("Hi"), EOT], bt) == {"role": "assistant", "content": "Hi"}
    assert parse_reply([PY, *b("x=1"), EOM], bt) == {"role": "assistant", "content": "x=1", "tool_call": True}
    with pytest.raises(ChatFormatError, match="must end with <\\|eot_id\\|>"):
        parse_reply(b("cut off"), bt)
    with pytest.raises(ChatFormatError, match="1 piece"):
        parse_reply([*b("Hi"), EOT, *b("more")], bt)


def test_hf_chat_template_renders_ids_and_masks_as_ours(bpe, tmp_path):
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast.from_pretrained(save_tokenizer(bpe, tmp_path))
    chats = [TOOL_CHAT[:5], TOOL_CHAT[:2] + TOOL_CHAT[4:5] + [TOOL_CHAT[6]], [TOOL_CHAT[2], TOOL_CHAT[3]]]
    for messages in chats:
        for gen in (False, True):
            text = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
            assert text == render_chat(messages, add_generation_prompt=gen)
            out = hf.apply_chat_template(
                messages, add_generation_prompt=gen, return_dict=True, return_assistant_tokens_mask=True
            )
            ours = encode_chat_masked(messages, bpe, add_generation_prompt=gen)
            assert list(out["input_ids"]) == ours.ids
            assert [bool(x) for x in out["assistant_masks"]] == ours.targets
