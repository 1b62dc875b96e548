"""One fetched web record, as read back from a WARC/WET file (the unit between crawl and extract), and the
charset handling both sides share: a declared label is only ever used if Python has a text codec for it."""

from __future__ import annotations

import codecs
from dataclasses import dataclass

# Payloads above this are dumps or binaries; extraction drops them (`too_large`) and the WARC reader stops
# holding bytes there, so one hostile record cannot take the memory of a whole batch.
DEFAULT_MAX_PAYLOAD_BYTES = 10_000_000

# Codecs Python knows as "text" that no web page means: they turn bytes into escapes or refuse to decode.
_NOT_WEB_CHARSETS = frozenset({"undefined", "unicode-escape", "raw-unicode-escape", "idna", "punycode"})


@dataclass(frozen=True)
class WebRecord:
    """A response (HTML etc.) or a WET ``conversion`` record (already plain text).

    ``content_type`` is the HTTP Content-Type for responses, ``text/plain`` for WET conversions.
    ``warc_file``/``offset`` locate the record so errors and provenance can name it. ``truncated`` is True
    when the reader stopped holding the payload at its cap (``payload`` is then the first cap bytes).
    """

    url: str
    fetch_time: str  # ISO-8601 WARC-Date
    record_type: str  # "response" | "conversion" | "resource"
    content_type: str
    http_status: int | None
    payload: bytes
    warc_file: str
    offset: int
    record_id: str = ""
    truncated: bool = False


def header_charset(content_type: str) -> str | None:
    """The ``charset=`` parameter of a Content-Type value, unquoted; None when absent or empty."""
    for part in content_type.split(";")[1:]:
        key, _, value = part.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip("\"'"):
            return value.strip().strip("\"'")
    return None


def text_codec(label: str | None) -> str | None:
    """Python's codec name for a declared charset ``label``; None when unknown (``utf8mb4``,
    ``x-user-defined``) or not a text encoding (``base64``, ``rot13``, ``unicode_escape``)."""
    if not label:
        return None
    try:
        info = codecs.lookup(label.strip())
    except (LookupError, ValueError, TypeError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name.replace("_", "-") in _NOT_WEB_CHARSETS:
        return None
    return info.name


def decode_declared(payload: bytes, content_type: str) -> tuple[str, bool]:
    """``(text, fell_back)``: decode by the header charset when Python has a text codec for it, else UTF-8
    with replacement; ``fell_back`` is True when a label was declared but could not be used."""
    label = header_charset(content_type)
    codec = text_codec(label)
    if codec is not None:
        try:
            return payload.decode(codec, errors="replace"), False
        except (UnicodeError, LookupError):  # a codec that supports no error handler
            pass
    return payload.decode("utf-8", errors="replace"), label is not None
