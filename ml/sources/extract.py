"""HTML → main text, charset detection and language id: the first curation step after the crawl.

``extract_documents`` turns :class:`~ml.sources.records.WebRecord` objects (WARC responses or WET conversions)
into the document table. HTML goes through trafilatura with code blocks and math kept (Llama 3 paper §3.1.1:
the parser "keeps math and code structure" and drops markdown markers); pages where trafilatura finds
nothing but the HTML has text (e.g. groff-rendered man pages, bare directory listings) fall back to a plain
lxml text walk, and the ``extractor`` column says which one produced the text. WET ``text/plain`` records
pass through. Every record that does not become a document is in ``dropped`` with a reason; a record that
makes a step raise is dropped as ``record_error`` (WARC file@offset and the error), never the batch.
"""

from __future__ import annotations

import codecs
import collections
import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, ClassVar

import lxml.etree
import lxml.html
import pandas as pd
import trafilatura

from ml.config import ConfigError, StageConfig
from ml.curate.steps import StepResult, empty_dropped, make_dropped
from ml.sources.field_checks import check_fields
from ml.sources.langid import language_identifier
from ml.sources.records import DEFAULT_MAX_PAYLOAD_BYTES, WebRecord, header_charset, text_codec

KEPT_COLUMNS: tuple[str, ...] = (
    "id", "url", "text", "lang", "lang_score", "fetch_time", "source", "content_type",
    "warc_file", "warc_offset", "extractor", "n_chars", "n_words",
)  # fmt: skip
UNDETERMINED_LANG = "und"
_MAX_ERROR_CHARS = 500  # of an exception message kept in a record_error's detail


@dataclass(frozen=True)
class ExtractConfig(StageConfig):
    """HTML extraction, decoding and language-id settings."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # tiny: the local web has short man pages and READMEs; keep them.
        "tiny": {"min_chars": 100, "min_words": 15, "batch_size": 256},
        "small": {"min_chars": 200, "min_words": 30, "batch_size": 2000},
        "8b": {"batch_size": 10000},
        "70b": {"batch_size": 10000},
        "405b": {"batch_size": 10000},
    }

    extractor: str = "trafilatura"  # "trafilatura" (main-content extraction) | "lxml" (plain text walk)
    min_chars: int = 200  # chosen: below ~200 chars a page is navigation/stub text (the paper gives none)
    min_words: int = 30  # chosen: same reason, counted on whitespace-split words
    include_tables: bool = True  # chosen: tables carry facts (man-page option lists, API tables)
    include_code: bool = (
        True  # Llama 3 paper §3.1.1: the parser keeps code structure (<pre>/<code> blocks with newlines)
    )
    include_math: bool = True  # §3.1.1: keeps math; MathML/MathJax/KaTeX become their TeX source
    markdown_markers: bool = False  # §3.1.1: "markdown markers removed" → plain text, no '#', '```', '**'
    favor_recall: bool = True  # chosen: documentation pages are short; recall over precision
    fallback_to_lxml: bool = True  # use the lxml walk when trafilatura returns nothing for a page with text
    lang_min_score: float = 0.5  # ccNet keeps docs whose language-id confidence is >= 0.5
    keep_undetermined_lang: bool = True  # below lang_min_score: keep with lang "und" (True) or drop
    langid_max_chars: int = 5000  # chosen: the first 5K chars decide the language; bounds cost per doc
    max_payload_bytes: int = (
        DEFAULT_MAX_PAYLOAD_BYTES  # chosen: larger bodies are dumps/binaries, dropped `too_large`
    )
    max_control_char_frac: float = 0.01  # chosen: decoded text with >1% control chars is binary, not text
    batch_size: int = 1000  # records per batch yielded by iter_extract_batches (one shard per batch)
    html_types: tuple[str, ...] = ("text/html", "application/xhtml+xml")
    text_types: tuple[str, ...] = ("text/plain",)  # WET conversions and plain-text responses pass through

    def __post_init__(self) -> None:
        check_fields(
            self,
            minimum={"min_chars": 0, "min_words": 0, "lang_min_score": 0.0, "max_control_char_frac": 0.0},
            positive=("langid_max_chars", "max_payload_bytes", "batch_size"),
            maximum={"lang_min_score": 1.0, "max_control_char_frac": 1.0},
        )
        if self.extractor not in ("trafilatura", "lxml"):
            raise ConfigError(f"ExtractConfig.extractor: {self.extractor!r} is not 'trafilatura' or 'lxml'")


def doc_id(url: str, fetch_time: str) -> str:
    """Stable document id: sha1 of ``url + fetch_time`` (UTF-8), first 16 hex chars."""
    return hashlib.sha1(f"{url}{fetch_time}".encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- decoding

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


_CONTROL = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")  # C0/C1 controls except \t \n \f \r


def _control_frac(text: str) -> float:
    return len(_CONTROL.findall(text)) / len(text) if text else 0.0


def decode_payload(
    payload: bytes, content_type: str, max_control_frac: float = 0.01
) -> tuple[str, str] | None:
    """Decode ``payload`` to text; returns ``(text, encoding)`` or None when nothing gives plausible text.

    See :func:`decode_with_fallback` for the order; never raises on a charset label.
    """
    decoded = decode_with_fallback(payload, content_type, max_control_frac)
    return None if decoded is None else decoded[:2]


def decode_with_fallback(
    payload: bytes, content_type: str, max_control_frac: float = 0.01
) -> tuple[str, str, bool] | None:
    """``(text, encoding, fell_back)`` or None when nothing gives plausible text.

    Declared first (byte-order mark, the HTTP header charset, a ``<meta charset>`` in the first 4 KiB),
    then sniffed (strict UTF-8, charset_normalizer's best guess), then UTF-8 with replacement. A label
    Python has no text codec for (``utf8mb4``, ``x-user-defined``, ``base64``) is skipped. A decode that
    yields more than ``max_control_frac`` control characters is rejected (binary bytes that happen to
    decode). ``fell_back`` is True when a charset was declared but the text came from a later step.
    """
    labels: list[str] = [enc for bom, enc in _BOMS if payload.startswith(bom)]
    if (header := header_charset(content_type)) is not None:
        labels.append(header)
    if (meta := _META_CHARSET.search(payload[:4096])) is not None:
        labels.append(meta.group(1).decode("ascii", "replace"))
    declared = [c for c in map(text_codec, labels) if c is not None]
    tried: set[str] = set()
    for name in [*declared, "utf-8"]:
        if name in tried:
            continue
        tried.add(name)
        try:
            text = payload.decode(name)
        except (UnicodeError, LookupError):
            continue
        if _control_frac(text) <= max_control_frac:
            return text, name, bool(labels) and name not in declared
    for text, name in _sniffed(payload):
        if _control_frac(text) <= max_control_frac:
            return text, name, bool(labels)
    return None


def _sniffed(payload: bytes) -> Iterator[tuple[str, str]]:
    """charset_normalizer's best guess, then UTF-8 with replacement characters."""
    import charset_normalizer  # a trafilatura dependency; only needed for undeclared non-UTF-8 pages

    best = charset_normalizer.from_bytes(payload).best()
    if best is not None and best.encoding is not None and text_codec(best.encoding) is not None:
        yield str(best), text_codec(best.encoding) or "utf-8"
    yield payload.decode("utf-8", errors="replace"), "utf-8"


# ---------------------------------------------------------------------------------------------- HTML

_XML_DECL = re.compile(r"^\s*<\?xml[^>]*\?>", re.IGNORECASE)
_SKIP_TAGS = frozenset({"script", "style", "noscript", "template", "head", "svg", "iframe", "object",
                        "nav", "header", "footer", "form", "button", "select", "canvas"})  # fmt: skip
_BLOCK_TAGS = frozenset({"address", "article", "aside", "blockquote", "body", "br", "caption", "dd", "div",
                         "dl", "dt", "fieldset", "figcaption", "figure", "h1", "h2", "h3", "h4", "h5", "h6",
                         "hr", "html", "li", "main", "ol", "p", "pre", "section", "table", "tbody", "tfoot",
                         "thead", "tr", "ul"})  # fmt: skip
_CELL_TAGS = frozenset({"td", "th"})  # cells of one row stay on one line, separated by a space
_WS = re.compile(r"[ \t\r\f\v\u00a0]+")


def parse_html(text: str) -> lxml.html.HtmlElement | None:
    """Parse decoded HTML into an lxml tree (comments removed); None for an empty document."""
    text = _XML_DECL.sub("", text, count=1)
    if not text.strip():
        return None
    parser = lxml.html.HTMLParser(encoding="utf-8", remove_comments=True, remove_pis=True)
    try:
        return lxml.html.document_fromstring(text.encode("utf-8", "surrogatepass"), parser=parser)
    except (lxml.etree.ParserError, ValueError):
        return None


def _replace_with_text(el: lxml.html.HtmlElement, text: str) -> None:
    """Swap ``el`` for a <span> holding ``text`` (keeps the tail so surrounding prose is intact)."""
    span = lxml.html.Element("span")
    span.text = text
    span.tail = el.tail
    parent = el.getparent()
    if parent is not None:
        parent.replace(el, span)


def _tex_of(el: lxml.html.HtmlElement) -> str:
    for ann in el.iter("{*}annotation", "annotation"):
        if "tex" in (ann.get("encoding") or "").lower() and ann.text:
            return ann.text.strip()
    alt = el.get("alttext") or el.get("alt")
    if alt:
        return alt.strip()
    return " ".join(el.text_content().split())


def prepare_tree(tree: lxml.html.HtmlElement, include_math: bool = True, include_code: bool = True) -> None:
    """Rewrite math markup to its TeX source (``$...$``/``$$...$$``) in place; drop code when asked.

    MathML ``<math>`` (alttext or TeX annotation), KaTeX spans, MathJax ``<script type="math/tex">`` and
    ``<img class="...tex...">`` with an alt text all become plain text so trafilatura keeps them.
    """
    if include_math:
        for el in list(tree.iter("script")):
            kind = (el.get("type") or "").lower()
            if kind.startswith("math/tex") and el.text:
                delim = "$$" if "mode=display" in kind else "$"
                _replace_with_text(el, f"{delim}{el.text.strip()}{delim}")
        for el in list(tree.xpath("//*[contains(concat(' ', normalize-space(@class), ' '), ' katex ')]")):
            if el.getparent() is not None:
                _replace_with_text(el, f"${_tex_of(el)}$")
        for el in list(tree.iter("math", "{*}math")):
            if el.getparent() is not None:
                delim = "$$" if (el.get("display") or "").lower() == "block" else "$"
                _replace_with_text(el, f"{delim}{_tex_of(el)}{delim}")
        for el in list(tree.iter("img")):
            cls = (el.get("class") or "").lower()
            if el.get("alt") and ("tex" in cls or "math" in cls):
                _replace_with_text(el, f"${el.get('alt').strip()}$")
    if not include_code:
        for el in list(tree.iter("pre")):
            el.drop_tree()


def lxml_text(tree: lxml.html.HtmlElement) -> str:
    """Plain text walk: block elements become lines, ``<pre>`` kept verbatim, boilerplate tags skipped."""
    lines: list[str] = []
    buf: list[str] = []

    def flush() -> None:
        line = _WS.sub(" ", "".join(buf)).strip()
        if line:
            lines.append(line)
        buf.clear()

    # iterative walk: events are ("start", el) / ("end", el) / ("tail", el)
    stack: list[tuple[str, Any]] = [("start", tree)]
    while stack:
        event, el = stack.pop()
        if event == "tail":
            if el.tail:
                buf.append(el.tail.replace("\n", " "))
            continue
        tag = el.tag if isinstance(el.tag, str) else ""
        if event == "end":
            if tag in _BLOCK_TAGS:
                flush()
            continue
        if tag in _SKIP_TAGS:
            continue
        if tag in _BLOCK_TAGS:
            flush()
        elif tag in _CELL_TAGS:
            buf.append(" ")
        if tag == "pre":
            lines.extend(line.rstrip() for line in el.text_content().strip("\n").split("\n"))
            continue
        if el.text:
            buf.append(el.text.replace("\n", " "))
        stack.append(("end", el))
        for child in reversed(el):
            stack.append(("tail", child))
            stack.append(("start", child))
    flush()
    return "\n".join(lines).strip()


_TABLE_ROW = re.compile(r"^\|(.*)\|\s*$")
_RULE_CELL = re.compile(r"^:?-+:?$")


def tidy_table_rows(text: str) -> str:
    """Drop the markdown table markers trafilatura's txt output keeps: ``| a |  | b |`` → ``a | b``."""
    out: list[str] = []
    for line in text.split("\n"):
        m = _TABLE_ROW.match(line)
        if m:
            cells = [c.strip() for c in m.group(1).split("|")]
            cells = [c for c in cells if c]
            if not cells or all(_RULE_CELL.match(c) for c in cells):
                continue
            line = " | ".join(cells)
        out.append(line)
    return "\n".join(out)


def _prepared_tree(html: str, cfg: ExtractConfig) -> lxml.html.HtmlElement | None:
    tree = parse_html(html)
    if tree is not None:
        prepare_tree(tree, include_math=cfg.include_math, include_code=cfg.include_code)
    return tree


def _trafilatura_text(tree: lxml.html.HtmlElement, cfg: ExtractConfig, url: str | None) -> str:
    """trafilatura's main text of ``tree`` (which it prunes in place), table markers tidied."""
    try:
        text = trafilatura.extract(
            tree,
            url=url,
            favor_recall=cfg.favor_recall,
            include_tables=cfg.include_tables,
            include_formatting=cfg.markdown_markers,
            include_comments=False,
            include_images=False,
            include_links=False,
            deduplicate=False,  # its LRU cache would make output depend on record order
            with_metadata=False,
            output_format="markdown" if cfg.markdown_markers else "txt",
        )
    except Exception:  # a parser bug on one odd page must not stop the crawl's extraction
        text = None
    text = (text or "").strip()
    return text if cfg.markdown_markers else tidy_table_rows(text)


def extract_html(html: str, cfg: ExtractConfig, url: str | None = None) -> tuple[str, str]:
    """Main text of one HTML page; returns ``(text, extractor)`` (text may be empty)."""
    tree = _prepared_tree(html, cfg)
    if tree is None:
        return "", cfg.extractor
    if cfg.extractor != "trafilatura":
        return lxml_text(tree), "lxml"
    text = _trafilatura_text(tree, cfg, url)
    if len(text) >= cfg.min_chars or not cfg.fallback_to_lxml:
        return text, "trafilatura"
    # trafilatura pruned ``tree``: the fallback walks a fresh parse (cheaper than copying every page's
    # tree up front, as only short extractions come here)
    whole = _prepared_tree(html, cfg)
    walked = lxml_text(whole) if whole is not None else ""
    return (walked, "lxml") if len(walked) > len(text) else (text, "trafilatura")


# ---------------------------------------------------------------------------------------------- language id


def identify_language(text: str, max_chars: int = 5000) -> tuple[str, float]:
    """``(iso639 code, normalised probability)`` from py3langid on the first ``max_chars`` chars (its feature
    walk compiled: :mod:`ml.sources.langid`, equal results)."""
    lang, score = language_identifier().classify(text[:max_chars])
    return str(lang), float(score)


# ---------------------------------------------------------------------------------------------- the step


def _empty_kept() -> pd.DataFrame:
    dtypes = {"lang_score": "float64", "warc_offset": "int64", "n_chars": "int64", "n_words": "int64"}
    return pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, object)) for c in KEPT_COLUMNS})


def _extract_one(rec: WebRecord, cfg: ExtractConfig) -> tuple[dict[str, Any] | None, tuple[str, str] | None]:
    """One record → (kept row, None) or (None, (reason, detail))."""
    if rec.record_type not in ("response", "conversion", "resource"):
        return None, ("not_response", f"record_type={rec.record_type}")
    status = rec.http_status
    if status is not None and status >= 400:
        return None, ("http_error", f"status={status}")
    if status is not None and 300 <= status < 400:
        return None, ("redirect", f"status={status}")
    media = _media_type(rec.content_type)
    if not media and rec.payload.lstrip()[:512].lower().startswith((b"<!doctype html", b"<html")):
        media = "text/html"  # no Content-Type header: sniff the obvious HTML case only
    is_html = media in cfg.html_types
    if not is_html and media not in cfg.text_types:
        return None, ("not_html", f"content_type={rec.content_type or '(none)'}")
    if not rec.payload.strip():
        return None, ("empty", "empty payload")
    if rec.truncated:
        return None, ("too_large", f"more than {len(rec.payload)} bytes (the reader stopped at its cap)")
    if len(rec.payload) > cfg.max_payload_bytes:
        return None, ("too_large", f"{len(rec.payload)} bytes > {cfg.max_payload_bytes}")
    decoded = decode_with_fallback(rec.payload, rec.content_type, cfg.max_control_char_frac)
    if decoded is None:
        return None, ("undecodable", f"no charset gives text (content_type={rec.content_type or '(none)'})")
    raw, _encoding, fell_back = decoded
    if is_html:
        text, extractor = extract_html(raw, cfg, url=rec.url)
    else:
        text, extractor = raw.replace("\r\n", "\n").strip(), "plain"
    if not text:
        return None, ("empty", f"no text from {extractor}")
    n_chars, n_words = len(text), len(text.split())
    if n_chars < cfg.min_chars or n_words < cfg.min_words:
        return None, ("too_short", f"{n_chars} chars, {n_words} words")
    lang, score = identify_language(text, cfg.langid_max_chars)
    if score < cfg.lang_min_score:
        if not cfg.keep_undetermined_lang:
            return None, ("lang_undetermined", f"{lang}={score:.3f} < {cfg.lang_min_score}")
        lang = UNDETERMINED_LANG
    row = {"text": text, "lang": lang, "lang_score": score, "content_type": media, "extractor": extractor,
           "n_chars": n_chars, "n_words": n_words, "charset_fallback": fell_back}  # fmt: skip
    return row, None


def _extract_batch(records: list[WebRecord], cfg: ExtractConfig, source: str) -> StepResult:
    kept_rows: list[dict[str, Any]] = []
    dropped_rows: list[dict[str, str]] = []
    counts = dict(_NO_COUNTS)
    for rec in records:
        rid = doc_id(rec.url, rec.fetch_time)
        # the file's name, as the crawl manifest has it: the path would tie the output's bytes (and md5) to
        # where the home and the crawl's version directory are
        warc_name = PurePath(rec.warc_file).name
        try:
            row, drop = _extract_one(rec, cfg)
        except Exception as exc:  # one hostile record must not fail its batch: dropped by name, counted
            error = f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_CHARS]  # a message may quote the whole page
            row, drop = None, ("record_error", f"{warc_name}@{rec.offset}: {error}")
            counts["record_errors"] += 1
        if drop is not None:
            dropped_rows.append({"id": rid, "url": rec.url, "reason": drop[0], "detail": drop[1]})
            continue
        assert row is not None
        counts["charset_fallbacks"] += row.pop("charset_fallback")
        row.update(id=rid, url=rec.url, fetch_time=rec.fetch_time, source=source, warc_file=warc_name,
                   warc_offset=int(rec.offset))  # fmt: skip
        kept_rows.append(row)
    kept = pd.DataFrame(kept_rows, columns=list(KEPT_COLUMNS)) if kept_rows else _empty_kept()
    kept = kept.astype(
        {"lang_score": "float64", "warc_offset": "int64", "n_chars": "int64", "n_words": "int64"}
    )
    dropped = (
        pd.DataFrame(dropped_rows, columns=["id", "url", "reason", "detail"])
        if dropped_rows
        else empty_dropped()
    )
    return StepResult(kept=kept, dropped=dropped, stats=_stats(kept, len(records), counts))


_NO_COUNTS = {"charset_fallbacks": 0, "record_errors": 0}


def _stats(kept: pd.DataFrame, n_records: int, counts: dict[str, int]) -> dict[str, float | int]:
    """Per-language/extractor counts; ``counts``: documents decoded by a charset fallback, record errors."""
    stats: dict[str, float | int] = {"records_in": n_records, "chars_out": int(kept["n_chars"].sum())}
    stats.update(counts)
    stats.update({f"lang/{k}": v for k, v in sorted(Counter(kept["lang"]).items())})
    stats.update({f"extractor/{k}": v for k, v in sorted(Counter(kept["extractor"]).items())})
    return stats


PARALLEL_BATCH = (
    32  # records per task when extracting on workers: small tasks keep both cores busy to the end
)
_QUEUED_PER_WORKER = 4  # tasks submitted ahead of the results read back (bounds the records held in memory)


def _record_batches(records: Iterable[WebRecord], size: int) -> Iterator[list[WebRecord]]:
    batch: list[WebRecord] = []
    for rec in records:
        if not isinstance(rec, WebRecord):
            raise TypeError(f"extract_documents: expected WebRecord, got {type(rec).__name__}")
        batch.append(rec)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def iter_extract_batches(
    records: Iterable[WebRecord], cfg: ExtractConfig, source: str
) -> Iterator[StepResult]:
    """Extract ``records`` in batches of ``cfg.batch_size``; one StepResult per batch (one shard each)."""
    for batch in _record_batches(records, cfg.batch_size):
        yield _extract_batch(batch, cfg, source)


def _worker_count(client: Any) -> int:
    if hasattr(client, "scheduler_info"):  # dask.distributed.Client
        return max(sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values()), 1)
    return max(int(getattr(client, "_max_workers", 1)), 1)  # concurrent.futures executors


def iter_extract_on(
    client: Any, records: Iterable[WebRecord], cfg: ExtractConfig, source: str
) -> Iterator[StepResult]:
    """Batches of ``PARALLEL_BATCH`` records extracted by ``client``'s workers, results in record order.

    ``client``: anything with ``submit(fn, *args) -> future`` (a ``dask.distributed.Client`` or a
    ``concurrent.futures`` executor). Records are read here and sent to the workers; the results are the
    in-process ones, batch for batch, so :func:`extract_documents` returns the same table either way.
    """
    pending: collections.deque = collections.deque()
    ahead = _QUEUED_PER_WORKER * _worker_count(client)
    for batch in _record_batches(records, min(cfg.batch_size, PARALLEL_BATCH)):
        pending.append(client.submit(_extract_batch, batch, cfg, source))
        if len(pending) > ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def extract_documents(
    records: Iterable[WebRecord], cfg: ExtractConfig, source: str, client: Any | None = None
) -> StepResult:
    """Records → documents (``KEPT_COLUMNS``) and dropped records with a reason; stats: per language and
    extractor, documents decoded by a charset fallback, record errors.

    ``client``: a Dask client or ``concurrent.futures`` executor to extract on its workers (same result);
    None extracts in this process.
    """
    if client is None:
        parts = list(iter_extract_batches(records, cfg, source))
    else:
        parts = list(iter_extract_on(client, records, cfg, source))
    if not parts:
        return StepResult(
            kept=_empty_kept(), dropped=empty_dropped(), stats=_stats(_empty_kept(), 0, _NO_COUNTS)
        )
    kept = pd.concat([p.kept for p in parts], ignore_index=True) if len(parts) > 1 else parts[0].kept
    dropped = pd.concat([p.dropped for p in parts], ignore_index=True) if len(parts) > 1 else parts[0].dropped
    # The same capture read twice (overlapping WARC files, a re-downloaded segment) has the same id.
    repeated = kept["id"].duplicated()
    if repeated.any():
        extra = make_dropped(
            kept[repeated], "duplicate_record", "same url and fetch time as an earlier record"
        )
        dropped = pd.concat([dropped, extra], ignore_index=True)
        kept = kept[~repeated].reset_index(drop=True)
    # URL order, not WARC order: a concurrent crawl writes records in a different order every run, and
    # downstream ties (MinHash keeps the longest copy, then the first) must not depend on it
    kept = kept.sort_values(["url", "fetch_time"], kind="stable").reset_index(drop=True)
    counts = {k: sum(int(p.stats[k]) for p in parts) for k in _NO_COUNTS}
    n_records = sum(len(p.kept) + len(p.dropped) for p in parts)
    return StepResult(kept=kept, dropped=dropped, stats=_stats(kept, n_records, counts))
