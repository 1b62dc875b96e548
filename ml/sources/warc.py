"""WARC/WET I/O: read records back as :class:`WebRecord`, write crawl output with :class:`WarcSink`.

Reading uses ``warcio.ArchiveIterator`` (gzip or plain WARC, Common Crawl WET included). A fault
(truncated gzip, malformed header, short record) becomes a :class:`WarcFormatError` that names the file
and the byte offset of the record where reading stopped. Writing produces rotated gzip WARC files, one
gzip member per record, with a warcinfo record at the head of each file.
"""

from __future__ import annotations

import bisect
import glob
import hashlib
import io
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from warcio.archiveiterator import ArchiveIterator
from warcio.bufferedreaders import BufferedReader, DecompressingBufferedReader
from warcio.exceptions import ArchiveLoadFailed
from warcio.statusandheaders import StatusAndHeaders, StatusAndHeadersParserException
from warcio.warcwriter import WARCWriter

from ml.config import ConfigError
from ml.sources.field_checks import check_name
from ml.sources.records import DEFAULT_MAX_PAYLOAD_BYTES, WebRecord

# Record types handed to extraction; request/metadata/warcinfo/revisit are skipped.
_TEXT_RECORD_TYPES = ("response", "conversion", "resource")
_READ_CHUNK = 1 << 16
_MAX_OUT = 1 << 20  # inflated bytes per decompress call: the reader's memory bound per read
_WARCIO_BLOCK = 1 << 14  # warcio's own block size
# chosen: WARC + HTTP headers of one record; servers refuse header blocks over 8-64 KiB, 1 MiB keeps
# any real one
MAX_HEADER_BYTES = 1 << 20


class WarcFormatError(ValueError):
    """A WARC/WET file is malformed; ``path`` and ``offset`` locate the record where reading failed."""

    def __init__(self, path: Path | str, offset: int, detail: str):
        self.path = Path(path)
        self.offset = int(offset)
        self.detail = detail
        super().__init__(f"{path}: malformed WARC record at byte offset {offset}: {detail}")


class _HeaderBoundedReader(DecompressingBufferedReader):
    """warcio's record reader with header reading bounded. warcio grows a header line by concatenating
    16 KiB pieces (a 64 MiB line took 105 s) and keeps every header line it reads; here the lines read for
    one record (blank lines before it, its WARC and HTTP headers) may hold ``MAX_HEADER_BYTES`` in all,
    more is a malformed record. ``new_record`` starts the count for the next record."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._header_bytes = 0

    def new_record(self) -> None:
        self._header_bytes = 0

    def readline(self, length=None):
        left = MAX_HEADER_BYTES - self._header_bytes
        limit = left if length is None else min(length, left)
        parts: list[bytes] = []
        n = 0
        while n < limit:
            self._fillbuff()
            if self.empty():
                break
            parts.append(self.buff.readline(limit - n))
            n += len(parts[-1])
            if parts[-1].endswith(b"\n"):
                break
        line = b"".join(parts)
        self._header_bytes += n
        if n >= left and not line.endswith(b"\n"):
            raise ValueError(f"the headers of one record run over {MAX_HEADER_BYTES} bytes")
        return line


class _ArchiveIterator(ArchiveIterator):
    def __init__(self, fileobj):
        super().__init__(fileobj)
        self.reader = _HeaderBoundedReader(self.fh, block_size=_WARCIO_BLOCK)


def _read_block(record, path: Path, offset: int) -> None:
    """Consume the raw record block, checking that it holds the full declared Content-Length."""
    stream = record.raw_stream
    while stream.read(_READ_CHUNK):
        pass
    remaining = getattr(stream, "limit", 0)
    if remaining:
        raise WarcFormatError(path, offset, f"record truncated: {remaining} byte(s) of its block are missing")


class _Dechunked:
    """HTTP chunked transfer decoding as a stream. warcio's own reader holds a whole chunk (up to 2 GiB)
    in memory; this one hands out at most ``size`` bytes per read. Faults are handled as warcio does: a
    first size line that is not hex means the body was not chunked after all (passed through raw); a
    later one, or a body cut short, ends the payload."""

    def __init__(self, raw):
        self.raw = raw
        self._left = 0  # bytes left in the current chunk
        self._first = True
        self._done = False
        self._plain = False
        self._pending = b""

    def _next_chunk(self) -> None:
        line = self.raw.readline(64)
        try:
            size = int(line.split(b";")[0].strip(), 16)
        except ValueError:
            self._plain, self._pending = self._first, line
            self._done = not self._first
            return
        self._first = False
        self._left = size
        self._done = size == 0

    def read(self, size: int = -1) -> bytes:
        size = _READ_CHUNK if size is None or size < 0 else size
        while True:
            if self._pending:
                out, self._pending = self._pending[:size], self._pending[size:]
                return out
            if self._plain:
                return self.raw.read(size)
            if self._done:
                return b""
            if self._left:
                break
            self._next_chunk()
        out = self.raw.read(min(size, self._left))
        self._left -= len(out)
        if not out:
            self._done = True
        elif not self._left and self.raw.read(2) != b"\r\n":
            self._done = True
        return out


def _content_stream(record):
    """The decoded HTTP entity body: warcio's ``content_stream``, chunked bodies de-chunked as a stream."""
    if record.http_headers.get_header("transfer-encoding") != "chunked":
        return record.content_stream()
    stream = _Dechunked(record.raw_stream)
    encoding = (record.http_headers.get_header("content-encoding") or "").lower()
    if encoding in BufferedReader.get_supported_decompressors():
        return BufferedReader(stream, decomp_type=encoding)
    return stream


def _read_capped(stream, cap: int) -> tuple[bytes, bool]:
    """At most ``cap`` bytes of ``stream`` and whether there were more (read in chunks; cap + 1 held)."""
    buf = bytearray()
    while len(buf) <= cap:
        chunk = stream.read(min(_READ_CHUNK, cap + 1 - len(buf)))
        if not chunk:
            return bytes(buf), False
        buf += chunk
    del buf[cap:]
    return bytes(buf), True


def _to_web_record(record, path: Path, offset: int, cap: int) -> WebRecord | None:
    headers = record.rec_headers
    rec_type = headers.get_header("WARC-Type")
    length = headers.get_header("Content-Length")
    if not rec_type:
        raise WarcFormatError(path, offset, "record has no WARC-Type header")
    if length is None or not length.strip().isdigit():
        raise WarcFormatError(
            path, offset, f"record has a missing or non-numeric Content-Length ({length!r})"
        )
    if rec_type not in _TEXT_RECORD_TYPES or (rec_type == "response" and record.http_headers is None):
        _read_block(record, path, offset)  # skipped records are still checked for truncation
        return None
    if rec_type == "response":
        status_code = record.http_headers.get_statuscode() or ""
        if not status_code.isdigit():
            raise WarcFormatError(
                path, offset, f"HTTP status line {record.http_headers.statusline!r} has no status code"
            )
        status: int | None = int(status_code)
        content_type = record.http_headers.get_header("Content-Type") or ""
        payload, truncated = _read_capped(_content_stream(record), cap)  # de-chunked, decoded
    else:
        status = None
        content_type = "text/plain" if rec_type == "conversion" else (record.content_type or "")
        payload, truncated = _read_capped(record.raw_stream, cap)
    _read_block(record, path, offset)  # the rest of an over-cap record is drained, not held or HTTP-decoded
    return WebRecord(
        url=headers.get_header("WARC-Target-URI") or "",
        fetch_time=headers.get_header("WARC-Date") or "",
        record_type=rec_type,
        content_type=content_type,
        http_status=status,
        payload=payload,
        warc_file=str(path),
        offset=offset,
        record_id=headers.get_header("WARC-Record-ID") or "",
        truncated=truncated,
    )


class _GzipMemberReader:
    """Decompress a multi-member gzip file strictly, remembering where each member starts.

    warcio's own gzip reader tolerates truncated or corrupt members (it logs to stderr and returns less
    data); here either fault raises :class:`WarcFormatError` at the compressed offset of the member.
    Memory: one compressed chunk and at most ``_MAX_OUT`` inflated bytes, whatever the member inflates to;
    time: linear in the inflated size (a read hands out a slice, the buffer is never re-copied).
    """

    def __init__(self, fh, path: Path):
        self.fh = fh
        self.path = path
        self._starts: list[int] = []  # uncompressed start of each member, ascending
        self._offsets: list[int] = []  # compressed start of the same member
        self._decomp = None
        self._in = b""  # compressed bytes read from the file and not yet consumed
        self._fed = 0  # compressed bytes consumed so far
        self._out = 0  # uncompressed bytes produced so far
        self._buf = b""
        self._pos = 0  # bytes of _buf already handed out
        self._eof = False

    def _fill(self) -> None:
        if self._decomp is None:
            self._in = self._in or self.fh.read(_READ_CHUNK)
            if not self._in:
                self._eof = True
                return
            self._starts.append(self._out)
            self._offsets.append(self._fed)
            self._decomp = zlib.decompressobj(16 + zlib.MAX_WBITS)
        fed_now = not self._in
        if fed_now:
            self._in = self.fh.read(_READ_CHUNK)
        try:
            out = self._decomp.decompress(self._in, _MAX_OUT)
        except zlib.error as exc:
            raise WarcFormatError(self.path, self._offsets[-1], f"corrupt gzip data ({exc})") from exc
        rest = self._decomp.unused_data if self._decomp.eof else self._decomp.unconsumed_tail
        self._fed += len(self._in) - len(rest)
        if fed_now and not self._in and not out and not self._decomp.eof:
            raise WarcFormatError(
                self.path, self._offsets[-1], "truncated gzip member (unexpected end of file)"
            )
        self._in = rest
        if self._decomp.eof:
            self._decomp = None
        self._out += len(out)
        self._buf, self._pos = out, 0

    def read(self, size: int = -1) -> bytes:
        while self._pos >= len(self._buf) and not self._eof:
            self._fill()
        if size is None or size < 0:
            size = len(self._buf) - self._pos
        out = self._buf[self._pos : self._pos + size]
        self._pos += len(out)
        return out

    def tell(self) -> int:
        return self._out - (len(self._buf) - self._pos)

    def compressed_offset(self, offset: int) -> int:
        """Compressed offset of the member holding uncompressed ``offset``."""
        i = bisect.bisect_right(self._starts, offset) - 1
        return self._offsets[i] if i >= 0 else 0


_PARSE_ERRORS = (
    WarcFormatError,
    ArchiveLoadFailed,
    StatusAndHeadersParserException,
    EOFError,
    OSError,
    ValueError,
    UnicodeDecodeError,
)


def _as_format_error(exc: Exception, path: Path, offset: int) -> WarcFormatError:
    if isinstance(exc, WarcFormatError):
        return exc
    return WarcFormatError(path, offset, f"{type(exc).__name__}: {exc}".strip())


def _check_cap(max_payload_bytes: int) -> None:
    if type(max_payload_bytes) is not int or max_payload_bytes <= 0:
        raise ConfigError(f"WARC reader: max_payload_bytes must be an int > 0, got {max_payload_bytes!r}")


def iter_records(path: Path | str, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> Iterator[WebRecord]:
    """Yield the response / WET conversion / resource records of one WARC or WET file (gzip or not).

    Raises :class:`WarcFormatError` (file + byte offset) on the first malformed record; records before
    it have already been yielded. Offsets are byte offsets in the file as stored (the gzip member start
    for ``.warc.gz``), the same numbers :class:`WarcSink` returns. A payload is held up to
    ``max_payload_bytes`` (decoded); past it the record comes with ``truncated=True`` and the rest of its
    block is read through without being held, so memory stays at the cap plus ~20 MB of buffers.
    """
    _check_cap(max_payload_bytes)
    return _iter_records(Path(path), max_payload_bytes)


def _iter_records(path: Path, max_payload_bytes: int) -> Iterator[WebRecord]:
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise WarcFormatError(path, 0, f"cannot open file ({exc})") from exc
    try:
        gz = _GzipMemberReader(fh, path) if fh.read(2) == b"\x1f\x8b" else None
        fh.seek(0)
        it = _ArchiveIterator(gz if gz is not None else fh)

        def where() -> int:
            return gz.compressed_offset(it.offset) if gz is not None else it.offset

        while True:
            offset = where()
            it.reader.new_record()
            try:
                record = next(it, None)
                if record is None:
                    return
                offset = where()
                web = _to_web_record(record, path, offset, max_payload_bytes)
            except _PARSE_ERRORS as exc:
                raise _as_format_error(exc, path, offset) from exc
            if web is not None:
                yield web
            try:  # advance now, so a fault in the next record reports that record's offset
                it.read_to_end()
            except _PARSE_ERRORS as exc:
                raise _as_format_error(exc, path, where()) from exc
    finally:
        fh.close()


def iter_many(
    paths: Sequence[Path | str],
    errors: list[WarcFormatError],
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> Iterator[WebRecord]:
    """Stream every file's records; a bad file costs its records from the fault on, appended to ``errors``.

    Memory stays bounded by one capped payload (see ``iter_records``), so multi-GB Common Crawl files and
    gzip bombs can be ingested.
    """
    _check_cap(max_payload_bytes)
    return _iter_many(paths, errors, max_payload_bytes)


def _iter_many(
    paths: Sequence[Path | str], errors: list[WarcFormatError], max_payload_bytes: int
) -> Iterator[WebRecord]:
    for p in paths:
        try:
            yield from iter_records(p, max_payload_bytes)
        except WarcFormatError as exc:
            errors.append(exc)


def read_many(
    paths: Sequence[Path | str], max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
) -> tuple[list[WebRecord], list[WarcFormatError]]:
    """Read every file into memory (small inputs and tests); see ``iter_many`` for streaming."""
    errors: list[WarcFormatError] = []
    return list(iter_many(paths, errors, max_payload_bytes)), errors


def expand_warc_paths(patterns: Sequence[str | Path]) -> list[Path]:
    """Expand file paths and glob patterns into a sorted, de-duplicated list of existing files."""
    out: set[Path] = set()
    for pattern in patterns:
        pattern = str(pattern)
        matches = [Path(m) for m in glob.glob(pattern, recursive=True)]
        matches = [m for m in matches if m.is_file()]
        if not matches:
            raise FileNotFoundError(f"WARC input pattern {pattern!r} matches no file")
        out.update(matches)
    return sorted(out)


def stored_names(paths: Sequence[Path]) -> dict[Path, str]:
    """A unique file name for each input WARC when copied into one folder.

    A base name shared by several inputs (``a/CC.warc.gz`` and ``b/CC.warc.gz``) gets an 8-hex prefix from
    the md5 of its full resolved path, so no input overwrites another; a unique base name is kept."""
    counts: dict[str, int] = {}
    for p in paths:
        counts[Path(p).name] = counts.get(Path(p).name, 0) + 1
    names: dict[Path, str] = {}
    for p in paths:
        name = Path(p).name
        if counts[name] > 1:
            name = f"{hashlib.md5(str(Path(p).resolve()).encode()).hexdigest()[:8]}-{name}"
        names[Path(p)] = name
    return names


@dataclass(frozen=True)
class FetchedResponse:
    """One HTTP exchange as the crawler saw it, ready to be archived."""

    url: str
    request_line: str  # "GET /path HTTP/1.1"
    request_headers: list[tuple[str, str]]
    status_line: str  # "200 OK"
    protocol: str  # "HTTP/1.1"
    response_headers: list[tuple[str, str]]
    body: bytes  # entity body as received (Content-Encoding kept)
    peer_ip: str
    fetch_ms: int
    depth: int
    outlinks: int
    robots: str  # "allowed" | "disallowed"


class WarcSink:
    """Thread-safe writer of rotated gzip WARC files ``<prefix>-00000.warc.gz`` under ``out_dir``.

    Each :meth:`write` appends request, response and metadata records linked by WARC-Concurrent-To and
    returns ``(warc_file, offset)`` of the response record. A file is closed and the next one started once
    it reaches ``max_file_bytes``.
    """

    def __init__(
        self, out_dir: Path, prefix: str = "crawl", max_file_bytes: int = 1 << 30, software: str = ""
    ):
        if type(max_file_bytes) is not int or max_file_bytes <= 0:
            raise ConfigError(f"WarcSink.max_file_bytes must be an int > 0, got {max_file_bytes!r}")
        check_name("WarcSink.prefix", prefix)
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.max_file_bytes = max_file_bytes
        self.software = software or "llama-lifecycle ml.sources.warc"
        self.files: list[Path] = []
        self._fh: io.BufferedWriter | None = None
        self._writer: WARCWriter | None = None
        self._lock = threading.Lock()

    def _open_next(self) -> None:
        self._close_current()
        path = self.out_dir / f"{self.prefix}-{len(self.files):05d}.warc.gz"
        self._fh = open(path, "wb")
        self._writer = WARCWriter(self._fh, gzip=True)
        info = {"software": self.software, "format": "WARC File Format 1.0", "robots": "classic"}
        self._writer.write_record(self._writer.create_warcinfo_record(path.name, info))
        self.files.append(path)

    def _close_current(self) -> None:
        if self._fh is not None:
            self._fh.close()
        self._fh = None
        self._writer = None

    def write(self, fetched: FetchedResponse) -> tuple[str, int]:
        with self._lock:
            if self._fh is None or self._fh.tell() >= self.max_file_bytes:
                self._open_next()
            assert self._writer is not None and self._fh is not None
            w = self._writer
            http_resp = StatusAndHeaders(
                fetched.status_line, fetched.response_headers, protocol=fetched.protocol
            )
            resp = w.create_warc_record(
                fetched.url,
                "response",
                payload=io.BytesIO(fetched.body),
                length=len(fetched.body),
                http_headers=http_resp,
                warc_headers_dict={"WARC-IP-Address": fetched.peer_ip},
            )
            resp_id = resp.rec_headers.get_header("WARC-Record-ID")
            date = resp.rec_headers.get_header("WARC-Date")
            method, _, rest = fetched.request_line.partition(" ")
            target, _, proto = rest.rpartition(" ")
            req = w.create_warc_record(
                fetched.url,
                "request",
                http_headers=StatusAndHeaders(f"{method} {target}", fetched.request_headers, protocol=proto),
                warc_headers_dict={"WARC-Concurrent-To": resp_id, "WARC-Date": date},
            )
            fields = (
                f"fetchTimeMs: {fetched.fetch_ms}\r\ndepth: {fetched.depth}\r\n"
                f"outlinks: {fetched.outlinks}\r\nrobots: {fetched.robots}\r\n"
            ).encode()
            meta = w.create_warc_record(
                fetched.url,
                "metadata",
                payload=io.BytesIO(fields),
                length=len(fields),
                warc_content_type="application/warc-fields",
                warc_headers_dict={"WARC-Concurrent-To": resp_id, "WARC-Date": date},
            )
            w.write_record(req)
            offset = self._fh.tell()
            w.write_record(resp)
            w.write_record(meta)
            return str(self.files[-1]), offset

    def close(self) -> None:
        with self._lock:
            self._close_current()

    def __enter__(self) -> WarcSink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
