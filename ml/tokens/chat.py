"""The Llama 3 chat protocol on token ids: encoding with loss masks, and parsing back to messages.

The format (Llama 3 paper §4.1, rendered by ``ml.tokens.tokenizer.render_chat``)::

    <|begin_of_text|>
    <|start_header_id|>{role}<|end_header_id|>\\n\\n{content}<|eot_id|>          (every turn)
    <|start_header_id|>assistant<|end_header_id|>\\n\\n<|python_tag|>{code}<|eom_id|>  (a tool call)

Roles are system, user, assistant and ipython (the output of executed code). Two masks come with the ids:

* ``targets``: the tokens an assistant turn produces — ``<|python_tag|>``, its content and its closing
  ``<|eot_id|>`` / ``<|eom_id|>`` — the SFT loss (prompt and headers masked). It equals transformers'
  ``assistant_masks`` from ``CHAT_TEMPLATE``'s ``{% generation %}`` blocks (tested).
* ``content``: only the text of the assistant turns, every special token masked: what DPO scores
  (the paper masks the formatting tokens, headers and eot, out of chosen and rejected).

The ``\\n\\n`` after a header is encoded together with the content (as encoding the rendered string does);
a token that straddles the two (content starting with a newline) counts as content.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

from tokenizers import Tokenizer

from ml.tokens.tokenizer import (
    BOS,
    CHAT_ROLES,
    END_HEADER,
    EOM,
    EOT,
    PYTHON_TAG,
    START_HEADER,
    check_message,
    special_token_id,
)

CHAT_SPECIALS = (BOS, START_HEADER, END_HEADER, EOT, EOM, PYTHON_TAG)
HEADER_GAP = "\n\n"


@dataclasses.dataclass(frozen=True)
class ChatEncoding:
    """Token ids of a chat and two boolean masks of the same length (see the module docstring)."""

    ids: list[int]
    targets: list[bool]
    content: list[bool]

    def __post_init__(self) -> None:
        if not len(self.ids) == len(self.targets) == len(self.content):
            raise ValueError("ChatEncoding: ids, targets and content must have one entry per token")


def encode_chat_masked(
    messages: Sequence[Mapping[str, Any]], tok: Tokenizer, add_generation_prompt: bool = False
) -> ChatEncoding:
    """Ids of ``render_chat(messages)`` with the assistant ``targets`` and ``content`` masks.

    Special-token text inside a role or content is encoded as plain text (a user cannot inject
    ``<|eot_id|>``); toggles ``tok.encode_special_tokens`` during the call (do not share ``tok`` across
    threads while encoding chats)."""
    sid = {t: special_token_id(tok, t) for t in CHAT_SPECIALS}
    ids, targets, content = [sid[BOS]], [False], [False]

    def add(new: list[int], target: bool, text: list[bool] | bool) -> None:
        ids.extend(new)
        targets.extend([target] * len(new))
        content.extend(text if isinstance(text, list) else [text] * len(new))

    previous = tok.encode_special_tokens
    tok.encode_special_tokens = True
    try:
        for i, m in enumerate(messages):
            role, text, tool_call = check_message(i, m)
            is_assistant = role == "assistant"
            add(
                [sid[START_HEADER], *tok.encode(role, add_special_tokens=False).ids, sid[END_HEADER]],
                False,
                False,
            )
            if tool_call:
                add(tok.encode(HEADER_GAP, add_special_tokens=False).ids, False, False)
                add([sid[PYTHON_TAG]], True, False)
                add(tok.encode(text, add_special_tokens=False).ids, True, True)
                add([sid[EOM]], True, False)
                continue
            enc = tok.encode(HEADER_GAP + text, add_special_tokens=False)
            in_content = [end > len(HEADER_GAP) for _, end in enc.offsets]  # token reaches into the content
            add(enc.ids[: in_content.count(False)], False, False)
            body = enc.ids[in_content.count(False) :]
            add(body, is_assistant, is_assistant)
            add([sid[EOT]], is_assistant, False)
        if add_generation_prompt:
            header = tok.encode("assistant", add_special_tokens=False).ids
            add([sid[START_HEADER], *header, sid[END_HEADER]], False, False)
            add(tok.encode(HEADER_GAP, add_special_tokens=False).ids, False, False)
    finally:
        tok.encode_special_tokens = previous
    return ChatEncoding(ids, targets, content)


# ---------------------------------------------------------------------------------------------------------
# Parsing


class ChatFormatError(ValueError):
    """A string or id sequence that is not a well-formed Llama 3 chat."""


_SPECIAL_RE = re.compile("(" + "|".join(re.escape(t) for t in CHAT_SPECIALS) + ")")


def _pieces_of_text(text: str) -> list[tuple[bool, str]]:
    """(is_special, piece) in order: special-token strings and the text between them."""
    return [(p in CHAT_SPECIALS, p) for p in _SPECIAL_RE.split(text) if p]


def _pieces_of_ids(ids: Sequence[int], tok: Tokenizer) -> list[tuple[bool, str]]:
    special = {special_token_id(tok, t): t for t in CHAT_SPECIALS}
    pieces: list[tuple[bool, str]] = []
    run: list[int] = []
    for i in [*ids, None]:
        if i is None or i in special:
            if run:
                pieces.append((False, tok.decode(run, skip_special_tokens=False)))
                run = []
            if i is not None:
                pieces.append((True, special[i]))
        else:
            run.append(int(i))
    return pieces


def _parse(pieces: list[tuple[bool, str]], where: str) -> tuple[list[dict[str, Any]], bool]:
    """Messages and whether the chat ends with an open assistant header (a generation prompt)."""
    if not pieces or pieces[0] != (True, BOS):
        raise ChatFormatError(f"{where}: a chat starts with {BOS}")
    messages: list[dict[str, Any]] = []
    k = 1
    while k < len(pieces):
        n = len(messages)
        head = pieces[k : k + 3]
        if len(head) < 3 or head[0] != (True, START_HEADER) or head[1][0] or head[2] != (True, END_HEADER):
            raise ChatFormatError(f"{where}: message #{n} must open with {START_HEADER}role{END_HEADER}")
        role = head[1][1]
        if role not in CHAT_ROLES:
            raise ChatFormatError(
                f"{where}: message #{n}: role {role!r} is not one of {', '.join(CHAT_ROLES)}"
            )
        rest = pieces[k + 3 :]
        if rest == [(False, HEADER_GAP)] and role == "assistant":
            return messages, True  # generation prompt
        message, used = _parse_body(role, rest, f"{where}: message #{n} ({role})")
        messages.append(message)
        k += 3 + used
    return messages, False


def _parse_body(role: str, rest: list[tuple[bool, str]], where: str) -> tuple[dict[str, Any], int]:
    """One message body after its header: ``\\n\\n`` text ``<|eot_id|>`` or ``\\n\\n<|python_tag|>`` code
    ``<|eom_id|>``; returns the message and the pieces it used."""
    if not rest or rest[0][0] or not rest[0][1].startswith(HEADER_GAP):
        raise ChatFormatError(f"{where}: the header must be followed by a blank line")
    first = rest[0][1][len(HEADER_GAP) :]
    if first == "" and len(rest) > 1 and rest[1] == (True, PYTHON_TAG):
        if role != "assistant":
            raise ChatFormatError(f"{where}: only assistant messages can be tool calls")
        body = rest[2:4]
        if body[:1] == [(True, EOM)]:
            return {"role": role, "content": "", "tool_call": True}, 3
        if len(body) < 2 or body[0][0] or body[1] != (True, EOM):
            raise ChatFormatError(f"{where}: a tool call ends with {EOM}")
        return {"role": role, "content": body[0][1], "tool_call": True}, 4
    if len(rest) < 2 or rest[1] != (True, EOT):
        got = rest[1][1] if len(rest) > 1 else "the end of the chat"
        raise ChatFormatError(f"{where}: the content must end with {EOT}, got {got!r}")
    return {"role": role, "content": first}, 2


def parse_chat(text: str, allow_generation_prompt: bool = False) -> list[dict[str, Any]]:
    """Messages of a rendered chat string (inverse of ``render_chat``); ChatFormatError naming the message."""
    messages, open_prompt = _parse(_pieces_of_text(text), "chat")
    if open_prompt and not allow_generation_prompt:
        raise ChatFormatError("chat: ends with an open assistant header (a generation prompt)")
    return messages


def decode_chat(
    ids: Sequence[int], tok: Tokenizer, allow_generation_prompt: bool = False
) -> list[dict[str, Any]]:
    """Messages of chat token ids (inverse of ``encode_chat``): unlike parsing the string, special-token
    text that a user typed stays inside its content."""
    messages, open_prompt = _parse(_pieces_of_ids(ids, tok), "chat ids")
    if open_prompt and not allow_generation_prompt:
        raise ChatFormatError("chat ids: end with an open assistant header (a generation prompt)")
    return messages


def parse_reply(ids: Sequence[int], tok: Tokenizer) -> dict[str, Any]:
    """The assistant message in generated ids (after a generation prompt): ``text<|eot_id|>`` or
    ``<|python_tag|>code<|eom_id|>``; a reply cut before its end token is a ChatFormatError."""
    pieces = _pieces_of_ids(ids, tok)
    if pieces and not pieces[0][0]:
        pieces[0] = (False, HEADER_GAP + pieces[0][1])
    else:
        pieces.insert(0, (False, HEADER_GAP))
    message, used = _parse_body("assistant", pieces, "reply")
    if used != len(pieces):
        raise ChatFormatError(f"reply: {len(pieces) - used} piece(s) after the end of the message")
    return message
