"""One fetched web record, as read back from a WARC/WET file (the unit between crawl and extract)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WebRecord:
    """A response (HTML etc.) or a WET ``conversion`` record (already plain text).

    ``content_type`` is the HTTP Content-Type for responses, ``text/plain`` for WET conversions.
    ``warc_file``/``offset`` locate the record so errors and provenance can name it.
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
