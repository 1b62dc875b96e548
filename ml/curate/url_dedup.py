"""URL-level dedup: one document per normalised URL, the most recent fetch wins
(Llama 3 paper §3.1.1: "keep the most recent").

Normalisation (``normalize_url``) makes URLs that a server treats as the same page compare equal:

* scheme and host lowercased, a trailing dot on the host removed, the default port (http 80, https 443) dropped;
* the fragment dropped (never sent to the server);
* tracking parameters removed (``utm_*``, ``fbclid``, ``gclid``, ... see ``UrlDedupConfig``), the remaining
  query parameters sorted (stable for repeated keys) and re-encoded;
* runs of ``/`` in the path collapsed, ``.``/``..`` segments resolved, ``%xx`` escapes upper-cased;
* trailing-slash rule: an empty path becomes ``/``; a non-root path loses its trailing slash
  (``/docs/`` == ``/docs``) when ``strip_trailing_slash`` is set (default), because servers (and the local
  web) redirect one to the other; the root ``/`` is kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pandas as pd

from ml.config import StageConfig
from ml.curate.steps import StepResult, empty_dropped, make_dropped

_DEFAULT_PORTS = {"http": 80, "https": 443}
_PCT = re.compile(r"%[0-9a-fA-F]{2}")


@dataclass(frozen=True)
class UrlDedupConfig(StageConfig):
    """URL normalisation rules; none are published in the paper, all chosen (see module docstring)."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"tiny": {}, "small": {}, "8b": {}, "70b": {}, "405b": {}}

    tracking_prefixes: tuple[str, ...] = ("utm_",)  # chosen: Google Analytics campaign tags
    tracking_params: tuple[str, ...] = (
        "fbclid", "gclid", "dclid", "msclkid", "yclid", "mc_cid", "mc_eid", "_ga", "igshid",
    )  # fmt: skip  # chosen: click ids of the big ad/mail platforms; never change page content
    strip_trailing_slash: bool = True  # chosen: /a/ and /a serve the same page on almost every server
    strip_www: bool = False  # chosen: www.x.org and x.org may be different sites; opt in per crawl


def _remove_dot_segments(path: str) -> str:
    out: list[str] = []
    for seg in path.split("/"):
        if seg == "..":
            if len(out) > 1:
                out.pop()
        elif seg != ".":
            out.append(seg)
    if path.endswith(("/.", "/..")):
        out.append("")
    return "/".join(out)


def normalize_url(url: str, cfg: UrlDedupConfig | None = None) -> str:
    """Canonical form of ``url`` for dedup (rules in the module docstring); ValueError if it has no host."""
    cfg = cfg or UrlDedupConfig()
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if not scheme or not host:
        raise ValueError(f"not an absolute URL: {url!r}")
    if cfg.strip_www and host.startswith("www."):
        host = host[4:]
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port = parts.port  # raises ValueError on a non-numeric port
    netloc = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    if parts.username is not None:
        netloc = f"{parts.username}{':' + parts.password if parts.password else ''}@{netloc}"

    path = _PCT.sub(lambda m: m.group(0).upper(), parts.path)
    path = re.sub(r"/{2,}", "/", path)
    path = _remove_dot_segments(path) if path else "/"
    if not path.startswith("/"):
        path = "/" + path
    if cfg.strip_trailing_slash and len(path) > 1:
        path = path.rstrip("/") or "/"

    prefixes = tuple(p.lower() for p in cfg.tracking_prefixes)
    drop = {p.lower() for p in cfg.tracking_params}
    pairs = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if not k.lower().startswith(prefixes) and k.lower() not in drop
    ]
    query = urlencode(sorted(pairs, key=lambda kv: kv[0]))  # stable: repeated keys keep their order
    return urlunsplit((scheme, netloc, path, query, ""))


def url_dedup(df: pd.DataFrame, cfg: UrlDedupConfig) -> StepResult:
    """Keep the most recent ``fetch_time`` per normalised URL (ties: smallest id); adds column ``url_norm``.

    Dropped rows: ``duplicate_url`` (detail = id of the kept copy) and ``invalid_url`` (no scheme/host).
    """
    missing = [c for c in ("id", "url", "fetch_time") if c not in df.columns]
    if missing:
        raise KeyError(f"url_dedup: input lacks column(s) {', '.join(missing)}; has {', '.join(df.columns)}")
    try:
        times = pd.to_datetime(df["fetch_time"], utc=True, format="ISO8601")
    except (ValueError, TypeError) as exc:
        raise ValueError(f"url_dedup: column fetch_time is not ISO-8601: {exc}") from exc

    norm: list[str | None] = []
    for u in df["url"]:
        try:
            norm.append(normalize_url(str(u), cfg))
        except ValueError:
            norm.append(None)
    work = pd.DataFrame(
        {"pos": range(len(df)), "norm": norm, "time": times.to_numpy(), "id": df["id"].astype(str).to_numpy()}
    )
    invalid = work["norm"].isna().to_numpy()
    valid = work[~invalid].sort_values(["norm", "time", "id"], ascending=[True, False, True], kind="stable")
    first = ~valid["norm"].duplicated(keep="first")
    winner_id = valid["id"].where(first).groupby(valid["norm"]).transform("first")
    keep_pos = valid.loc[first.to_numpy(), "pos"].sort_values().to_numpy()
    dup = valid[~first.to_numpy()].sort_values("pos")

    kept = df.iloc[keep_pos].copy()
    kept["url_norm"] = work["norm"].iloc[keep_pos].to_numpy()
    kept = kept.reset_index(drop=True)
    parts = []
    if len(dup):
        parts.append(make_dropped(df.iloc[dup["pos"].to_numpy()], "duplicate_url", winner_id.loc[dup.index]))
    if invalid.any():
        parts.append(make_dropped(df[invalid], "invalid_url", "no scheme or host"))
    dropped = pd.concat(parts, ignore_index=True) if parts else empty_dropped()
    stats = {"urls_unique": int(first.sum()), "duplicate_urls": len(dup), "invalid_urls": int(invalid.sum())}
    return StepResult(kept=kept, dropped=dropped, stats=stats)
