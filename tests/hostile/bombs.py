"""Gzip-bomb WARC files built in O(output on disk): a deflate block of ``chunk`` repeated bytes is emitted
once after a full flush and then repeated, since a full flush resets the compressor's state."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

_CHUNK = 1 << 20
_EMPTY_FINAL_BLOCK = b"\x03\x00"  # BFINAL=1, fixed Huffman, end-of-block: closes a byte-aligned stream


def gzip_repeated(prefix: bytes, byte: bytes, n_mib: int, suffix: bytes) -> bytes:
    """One gzip member inflating to ``prefix + byte * (n_mib << 20) + suffix`` (``byte``: a short pattern)."""
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = byte * _CHUNK
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    body = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    tail = c.compress(suffix) + c.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(prefix)
    for _ in range(n_mib):
        crc = zlib.crc32(chunk, crc)
    crc = zlib.crc32(suffix, crc)
    size = len(prefix) + n_mib * len(chunk) + len(suffix)
    return head + body * n_mib + tail + _EMPTY_FINAL_BLOCK + struct.pack("<II", crc, size & 0xFFFFFFFF)


def _warc_head(url: str, block_len: int) -> bytes:
    return (
        "WARC/1.0\r\nWARC-Type: response\r\n"
        f"WARC-Target-URI: {url}\r\nWARC-Date: 2026-01-01T00:00:00Z\r\n"
        f"WARC-Record-ID: <urn:uuid:00000000-0000-0000-0000-{abs(hash(url)) % 10**12:012d}>\r\n"
        f"Content-Type: application/http; msgtype=response\r\nContent-Length: {block_len}\r\n\r\n"
    ).encode()


def _http_head(body_len: int, encoding: str = "") -> bytes:
    extra = f"Content-Encoding: {encoding}\r\n" if encoding else ""
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n{extra}Content-Length: {body_len}\r\n\r\n"
    ).encode()


def bomb_record(url: str, n_mib: int) -> bytes:
    """A response record whose gzip member (a few KB per GiB) inflates to ``n_mib`` MiB of payload."""
    http = _http_head(n_mib * _CHUNK)
    return gzip_repeated(_warc_head(url, len(http) + n_mib * _CHUNK) + http, b"a", n_mib, b"\r\n\r\n")


def nested_bomb_record(url: str, n_mib: int) -> bytes:
    """A response record of a few KB whose HTTP body (Content-Encoding: gzip) inflates to ``n_mib`` MiB."""
    inner = gzip_repeated(b"", b"a", n_mib, b"")
    http = _http_head(len(inner), "gzip")
    return gzip.compress(_warc_head(url, len(http) + len(inner)) + http + inner + b"\r\n\r\n", 9)


def small_record(url: str, body: bytes) -> bytes:
    http = _http_head(len(body))
    return gzip.compress(_warc_head(url, len(http) + len(body)) + http + body + b"\r\n\r\n")


def write(path: Path, *members: bytes) -> Path:
    path.write_bytes(b"".join(members))
    return path


def chunked_bomb_record(url: str, n_mib: int) -> bytes:
    """A response record kept with ``Transfer-Encoding: chunked``: one chunk of ``n_mib`` MiB."""
    size = n_mib * _CHUNK
    http = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n"
    head = http + f"{size:x}\r\n".encode()
    tail = b"\r\n0\r\n\r\n"
    block_len = len(head) + size + len(tail)
    return gzip_repeated(_warc_head(url, block_len) + head, b"a", n_mib, tail + b"\r\n\r\n")


def header_line_bomb(n_mib: int) -> bytes:
    """A WARC record whose first header line never ends (``n_mib`` MiB)."""
    return gzip_repeated(b"WARC/1.0\r\nWARC-Type: response\r\nX-Long: ", b"a", n_mib, b"\r\n\r\n")


def header_count_bomb(n_mib: int) -> bytes:
    """A response record with ``n_mib`` MiB of short HTTP header lines."""
    line = b"X: ab\r\n"
    http = b"HTTP/1.1 200 OK\r\n"
    block_len = len(http) + n_mib * len(line) * _CHUNK + 2
    return gzip_repeated(_warc_head("http://headers.test/", block_len) + http, line, n_mib, b"\r\n\r\n\r\n")
