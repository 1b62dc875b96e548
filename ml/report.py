"""The lifecycle report: headline figures of every stage on one page, as standalone HTML and as markdown.

A report is a list of :class:`Section`, each with short notes, tables and PNG plots. :func:`render_html`
writes one self-contained page (plots inlined as base64, every text escaped), the file a person opens or
mails; :func:`render_markdown` the same content for a Dagster metadata panel (plots as data URIs, which the
UI shows). Both are deterministic for the same sections, so the report's md5 changes only with its content.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import math
from collections.abc import Sequence
from typing import Any


@dataclasses.dataclass(frozen=True)
class Table:
    caption: str
    header: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    def __post_init__(self) -> None:
        for i, row in enumerate(self.rows):
            if len(row) != len(self.header):
                raise ValueError(
                    f"Table {self.caption!r}: row {i} has {len(row)} cells, the header {len(self.header)}"
                )


@dataclasses.dataclass(frozen=True)
class Plot:
    caption: str
    png: bytes

    def __post_init__(self) -> None:
        if not self.png.startswith(b"\x89PNG\r\n\x1a\n"):
            raise ValueError(f"Plot {self.caption!r}: not a PNG file")


@dataclasses.dataclass(frozen=True)
class Section:
    title: str
    notes: tuple[str, ...] = ()
    tables: tuple[Table, ...] = ()
    plots: tuple[Plot, ...] = ()


def fmt(value: Any) -> str:
    """A cell as text: floats with 4 significant digits (scientific when very large or small), NaN as '—'."""
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _html_table(t: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(fmt(c))}</td>" for c in row) + "</tr>" for row in t.rows
    )
    return f"<table><caption>{html.escape(t.caption)}</caption><tr>{head}</tr>{body}</table>"


_STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "th{background:#f3f3f3}caption{text-align:left;font-weight:bold;padding:4px 0}"
    "figure{display:inline-block;margin:0.5em}img{max-width:520px}section{border-top:1px solid #ddd}"
)


def render_html(title: str, sections: Sequence[Section], subtitle: str = "") -> str:
    """One self-contained HTML page."""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
    ]
    if subtitle:
        parts.append(f"<p>{html.escape(subtitle)}</p>")
    for s in sections:
        parts.append(f"<section><h2>{html.escape(s.title)}</h2>")
        parts += [f"<p>{html.escape(n)}</p>" for n in s.notes]
        parts += [_html_table(t) for t in s.tables]
        parts += [
            f"<figure><img alt='{html.escape(p.caption)}' src='{_data_uri(p.png)}'>"
            f"<figcaption>{html.escape(p.caption)}</figcaption></figure>"
            for p in s.plots
        ]
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "".join(parts)


def _md_cell(value: Any) -> str:
    return fmt(value).replace("|", "\\|").replace("\n", " ")


def render_markdown(sections: Sequence[Section]) -> str:
    """The same sections as markdown (tables as pipe tables, plots as data-URI images)."""
    out: list[str] = []
    for s in sections:
        out.append(f"### {s.title}")
        out += [n for n in s.notes]
        for t in s.tables:
            out.append(f"**{t.caption}**\n")
            out.append("| " + " | ".join(_md_cell(h) for h in t.header) + " |")
            out.append("|" + "---|" * len(t.header))
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
            out.append("")
        out += [f"![{p.caption}]({_data_uri(p.png)})" for p in s.plots]
    return "\n".join(out) + "\n"
