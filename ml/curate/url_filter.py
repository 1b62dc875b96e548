"""URL filter: documents from blocked hosts or with blocked URL patterns are dropped, each with its reason.

Llama 3 paper §3.1.1 filters out domains that are likely to contain unsafe or adult content, before
dedup. The block list ships as a versioned file (``ml/resources/url_blocklist/v<N>.txt``: ``host`` and
``pattern`` lines); a run may add hosts and patterns of its own. Runs before dedup, so a blocked page is
never the one a duplicate cluster keeps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pandas as pd

from ml.config import ConfigError, StageConfig
from ml.curate.steps import StepResult, empty_dropped, make_dropped

BLOCKLIST_DIR = Path(__file__).resolve().parent.parent / "resources" / "url_blocklist"


@dataclass(frozen=True)
class UrlFilterConfig(StageConfig):
    """Which block list and which extra hosts / patterns apply."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"tiny": {}, "small": {}, "8b": {}, "70b": {}, "405b": {}}

    blocklist_version: int = 1  # ml/resources/url_blocklist/v<N>.txt; 0 = no shipped list
    blocklist_path: str = ""  # a list file of the same format instead of the shipped one
    extra_hosts: tuple[str, ...] = ()  # blocked with their subdomains
    extra_patterns: tuple[str, ...] = ()  # regexes searched in the lowercased URL

    def __post_init__(self) -> None:
        for p in self.extra_patterns:
            try:
                re.compile(p)
            except re.error as exc:
                raise ConfigError(f"UrlFilterConfig.extra_patterns: {p!r} is not a regex ({exc})") from exc
        if self.blocklist_version < 0:
            raise ConfigError(f"UrlFilterConfig.blocklist_version: {self.blocklist_version} < 0")


@dataclass(frozen=True)
class BlockList:
    hosts: frozenset[str]
    patterns: tuple[tuple[str, re.Pattern], ...]  # (source text, compiled)
    source: str  # file the shipped entries came from ("" = none)


@cache
def read_blocklist(path: str) -> tuple[frozenset[str], tuple[str, ...]]:
    """``(hosts, patterns)`` of a list file; raises on a line that is neither."""
    hosts, patterns = set(), []
    for n, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        kind, _, value = line.partition(" ")
        if kind == "host" and value.strip():
            hosts.add(value.strip().lower().rstrip("."))
        elif kind == "pattern" and value.strip():
            patterns.append(value.strip())
        else:
            raise ValueError(f"{path}:{n}: expected 'host <domain>' or 'pattern <regex>', got {line!r}")
    return frozenset(hosts), tuple(patterns)


def load_blocklist(cfg: UrlFilterConfig) -> BlockList:
    """The shipped (or configured) list plus the run's extra hosts and patterns."""
    source = cfg.blocklist_path or (
        str(BLOCKLIST_DIR / f"v{cfg.blocklist_version}.txt") if cfg.blocklist_version else ""
    )
    if source and not Path(source).is_file():
        raise FileNotFoundError(f"URL block list {source} does not exist")
    hosts, patterns = read_blocklist(source) if source else (frozenset(), ())
    hosts = hosts | {h.lower().rstrip(".") for h in cfg.extra_hosts}
    compiled = tuple((p, re.compile(p)) for p in (*patterns, *cfg.extra_patterns))
    return BlockList(hosts=hosts, patterns=compiled, source=source)


def blocked(url: str, blocklist: BlockList) -> tuple[str, str] | None:
    """``(reason, entry)`` when the URL's host (or a parent domain) or a pattern is blocked, else None."""
    host = (urlsplit(url).hostname or "").rstrip(".")
    labels = host.split(".")
    for i in range(len(labels) - 1):
        parent = ".".join(labels[i:])
        if parent in blocklist.hosts:
            return "blocked_host", parent
    low = url.lower()
    for text, pattern in blocklist.patterns:
        if pattern.search(low):
            return "blocked_pattern", text
    return None


def filter_urls(df: pd.DataFrame, cfg: UrlFilterConfig) -> StepResult:
    """Drop documents whose URL is blocked; ``detail`` names the host or pattern that matched.

    Stats: ``blocklist_version`` (-1: a list file given by path), ``blocklist_hosts``, ``blocklist_patterns``.
    """
    blocklist = load_blocklist(cfg)
    verdicts = [blocked(u, blocklist) for u in df["url"].astype(str)]
    drop = pd.Series([v is not None for v in verdicts], index=df.index)
    dropped = (
        make_dropped(
            df[drop], pd.Series([v[0] for v in verdicts if v]), pd.Series([v[1] for v in verdicts if v])
        )
        if drop.any()
        else empty_dropped()
    )
    stats: dict[str, float | int] = {
        "blocklist_version": -1 if cfg.blocklist_path else cfg.blocklist_version,
        "blocklist_hosts": len(blocklist.hosts),
        "blocklist_patterns": len(blocklist.patterns),
    }
    return StepResult(kept=df[~drop].reset_index(drop=True), dropped=dropped, stats=stats)
