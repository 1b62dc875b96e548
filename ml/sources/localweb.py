"""The offline default web: a static site of real documentation, built here and served over loopback.

Every machine has, after install, text that nobody in this project wrote: the system manual pages (in
many languages under ``/usr/share/man/<lang>``), HTML docs shipped by packages (among them the math
manuals of maxima-doc, octave-doc, r-doc-html and python-sympy-doc), manuals shipped as TeX sources
(pari-doc, served as text), the long descriptions of installed Python packages (dist-info ``METADATA``)
and ``/usr/share/doc/*/copyright`` files.
:func:`build_site` turns them into a static site with paginated index pages, cross-links between
manual pages and a robots.txt that disallows one real section. This module only builds the site; the
local web server resource (``dagster_project/services/local_web_server.py``) serves it over HTTP so
the crawler fetches it like any other site. Duplicates stay as they are: ``.so``/symlink aliases of
one manual page and identical license texts under different packages are the same text at several URLs.

The ``large`` preset (a one-GPU ``small`` run's web) takes everything installed, plus what
``scripts/install-large-web-docs.sh`` installs: HTML trees outside ``/usr/share/doc`` (``html_doc_roots``:
LibreOffice's and GIMP's help per language, the Debian and developers' references) and GNOME's Mallard help
(source ``help_pages``: ``/usr/share/help/<lang>/<document>/*.page``, rendered by :func:`mallard_to_html`).
Measured on Debian 12 (benchmarks/NOTES.md): 166,245 pages (2.27 GB of content pages), 12 minutes on 2 cores,
~61M curated tokens.

Manual pages are rendered with ``groff -mandoc -Tutf8`` (groff-base has no HTML device) at an unbounded
line length, so each paragraph is one line, and the overstruck terminal output is turned into structured
HTML in ``<main>`` (bold → ``<b>``, underline → ``<i>``, sections → ``<h2>``/``<h3>``, paragraphs and
options → ``<p>``, synopses and examples → ``<pre>``, ``name(section)`` references → links): an extractor
then keeps NAME/SYNOPSIS/OPTIONS with their headings and no groff column layout.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import gzip
import hashlib
import html
import json
import multiprocessing
import os
import re
import shutil
import site
import subprocess
import time
import xml.etree.ElementTree as ET
import zlib
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Self
from urllib.parse import quote

from ml.config import PRESET_NAMES, ConfigError, StageConfig

SOURCES: tuple[str, ...] = ("man", "html_docs", "tex_docs", "metadata", "copyright", "help_pages")
DEFAULT_SOURCES: tuple[str, ...] = ("man", "html_docs", "tex_docs", "metadata", "copyright")
WEB_PRESET_NAMES: tuple[str, ...] = (*PRESET_NAMES, "large")
BUILD_MANIFEST = "build_manifest.json"
_FORMAT_VERSION = 2  # bump when the site layout or rendering changes, to invalidate cached builds
_MAN_NAME = re.compile(r"^(?P<name>.+)\.(?P<ext>[0-9][A-Za-z0-9_+-]*)(?:\.gz)?$")
_LINE_LENGTH = 30_000  # characters; longer than any paragraph of an installed manual page
_XREF = re.compile(r"(<[bi]>)?([A-Za-z0-9_][\w.:+@-]*)(</[bi]>)?\(([1-9][a-z]*)\)")


@dataclass(frozen=True)
class LocalWebConfig(StageConfig):
    """Which local documentation goes into the site, and how much of it."""

    sources: tuple[str, ...] = DEFAULT_SOURCES
    man_root: str = "/usr/share/man"
    doc_root: str = "/usr/share/doc"
    site_packages: tuple[str, ...] = ()  # empty: the running interpreter's site-packages
    max_man_pages_per_lang: int = 150  # translated languages (de, fr, ja, ...)
    max_man_pages_en: int = 1000  # English sections man1..man8
    max_html_docs: int = 400
    max_html_doc_bytes: int = 4 << 20  # chosen: skip bundled JS apps; a few large docs stay to test caps
    # chosen: one package's manual (octave-doc ships ~2,900 pages) must not fill the whole HTML share
    max_html_docs_per_package: int = 100
    # Manuals shipped only as TeX sources (pari-doc): served as text pages; math stays in its TeX form.
    tex_doc_dirs: tuple[str, ...] = ("/usr/share/pari/doc",)
    max_tex_docs: int = 40
    # More HTML trees beyond doc_root and site-packages, each its own /docs/<path>/ with one "package" per
    # top directory (a language for LibreOffice's and GIMP's help): per-package caps apply per language.
    html_doc_roots: tuple[str, ...] = ()
    # Mallard help (GNOME's yelp format, one <lang>/<document>/*.page tree; "C" is the English source),
    # rendered to HTML under /help/ by the "help_pages" source (not in the default sources).
    help_root: str = "/usr/share/help"
    max_help_pages: int = 1000
    max_metadata: int = 400
    max_copyright: int = 1000
    index_page_size: int = 100  # links per index page
    private_man_section: str = "man8"  # this English section is served under robots_disallow_prefix
    robots_disallow_prefix: str = "/private/"
    render_workers: int = 2
    render_timeout_s: float = 30.0

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # chosen: ~2,300 manual pages (~1,300 translated in 25 languages) + ~900 other pages; builds in
        # well under 2 minutes on 2 cores and yields ~3,000 crawlable HTML pages.
        "tiny": {},
        # Everything installed (22k English manual pages): a bigger, slower build for one-GPU runs.
        "small": {
            "max_man_pages_per_lang": 100_000,
            "max_man_pages_en": 100_000,
            "max_html_docs": 100_000,
            "max_html_docs_per_package": 100_000,
            "max_tex_docs": 100_000,
            "max_metadata": 100_000,
            "max_copyright": 100_000,
            "render_workers": 8,
        },
        # Everything "small" has plus the documentation scripts/install-large-web-docs.sh installs
        # (Python, PostgreSQL, Linux, Django, Git manuals, the Debian handbook and references, LibreOffice
        # and GIMP help in ~30 languages each, GNOME's Mallard help in ~70): a one-GPU "small" lifecycle's
        # web. Built on a GPU host's CPUs. Measured on this machine: see README "Data card".
        "large": {
            "sources": SOURCES,
            "max_man_pages_per_lang": 1_000_000,
            "max_man_pages_en": 1_000_000,
            "max_html_docs": 1_000_000,
            "max_html_docs_per_package": 1_000_000,
            "max_tex_docs": 1_000_000,
            "max_metadata": 1_000_000,
            "max_copyright": 1_000_000,
            "max_help_pages": 1_000_000,
            "html_doc_roots": (
                "/usr/share/libreoffice/help",
                "/usr/share/gimp/2.0/help",
                "/usr/share/debian-reference",
                "/usr/share/developers-reference",
            ),
            "render_workers": 16,
        },
    }

    def __post_init__(self) -> None:
        unknown = sorted(set(self.sources) - set(SOURCES))
        if unknown:
            raise ConfigError(
                f"LocalWebConfig.sources: unknown source(s) {unknown}; choose from {list(SOURCES)}"
            )
        if not (self.robots_disallow_prefix.startswith("/") and self.robots_disallow_prefix.endswith("/")):
            raise ConfigError(
                f"LocalWebConfig.robots_disallow_prefix must start and end with '/', got {self.robots_disallow_prefix!r}"
            )
        if self.index_page_size <= 0 or self.render_workers <= 0:
            raise ConfigError("LocalWebConfig.index_page_size and render_workers must be > 0")

    @classmethod
    def from_preset(cls, preset: str | None = None, **overrides: Any) -> Self:
        """Like StageConfig.from_preset, plus the local-web-only ``large`` preset (for a ``small`` run:
        ``local_web_preset: large`` in the raw_crawl config)."""
        if preset is not None and preset not in WEB_PRESET_NAMES:
            raise ConfigError(
                f"{cls.__name__}: unknown preset {preset!r}; choose one of {', '.join(WEB_PRESET_NAMES)}"
            )
        if preset in WEB_PRESET_NAMES and preset not in PRESET_NAMES:
            return cls.from_dict(cls.layer(dict(cls.PRESETS[preset]), overrides))
        return super().from_preset(preset, **overrides)

    def site_package_dirs(self) -> tuple[str, ...]:
        return self.site_packages or tuple(sorted(set(site.getsitepackages())))


@dataclass
class SiteManifest:
    """What :func:`build_site` wrote; saved as ``build_manifest.json`` in the site directory."""

    site_dir: str
    config_hash: str
    pages_written: int  # HTML + text pages, index pages included (robots.txt excluded)
    html_pages: int
    text_pages: int
    index_pages: int
    by_source: dict[str, int]
    by_language: dict[str, int]  # manual pages per language (aliases included, private included)
    private_pages: int  # content pages under the robots-disallowed prefix
    man_aliases: int  # manual pages that are .so/symlink aliases of another page (same text, other URL)
    render_failures: int
    failures_by_reason: dict[str, int] = field(default_factory=dict)
    build_s: float = 0.0
    cached: bool = False

    def to_stats(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {
            "pages_written": self.pages_written,
            "html_pages": self.html_pages,
            "text_pages": self.text_pages,
            "index_pages": self.index_pages,
            "private_pages": self.private_pages,
            "man_aliases": self.man_aliases,
            "languages": len(self.by_language),
            "render_failures": self.render_failures,
            "build_s": round(self.build_s, 3),
            "cached": int(self.cached),
        }
        out.update({f"source/{k}": v for k, v in sorted(self.by_source.items())})
        out.update({f"lang/{k}": v for k, v in sorted(self.by_language.items())})
        out.update({f"render_failures/{k}": v for k, v in sorted(self.failures_by_reason.items())})
        return out


# ---------------------------------------------------------------------------------------- helpers


def _stable_order(items: list[str]) -> list[str]:
    """A deterministic shuffle: capped selections spread over the alphabet instead of taking a-b."""
    return sorted(items, key=lambda s: (hashlib.sha1(s.encode()).hexdigest(), s))


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _href(path: str) -> str:
    return quote(path, safe="/")


def _html_page(title: str, body: str, lang: str = "en", crumbs: list[tuple[str, str]] | None = None) -> str:
    nav = " › ".join(
        f'<a href="{_href(h)}">{html.escape(t)}</a>' for h, t in [("/", "Home"), *(crumbs or [])]
    )
    return (
        f'<!DOCTYPE html>\n<html lang="{lang.replace("_", "-")}">\n<head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head>\n<body>\n<nav>{nav}</nav>\n{body}\n</body>\n</html>\n"
    )


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


# ------------------------------------------------------------------------------------ manual pages


@dataclass(frozen=True)
class _ManPage:
    lang: str
    section_dir: str  # "man1"
    file: Path  # as listed (may be an alias)
    name: str  # "ls"
    ext: str  # "1", "3pm"

    @property
    def url(self) -> str:
        return f"/man/{self.lang}/{self.section_dir}/{self.name}.{self.ext}.html"


def _lang_roots(man_root: Path) -> dict[str, Path]:
    """``{lang: root}``: English is ``man_root`` itself (man1..man8), translations ``man_root/<lang>``."""
    roots: dict[str, Path] = {}
    if any(p.is_dir() and p.name.startswith("man") for p in man_root.iterdir()):
        roots["en"] = man_root
    for p in sorted(man_root.iterdir()):
        if p.is_dir() and not p.name.startswith("man") and re.fullmatch(r"[a-z]{2,3}(_[A-Z]{2})?", p.name):
            roots[p.name] = p
    return roots


def _list_man_pages(lang: str, root: Path) -> list[_ManPage]:
    pages = []
    for sec in sorted(p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"man[0-9n][a-z]*", p.name)):
        for f in sorted(sec.iterdir()):
            m = _MAN_NAME.match(f.name)
            if m and (f.is_file() or f.is_symlink()):
                pages.append(_ManPage(lang, sec.name, f, m["name"], m["ext"]))
    return pages


def _read_man_source(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


def _resolve_alias(page_file: Path, lang_root: Path, man_root: Path) -> tuple[Path | None, bool]:
    """Follow symlinks and ``.so`` redirect pages to the file holding the text: ``(target, is_alias)``."""
    current, alias = page_file, False
    for _ in range(4):
        if current.is_symlink():
            current, alias = Path(os.path.realpath(current)), True
        if not current.is_file():
            return None, alias
        try:
            head = _read_man_source(current)[:512]
        except (OSError, EOFError, gzip.BadGzipFile):
            return current, alias  # the renderer reports the failure
        first = head.split(b"\n", 1)[0].strip()
        if not first.startswith(b".so "):
            return current, alias
        rel = _decode(first[4:]).strip()
        candidates = [lang_root / rel, lang_root / (rel + ".gz"), man_root / rel, man_root / (rel + ".gz")]
        nxt = next((c for c in candidates if c.exists()), None)
        if nxt is None:
            return None, True
        current, alias = nxt, True
    return None, alias


def _overstrike_line(line: str) -> tuple[str, bool]:
    """grotty overstrike (``X\\bX`` bold, ``_\\bX`` underline) → HTML; also says if it is all bold."""
    out: list[str] = []
    style, run = "", []
    bold_chars = plain_chars = 0

    def flush() -> None:
        if run:
            text = html.escape("".join(run), quote=False)
            out.append(f"<{style}>{text}</{style}>" if style else text)
            run.clear()

    i, n = 0, len(line)
    while i < n:
        if i + 2 < n and line[i + 1] == "\b":
            a, ch = line[i], line[i + 2]
            s = "i" if a == "_" and ch != "_" else "b"
            i += 3
            while i + 1 < n and line[i] == "\b":  # repeated overstrike
                i += 2
        else:
            ch, s = line[i], ""
            i += 1
        if ch.strip():
            if s == "b":
                bold_chars += 1
            else:
                plain_chars += 1
        if s != style:
            flush()
            style = s
        run.append(ch)
    flush()
    return "".join(out), bold_chars > 0 and plain_chars == 0


_TAGS = re.compile(r"</?[bi]>")
_SPACES = re.compile(r"(?<=\S) {2,}(?=\S)")


def _plain(converted: str) -> str:
    return html.unescape(_TAGS.sub("", converted))


def _block_html(block: list[tuple[int, str]]) -> str:
    """One blank-line-separated block of the rendered page → HTML.

    Rendered with an unbounded line length, a filled paragraph is one line (``<p>``); a tag line followed by
    more-indented lines is a tagged paragraph (``.TP``: an option, then its description); anything
    else keeps its line breaks (``<pre>``: synopses, examples, tables), with the common indent removed.
    """
    indents = [i for i, _ in block]
    if len(block) == 1:
        return f"<p>{_SPACES.sub(' ', block[0][1].strip())}</p>"
    if indents[0] < min(indents[1:]):  # the tag and its description, each its own paragraph
        body = "<br>".join(_SPACES.sub(" ", line.strip()) for _, line in block[1:])
        return f"<p>{block[0][1].strip()}</p><p>{body}</p>"
    cut = min(indents)
    return (
        "<pre>"
        + "\n".join(line[cut:] if line[:cut].isspace() else line.lstrip() for _, line in block)
        + "</pre>"
    )


def _terminal_to_html(text: str) -> tuple[str, str]:
    """Rendered manual page → ``(title line, body HTML)``: section headings ``<h2>``, subsections ``<h3>``,
    paragraphs and option lists ``<p>``, line-structured text ``<pre>`` (see :func:`_block_html`)."""
    lines = text.rstrip("\n").split("\n")
    nonblank = [i for i, ln in enumerate(lines) if ln.strip()]
    if len(nonblank) >= 2:  # drop the running header and footer lines
        lines = lines[nonblank[0] + 1 : nonblank[-1]]
    parts: list[str] = []
    block: list[tuple[int, str]] = []
    title = ""
    sections = 0

    def flush() -> None:
        if block:
            parts.append(_block_html(block))
        block.clear()

    for line in lines:
        converted, all_bold = _overstrike_line(line)
        plain = _plain(converted)
        indent = len(plain) - len(plain.lstrip())
        if plain.strip() and all_bold and indent in (0, 3):  # .SH at column 0, .SS at column 3
            flush()
            sections += int(indent == 0)
            tag = "h2" if indent == 0 else "h3"
            parts.append(f"<{tag}>{_TAGS.sub('', converted).strip()}</{tag}>")
            continue
        if sections == 1 and not title and plain.strip():
            title = plain.strip()
        if not plain.strip():
            flush()
            continue
        block.append((indent, converted))
    flush()
    return title, "\n".join(parts)


def _render_man(path: str, cwd: str, timeout_s: float) -> tuple[str, str, str]:
    """Render one manual page (runs in a worker process): ``(title, body HTML, failure reason)``."""
    try:
        source = _read_man_source(Path(path))
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error):
        return "", "", "unreadable"
    text = _decode(source)
    # An unbounded line length: groff fills each paragraph into one line, so no wrapping, justification
    # spaces or hyphenation reach the text; indentation still shows the structure.
    cmd = ["groff", "-mandoc", "-Tutf8", "-Kutf8", "-P-c", "-rHY=0", f"-rLL={_LINE_LENGTH}n"]
    first = text.split("\n", 1)[0]
    if first.startswith("'\\\"") or first.startswith('.\\"'):
        preprocessors = first[3:].strip()
        cmd += [flag for letter, flag in (("t", "-t"), ("e", "-e"), ("p", "-p")) if letter in preprocessors]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"}
    try:
        proc = subprocess.run(
            cmd,
            input=text.encode("utf-8"),
            capture_output=True,
            cwd=cwd,
            env=env,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "", "", "timeout"
    except OSError:
        return "", "", "groff_missing"
    out = proc.stdout.decode("utf-8", errors="replace")
    if proc.returncode != 0 or not out.strip():
        return "", "", "groff_failed"
    title, body = _terminal_to_html(out)
    if not body:
        return "", "", "empty"
    return title, body, ""


def _linkify(body: str, lang: str, known: dict[tuple[str, str, str], str]) -> str:
    """Turn ``name(sec)`` references into links to pages of the same language (English as fallback)."""

    def sub(m: re.Match) -> str:
        name, sec = m.group(2), m.group(4)
        url = known.get((lang, name, sec)) or known.get(("en", name, sec))
        if url is None:
            return m.group(0)
        inner = f"{m.group(1) or ''}{name}{m.group(3) or ''}({sec})"
        return f'<a href="{_href(url)}">{inner}</a>'

    return _XREF.sub(sub, body)


def _build_man(cfg: LocalWebConfig, out: Path, stats: _Stats) -> list[tuple[str, str, str, str]]:
    """Render the selected manual pages; returns ``(lang, section_dir, url, label)`` per page written."""
    man_root = Path(cfg.man_root)
    if not man_root.is_dir():
        raise FileNotFoundError(f"LocalWebConfig.man_root {man_root} is not a directory")
    roots = _lang_roots(man_root)
    selected: list[_ManPage] = []
    for lang, root in roots.items():
        pages = _list_man_pages(lang, root)
        cap = cfg.max_man_pages_en if lang == "en" else cfg.max_man_pages_per_lang
        by_key = {str(p.file): p for p in pages}
        keep = set(_stable_order(list(by_key))[:cap])
        selected += [p for p in pages if str(p.file) in keep]
    # Resolve aliases; render each distinct target once.
    targets: dict[_ManPage, Path] = {}
    aliases: set[_ManPage] = set()
    for page in selected:
        target, is_alias = _resolve_alias(page.file, roots[page.lang], man_root)
        if target is None:
            stats.failures["broken_alias"] += 1
            continue
        targets[page] = target
        if is_alias:
            aliases.add(page)
    rendered = _render_targets(cfg, targets, roots, stats)
    known = {(p.lang, p.name, p.ext): _public_url(cfg, p) for p in rendered}
    written: list[tuple[str, str, str, str]] = []
    for page in sorted(rendered, key=lambda p: (p.lang, p.section_dir, p.name, p.ext)):
        title, body = rendered[page]
        url = _public_url(cfg, page)
        heading = f"{page.name}({page.ext})"
        crumbs = [("/man/", "Manual pages"), (f"/man/{page.lang}/", page.lang)]
        doc = _html_page(
            f"{heading} — {title}" if title else heading,
            # <main>: the page's content, which extractors keep headings and all (outside it they
            # read short <h2> lines such as NAME and SYNOPSIS as boilerplate)
            f"<main><h1>{html.escape(heading)}</h1>\n{_linkify(body, page.lang, known)}</main>",
            page.lang,
            crumbs,
        )
        _write(out / url.lstrip("/"), doc)
        stats.by_language[page.lang] += 1
        stats.man_aliases += int(page in aliases)
        stats.count_page("man", url, cfg)
        written.append((page.lang, page.section_dir, url, f"{heading} — {title}" if title else heading))
    return written


def _render_targets(
    cfg: LocalWebConfig, targets: dict[_ManPage, Path], roots: dict[str, Path], stats: _Stats
) -> dict[_ManPage, tuple[str, str]]:
    """``(title, body)`` per page, each distinct target file rendered once in a process pool; failures
    are counted in ``stats`` and left out."""
    unique = sorted({(str(t), str(roots[p.lang])) for p, t in targets.items()})
    render = partial(_render_man, timeout_s=cfg.render_timeout_s)
    ctx = multiprocessing.get_context("spawn")  # no fork of a possibly threaded parent (Dagster, servers)
    with ProcessPoolExecutor(max_workers=cfg.render_workers, mp_context=ctx) as pool:
        results = dict(
            zip(
                unique,
                pool.map(render, [u[0] for u in unique], [u[1] for u in unique], chunksize=16),
                strict=True,
            )
        )
    rendered: dict[_ManPage, tuple[str, str]] = {}
    for page, target in targets.items():
        title, body, failure = results[(str(target), str(roots[page.lang]))]
        if failure:
            stats.failures[failure] += 1
        else:
            rendered[page] = (title, body)
    return rendered


def _public_url(cfg: LocalWebConfig, page: _ManPage) -> str:
    url = page.url
    if page.lang == "en" and page.section_dir == cfg.private_man_section:
        url = cfg.robots_disallow_prefix.rstrip("/") + url
    return url


# ------------------------------------------------------------------------------- other sources


def _walk_files(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):  # symlinked dirs not followed: no loops
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(suffixes):
                p = Path(dirpath) / name
                if p.is_file():
                    found.append(p)
    return found


def _doc_roots(cfg: LocalWebConfig) -> list[tuple[str, Path]]:
    """``(URL label, directory)`` of every HTML tree: doc_root, site-packages, then ``html_doc_roots``
    (labelled by their path, ``/usr/share/gimp/2.0/help`` → ``usr-share-gimp-2.0-help``)."""
    roots = [("usr-share-doc", Path(cfg.doc_root))]
    sps = cfg.site_package_dirs()
    for i, sp in enumerate(sps):
        roots.append(("site-packages" if len(sps) == 1 else f"site-packages-{i}", Path(sp)))
    roots += [(d.strip("/").replace("/", "-"), Path(d)) for d in cfg.html_doc_roots]
    return [(label, p) for label, p in roots if p.is_dir()]


def _per_package(urls: list[str], cap: int) -> list[str]:
    """At most ``cap`` URLs of each package (``/docs/<root>/<package>/...``), in stable order."""
    taken: Counter = Counter()
    out = []
    for url in _stable_order(urls):
        package = "/".join(url.split("/")[2:4])
        if taken[package] < cap:
            taken[package] += 1
            out.append(url)
    return out


def _build_html_docs(cfg: LocalWebConfig, out: Path, stats: _Stats) -> list[tuple[str, str]]:
    candidates: dict[str, Path] = {}
    for label, root in _doc_roots(cfg):
        for p in _walk_files(root, (".html", ".htm")):
            if p.stat().st_size <= cfg.max_html_doc_bytes:
                candidates[f"/docs/{label}/{p.relative_to(root).as_posix()}"] = p
            else:
                stats.skipped["html_doc_too_big"] += 1
    written = []
    for url in sorted(_per_package(list(candidates), cfg.max_html_docs_per_package)[: cfg.max_html_docs]):
        _write(out / url.lstrip("/"), _decode(candidates[url].read_bytes()))
        stats.count_page("html_docs", url, cfg)
        written.append((url, url.removeprefix("/docs/")))
    return written


_MD_LINK = re.compile(r"!?\[([^\]]*)\]\(([^)\s]+)(?:\s+&quot;[^)]*&quot;)?\)")


def _md_inline(text: str) -> str:
    text = html.escape(text, quote=True)
    codes: list[str] = []

    def keep_code(m: re.Match) -> str:
        codes.append(f"<code>{m.group(1)}</code>")
        return f"\x00{len(codes) - 1}\x00"

    text = re.sub(r"`([^`]+)`", keep_code, text)

    def link(m: re.Match) -> str:
        label, url = m.group(1), m.group(2)
        if m.group(0).startswith("!"):
            return f'<img alt="{label}" src="{url}">'
        return f'<a href="{url}">{label}</a>'

    text = _MD_LINK.sub(link, text)
    text = re.sub(r"&lt;(https?://[^\s&]+)&gt;", r'<a href="\1">\1</a>', text)
    text = re.sub(
        r"\*\*([^*]+)\*\*|__([^_]+)__", lambda m: f"<strong>{m.group(1) or m.group(2)}</strong>", text
    )
    text = re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?!\w)", r"<em>\1</em>", text)
    return re.sub("\x00(\\d+)\x00", lambda m: codes[int(m.group(1))], text)


class _MarkdownBlocks:
    """HTML of a Markdown subset, one non-code line at a time: open paragraph and list are closed when
    a block of another kind starts."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.para: list[str] = []
        self.list_tag = ""

    def end_para(self) -> None:
        if self.para:
            self.out.append(f"<p>{_md_inline(' '.join(s.strip() for s in self.para))}</p>")
            self.para.clear()

    def end_list(self) -> None:
        if self.list_tag:
            self.out.append(f"</{self.list_tag}>")
            self.list_tag = ""

    def end_blocks(self) -> None:
        self.end_para()
        self.end_list()

    def add_line(self, line: str) -> None:
        heading = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        item = re.match(r"^\s*([-*+]|\d+[.)])\s+(.*)$", line)
        if heading:
            self.end_blocks()
            n = len(heading.group(1))
            self.out.append(f"<h{n}>{_md_inline(heading.group(2))}</h{n}>")
        elif re.match(r"^\s*([-*_])(\s*\1){2,}\s*$", line):
            self.end_blocks()
            self.out.append("<hr>")
        elif item:
            self.end_para()
            tag = "ol" if item.group(1)[0].isdigit() else "ul"
            if tag != self.list_tag:
                self.end_list()
                self.out.append(f"<{tag}>")
                self.list_tag = tag
            self.out.append(f"<li>{_md_inline(item.group(2))}</li>")
        elif line.startswith(">"):
            self.end_blocks()
            self.out.append(f"<blockquote><p>{_md_inline(line.lstrip('> '))}</p></blockquote>")
        elif not line.strip():
            self.end_blocks()
        elif self.list_tag and line.startswith((" ", "\t")) and not self.para:
            self.out[-1] = self.out[-1][: -len("</li>")] + " " + _md_inline(line.strip()) + "</li>"
        else:
            self.end_list()
            self.para.append(line)


def markdown_to_html(md: str) -> str:
    """A small Markdown subset → HTML: headings, fenced code, lists, quotes, rules, paragraphs, inline."""
    blocks = _MarkdownBlocks()
    lines = md.replace("\r\n", "\n").split("\n")
    i = 0
    while i < len(lines):
        fence = re.match(r"^\s*(```|~~~)", lines[i])
        if not fence:
            blocks.add_line(lines[i])
            i += 1
            continue
        blocks.end_blocks()
        code = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence.group(1)):
            code.append(lines[i])
            i += 1
        blocks.out.append("<pre><code>" + html.escape("\n".join(code), quote=False) + "</code></pre>")
        i += 1
    blocks.end_blocks()
    return "\n".join(blocks.out)


def _build_metadata(cfg: LocalWebConfig, out: Path, stats: _Stats) -> list[tuple[str, str]]:
    parser = email.parser.Parser(policy=email.policy.compat32)
    pages: dict[str, tuple[str, str]] = {}
    for sp in cfg.site_package_dirs():
        sp_path = Path(sp)
        if not sp_path.is_dir():
            continue
        for meta in sorted(sp_path.glob("*.dist-info/METADATA")):
            msg = parser.parsestr(_decode(meta.read_bytes()))
            name = (msg.get("Name") or "").strip()
            description = msg.get_payload() if not msg.is_multipart() else ""
            description = (description or msg.get("Description") or "").strip()
            if not name or not description:
                stats.skipped["metadata_without_description"] += 1
                continue
            slug = re.sub(r"[-_.]+", "-", name).lower()
            url = f"/pypi/{slug}/"
            if url in pages:
                continue
            version, summary = msg.get("Version") or "", msg.get("Summary") or ""
            ctype = (msg.get("Description-Content-Type") or "").lower()
            if ctype.startswith("text/markdown"):
                body = markdown_to_html(description)
            else:  # reStructuredText and plain text keep their layout
                body = f"<pre>{html.escape(description, quote=False)}</pre>"
            head = f"<h1>{html.escape(name)} {html.escape(version)}</h1>\n<p>{html.escape(summary)}</p>\n"
            pages[url] = (
                name,
                _html_page(f"{name} {version}", head + body, "en", [("/pypi/", "Python packages")]),
            )
    written = []
    for url in sorted(_stable_order(list(pages))[: cfg.max_metadata]):
        name, doc = pages[url]
        _write(out / url.lstrip("/") / "index.html", doc)
        stats.count_page("metadata", url, cfg)
        written.append((url, name))
    return written


def _build_tex_docs(cfg: LocalWebConfig, out: Path, stats: _Stats) -> list[tuple[str, str]]:
    """TeX manuals as text pages at ``/docs/tex/<dir name>/<file>.txt``."""
    candidates: dict[str, Path] = {}
    for d in map(Path, cfg.tex_doc_dirs):
        for p in _walk_files(d, (".tex",)) if d.is_dir() else []:
            if p.stat().st_size <= cfg.max_html_doc_bytes:
                candidates[f"/docs/tex/{d.name}/{p.relative_to(d).as_posix()}.txt"] = p
    written = []
    for url in sorted(_stable_order(list(candidates))[: cfg.max_tex_docs]):
        _write(out / url.lstrip("/"), _decode(candidates[url].read_bytes()))
        stats.count_page("tex_docs", url, cfg, html_page=False)
        written.append((url, url.removeprefix("/docs/tex/")))
    return written


_MAL_IF = "{http://projectmallard.org/if/1.0/}test"
# Not rendered: page metadata (info: credits, links, license), editorial comments and the link lists yelp
# generates. Media (images, video) are left out as blocks; inline, their fallback text is read.
_MAL_SKIP = frozenset({"info", "comment", "links", "include"})
_MAL_LISTS = {"list": "ul", "steps": "ol", "terms": "ul", "tree": "ul"}
_MAL_CODE = frozenset({"code", "cmd", "file", "input", "output", "sys", "var"})


def _mal_name(el: Any) -> str:
    return el.tag.rsplit("}", 1)[-1] if isinstance(el.tag, str) else ""


def _mal_test(test: str | None) -> bool:
    """Whether an ``if:`` test holds for a generic reader: no test, or a negated one (``!platform:x``);
    a positive platform/target test (``platform:gnome-classic``) names a variant and is left out."""
    return test is None or test.strip().startswith("!")


def _mal_rendered(child: Any) -> list[Any]:
    """What a child renders as: nothing (skipped, or a test that does not hold), an ``if:choose``'s first
    applying ``if:when`` or else its ``if:else``, or the child itself."""
    name = _mal_name(child)
    if name in _MAL_SKIP or not _mal_test(child.get(_MAL_IF)):
        return []
    if name == "choose":
        return [c for c in child if _mal_name(c) == "else" or _mal_test(c.get("test"))][:1]
    return [child]


def _mal_inline(el: Any) -> str:
    """HTML of an inline run: the element's text and children (``<code>`` for commands and files,
    ``<em>``, ``gui ▸ gui`` for menu paths, ``Ctrl+C`` for key combinations), tails kept."""
    parts = [html.escape(el.text or "", quote=False)]
    for child in el:
        for node in _mal_rendered(child):
            name = _mal_name(node)
            if name in ("guiseq", "keyseq"):
                items = [c for c in node if _mal_name(c) in ("gui", "key", "keyseq")]
                inner = (" ▸ " if name == "guiseq" else "+").join(_mal_inline(c) for c in items)
            else:
                inner = _mal_inline(node)
            if name in _MAL_CODE:
                inner = f"<code>{inner}</code>"
            elif name == "em":
                inner = f"<em>{inner}</em>"
            parts.append(inner)
        parts.append(html.escape(child.tail or "", quote=False))
    return "".join(parts)


def _squash(text: str) -> str:
    return " ".join(text.split())


def _mal_table(table: Any, out: list[str]) -> None:
    out += [f"<p>{_squash(_mal_inline(c))}</p>" for c in table if _mal_name(c) == "title"]
    out.append("<table>")
    for row in table.iter():
        if _mal_name(row) == "tr":
            cells = [c for c in row if _mal_name(c) in ("td", "th")]
            out.append("<tr>")
            for cell in cells:
                out.append("<td>")
                _mal_blocks(cell, 3, out)
                out.append("</td>")
            out.append("</tr>")
    out.append("</table>")


def _mal_blocks(el: Any, depth: int, out: list[str]) -> None:
    """HTML of a Mallard block container's children (page, section, item, note, ...), appended to ``out``:
    titles of pages and sections → ``<h{depth}>``, other titles and paragraphs → ``<p>``, ``code``/``screen``
    blocks → ``<pre>``, lists and steps → ``<ul>``/``<ol>``, tables; other containers are recursed into.
    A container holding text directly (not in a paragraph) is one paragraph."""
    if (el.text or "").strip() or any((c.tail or "").strip() for c in el):
        out.append(f"<p>{_squash(_mal_inline(el))}</p>")
        return
    for node in (n for child in el for n in _mal_rendered(child)):
        name = _mal_name(node)
        if name == "title" and _mal_name(el) in ("page", "section"):
            out.append(f"<h{min(depth, 6)}>{_squash(_mal_inline(node))}</h{min(depth, 6)}>")
        elif name in ("p", "title", "desc", "subtitle"):
            out.append(f"<p>{_squash(_mal_inline(node))}</p>")
        elif name in ("code", "screen"):
            out.append(f"<pre>{html.escape(''.join(node.itertext()).strip(chr(10)), quote=False)}</pre>")
        elif name == "section":
            _mal_blocks(node, depth + 1, out)
        elif name in _MAL_LISTS:
            tag = _MAL_LISTS[name]
            out.append(f"<{tag}>")
            for item in (n for child in node for n in _mal_rendered(child) if _mal_name(n) == "item"):
                out.append("<li>")
                _mal_blocks(item, depth, out)
                out.append("</li>")
            out.append(f"</{tag}>")
        elif name == "table":
            _mal_table(node, out)
        elif name == "media":
            continue
        else:  # note, example, figure, quote, synopsis, listing, item, ...
            _mal_blocks(node, depth, out)


def mallard_to_html(xml_text: str) -> tuple[str, str]:
    """A Mallard page (``.page``, GNOME's help format) → ``(title, body HTML)``; ``ValueError`` when it is
    not a Mallard page. Metadata, comments, media and platform variants are left out (see ``_mal_*``)."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise ValueError(f"not well-formed XML ({exc})") from exc
    if _mal_name(root) != "page":
        raise ValueError(f"root element is <{_mal_name(root)}>, not a Mallard <page>")
    title = next((_squash("".join(c.itertext())) for c in root if _mal_name(c) == "title"), "")
    out: list[str] = []
    _mal_blocks(root, 1, out)
    return title, "\n".join(out)


def _build_help_pages(cfg: LocalWebConfig, out: Path, stats: _Stats) -> list[tuple[str, str]]:
    """Mallard pages as HTML at ``/help/<lang>/<document>/<page>.html`` (``C``, the source, is English)."""
    root = Path(cfg.help_root)
    candidates: dict[str, Path] = {}
    for p in _walk_files(root, (".page",)) if root.is_dir() else []:
        if p.stat().st_size <= cfg.max_html_doc_bytes:
            candidates[f"/help/{p.relative_to(root).with_suffix('.html').as_posix()}"] = p
    written = []
    for url in sorted(_stable_order(list(candidates))[: cfg.max_help_pages]):
        try:
            title, body = mallard_to_html(_decode(candidates[url].read_bytes()))
        except ValueError:
            stats.failures["help_page_invalid"] += 1
            continue
        lang_dir, document = url.split("/")[2:4]
        lang = "en" if lang_dir == "C" else lang_dir.split("@")[0]
        crumbs = [("/help/", "Help")]
        doc = _html_page(title or document, f"<main>{body}</main>", lang, crumbs)
        _write(out / url.lstrip("/"), doc)
        stats.count_page("help_pages", url, cfg)
        written.append((url, f"{document} ({lang_dir}): {title}"))
    return written


def _build_copyright(cfg: LocalWebConfig, out: Path, stats: _Stats) -> list[tuple[str, str]]:
    root = Path(cfg.doc_root)
    found = sorted(p for p in root.glob("*/copyright") if p.is_file()) if root.is_dir() else []
    written = []
    for path in found[: cfg.max_copyright]:
        url = f"/copyright/{path.parent.name}.txt"
        _write(out / url.lstrip("/"), _decode(path.read_bytes()))
        stats.count_page("copyright", url, cfg, html_page=False)
        written.append((url, path.parent.name))
    return written


# --------------------------------------------------------------------------------------- indexes


@dataclass
class _Stats:
    by_source: Counter = field(default_factory=Counter)
    by_language: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    html_pages: int = 0
    text_pages: int = 0
    index_pages: int = 0
    private_pages: int = 0
    man_aliases: int = 0

    def count_page(self, source: str, url: str, cfg: LocalWebConfig, html_page: bool = True) -> None:
        self.by_source[source] += 1
        if html_page:
            self.html_pages += 1
        else:
            self.text_pages += 1
        self.private_pages += int(url.startswith(cfg.robots_disallow_prefix))


def _write_index(
    out: Path,
    base: str,
    title: str,
    entries: list[tuple[str, str]],
    cfg: LocalWebConfig,
    stats: _Stats,
    lang="en",
) -> None:
    """Paginated list of links at ``base`` (``index.html``, ``index-2.html``, ...); every page links all."""
    size = cfg.index_page_size
    n_pages = max(1, -(-len(entries) // size))
    page_urls = [base if i == 0 else f"{base}index-{i + 1}.html" for i in range(n_pages)]
    for i in range(n_pages):
        items = "\n".join(
            f'<li><a href="{_href(url)}">{html.escape(label)}</a></li>'
            for url, label in entries[i * size : (i + 1) * size]
        )
        pager = " ".join(
            f"<b>{j + 1}</b>" if j == i else f'<a href="{_href(u)}">{j + 1}</a>'
            for j, u in enumerate(page_urls)
        )
        body = f"<h1>{html.escape(title)}</h1>\n<p>Page {pager}</p>\n<ul>\n{items}\n</ul>"
        name = "index.html" if i == 0 else f"index-{i + 1}.html"
        _write(out / base.lstrip("/") / name, _html_page(f"{title} ({i + 1}/{n_pages})", body, lang))
        stats.index_pages += 1
        stats.html_pages += 1


def _config_hash(cfg: LocalWebConfig) -> str:
    """Config + the source directories' mtimes (a package install changes them) + format version."""
    fingerprint: list[tuple[str, int]] = []
    dirs = [Path(cfg.man_root), Path(cfg.doc_root), *(Path(p) for p in cfg.site_package_dirs())]
    dirs += [Path(p) for p in cfg.tex_doc_dirs]
    trees = [Path(p) for p in cfg.html_doc_roots] + (
        [Path(cfg.help_root)] if "help_pages" in cfg.sources else []
    )
    for tree in trees:  # one directory per language (or document) below each
        dirs += [tree, *(sorted(p for p in tree.glob("*/") if p.is_dir()) if tree.is_dir() else [])]
    man_root = Path(cfg.man_root)
    if man_root.is_dir():
        dirs += sorted(p for p in man_root.glob("*/") if p.is_dir())
        dirs += sorted(p for p in man_root.glob("*/man*/") if p.is_dir())
    for d in dirs:
        with contextlib.suppress(OSError):
            fingerprint.append((str(d), d.stat().st_mtime_ns))
    payload = {"config": cfg.to_dict(), "site_packages": cfg.site_package_dirs(), "fp": fingerprint}
    payload["version"] = _FORMAT_VERSION
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def load_site_manifest(site_dir: Path) -> SiteManifest:
    path = Path(site_dir) / BUILD_MANIFEST
    try:
        return SiteManifest(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}: not a readable site build manifest ({exc})") from exc


def _write_man_indexes(
    cfg: LocalWebConfig, out: Path, stats: _Stats, man: list[tuple[str, str, str, str]]
) -> None:
    """One index per language, one for the robots-disallowed section, and ``/man/`` listing them."""
    langs = sorted({lang for lang, *_ in man})
    private_base = cfg.robots_disallow_prefix + f"man/en/{cfg.private_man_section}/"
    for lang in langs:
        entries = [(u, label) for lg, _, u, label in man if lg == lang and not u.startswith(private_base)]
        _write_index(out, f"/man/{lang}/", f"Manual pages: {lang}", entries, cfg, stats, lang)
    lang_entries = [(f"/man/{lg}/", f"{lg} ({stats.by_language[lg]} pages)") for lg in langs]
    private = [(u, label) for *_, u, label in man if u.startswith(private_base)]
    if private:
        title = f"Manual section {cfg.private_man_section} (en)"
        _write_index(out, private_base, title, private, cfg, stats)
        lang_entries.append((private_base, title))
    _write_index(out, "/man/", "Manual pages by language", lang_entries, cfg, stats)


def build_site(site_dir: Path, cfg: LocalWebConfig) -> SiteManifest:
    """Build (or reuse, if ``site_dir`` holds a build with the same config hash) the local web."""
    from ml.io import atomic_dir  # here, not at module top: render workers import this module, lean

    site_dir = Path(site_dir)
    digest = _config_hash(cfg)
    if (site_dir / BUILD_MANIFEST).is_file():
        with contextlib.suppress(ValueError):
            old = load_site_manifest(site_dir)
            if old.config_hash == digest:
                old.cached = True
                old.site_dir = str(site_dir)
                return old
    if shutil.which("groff") is None and "man" in cfg.sources:
        raise FileNotFoundError("LocalWebConfig.sources includes 'man' but groff is not installed")
    start = time.monotonic()
    stats = _Stats()
    with atomic_dir(site_dir) as out:
        sections: list[tuple[str, str]] = []
        if "man" in cfg.sources:
            _write_man_indexes(cfg, out, stats, _build_man(cfg, out, stats))
            sections.append(("/man/", "Manual pages"))
        for source, builder, base, title in (
            ("html_docs", _build_html_docs, "/docs/", "Package documentation"),
            ("tex_docs", _build_tex_docs, "/docs/tex/", "Manuals in TeX"),
            ("metadata", _build_metadata, "/pypi/", "Python packages"),
            ("copyright", _build_copyright, "/copyright/", "Copyright and license files"),
            ("help_pages", _build_help_pages, "/help/", "Help (GNOME Mallard pages)"),
        ):
            if source in cfg.sources:
                entries = builder(cfg, out, stats)
                _write_index(out, base, title, entries, cfg, stats)
                sections.append((base, title))
        _write_index(out, "/", "Local documentation web", sections, cfg, stats)
        (out / "robots.txt").write_text(f"User-agent: *\nDisallow: {cfg.robots_disallow_prefix}\n")
        manifest = SiteManifest(
            site_dir=str(site_dir),
            config_hash=digest,
            pages_written=stats.html_pages + stats.text_pages,
            html_pages=stats.html_pages,
            text_pages=stats.text_pages,
            index_pages=stats.index_pages,
            by_source=dict(sorted(stats.by_source.items())),
            by_language=dict(sorted(stats.by_language.items())),
            private_pages=stats.private_pages,
            man_aliases=stats.man_aliases,
            render_failures=sum(stats.failures.values()),
            failures_by_reason=dict(sorted(stats.failures.items())),
            build_s=time.monotonic() - start,
        )
        (out / BUILD_MANIFEST).write_text(json.dumps(asdict(manifest), indent=1, sort_keys=True))
    return manifest
