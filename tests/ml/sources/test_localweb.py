from __future__ import annotations

import gzip
import re
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from dagster_project.services.local_web_server import serve_site
from ml.config import ConfigError
from ml.sources.crawl import CrawlConfig, crawl
from ml.sources.extract import ExtractConfig, extract_html
from ml.sources.localweb import (
    LocalWebConfig,
    build_site,
    load_site_manifest,
    mallard_to_html,
    markdown_to_html,
)

FOO_EN = """.TH FOO 1 "2024" "fixture" "User Commands"
.SH NAME
foo \\- frobnicate the bar
.SH DESCRIPTION
.B foo
reads input.
See also
.BR bar (1)
and
.BR adm (8).
"""
FOO_DE = """.TH FOO 1 "2024" "fixture" "Benutzerbefehle"
.SH BEZEICHNUNG
foo \\- frobniziert Grüße
.SH BESCHREIBUNG
Siehe
.BR adm (8).
"""
GREP_EN = """.TH GREP 1 "2024" "fixture" "User Commands"
.SH NAME
grep \\- print lines that match patterns
.SH SYNOPSIS
.B grep
[\\fIOPTION\\fR...]
.I PATTERNS
[\\fIFILE\\fR...]
.SH DESCRIPTION
.B grep
searches for
.I PATTERNS
in each
.IR FILE .
A paragraph long enough that groff at eighty columns would wrap it over several lines, justify it with
extra spaces and perhaps hyphenate a word such as internationalization at the end of a line.
.SS "Matcher Selection"
.TP
.BR \\-R ", " \\-\\-root " \\fICHROOT_DIR\\fR"
Apply changes in the
.I CHROOT_DIR
directory.
.SH EXAMPLES
.nf
grep \\-i 'hello world' menu.h main.c
grep \\-r pattern .
.fi
"""
ADM_EN = """.TH ADM 8 "2024" "fixture" "System Administration"
.SH NAME
adm \\- administer the fixture
.SH DESCRIPTION
Admin only.
"""
METADATA = """Metadata-Version: 2.1
Name: Demo_Pkg
Version: 1.0
Summary: A demo package
Description-Content-Type: text/markdown

# Demo

Some **bold** text and `code` and a [link](https://example.org).

- one
- two
"""
LICENSE = "Permission is hereby granted, free of charge, to any person obtaining a copy.\n"


@pytest.fixture
def source_tree(tmp_path: Path) -> LocalWebConfig:
    man = tmp_path / "man"
    for d in ("man1", "man8", "de/man1"):
        (man / d).mkdir(parents=True)
    (man / "man1/foo.1").write_text(FOO_EN)
    (man / "man1/bar.1.gz").write_bytes(gzip.compress(b".so man1/foo.1\n"))  # an alias page
    (man / "man1/ghost.1").write_text(".so man1/missing.1\n")  # alias to nothing: a counted failure
    (man / "man1/broken.1.gz").write_bytes(b"\x1f\x8bnot gzip")  # unreadable: a counted failure
    (man / "man8/adm.8").write_text(ADM_EN)
    (man / "de/man1/foo.1.gz").write_bytes(gzip.compress(FOO_DE.encode()))
    doc = tmp_path / "doc"
    (doc / "pkg/html").mkdir(parents=True)
    (doc / "pkg/html/guide.html").write_text(
        '<html><body><p>Guide</p><a href="other.html">next</a></body></html>'
    )
    for pkg in ("pkga", "pkgb"):
        (doc / pkg).mkdir(exist_ok=True)
        (doc / pkg / "copyright").write_text(LICENSE)
    sp = tmp_path / "site-packages"
    (sp / "Demo_Pkg-1.0.dist-info").mkdir(parents=True)
    (sp / "Demo_Pkg-1.0.dist-info/METADATA").write_text(METADATA)
    tex = tmp_path / "pari/doc"
    tex.mkdir(parents=True)
    (tex / "series.tex").write_text(r"The series $\sum_{n\ge 1} 1/n^2$ converges to $\pi^2/6$." + "\n")
    return LocalWebConfig(
        man_root=str(man),
        doc_root=str(doc),
        site_packages=(str(sp),),
        tex_doc_dirs=(str(tex),),
        render_workers=1,
    )


def links(path: Path) -> list[str]:
    return re.findall(r'href="([^"]+)"', path.read_text())


def test_build_site_from_fixture_tree(source_tree, tmp_path):
    site = tmp_path / "site"
    m = build_site(site, source_tree)
    assert m.by_source == {"copyright": 2, "html_docs": 1, "man": 4, "metadata": 1, "tex_docs": 1}
    assert m.by_language == {"de": 1, "en": 3}
    assert (m.man_aliases, m.private_pages, m.render_failures) == (1, 1, 2)
    assert m.failures_by_reason == {"broken_alias": 1, "unreadable": 1}
    # index pages: /, /man/, /man/de/, /man/en/, /private/man/en/man8/, /docs/, /docs/tex/, /pypi/, /copyright/
    assert (m.index_pages, m.html_pages, m.text_pages, m.pages_written) == (9, 15, 3, 18)
    assert m.cached is False
    assert m.to_stats()["languages"] == 2 and m.to_stats()["source/man"] == 4

    assert (site / "robots.txt").read_text() == "User-agent: *\nDisallow: /private/\n"
    assert links(site / "index.html") == ["/", "/man/", "/docs/", "/docs/tex/", "/pypi/", "/copyright/"]
    assert links(site / "docs/tex/index.html") == ["/", "/docs/tex/doc/series.tex.txt"]
    assert (site / "docs/tex/doc/series.tex.txt").read_text().startswith(r"The series $\sum_{n\ge 1}")
    assert links(site / "man/index.html") == ["/", "/man/de/", "/man/en/", "/private/man/en/man8/"]
    assert links(site / "man/en/index.html") == ["/", "/man/en/man1/bar.1.html", "/man/en/man1/foo.1.html"]
    assert links(site / "private/man/en/man8/index.html") == ["/", "/private/man/en/man8/adm.8.html"]
    assert links(site / "copyright/index.html") == ["/", "/copyright/pkga.txt", "/copyright/pkgb.txt"]
    assert links(site / "pypi/index.html") == ["/", "/pypi/demo-pkg/"]
    assert links(site / "docs/index.html") == ["/", "/docs/usr-share-doc/pkg/html/guide.html"]

    foo = (site / "man/en/man1/foo.1.html").read_text()
    assert "<h2>NAME</h2>" in foo and "<title>foo(1) — foo - frobnicate the bar</title>" in foo
    assert '<a href="/man/en/man1/bar.1.html"><b>bar</b>(1)</a>' in foo
    assert '<a href="/private/man/en/man8/adm.8.html"><b>adm</b>(8)</a>' in foo
    # The alias serves the same text under another URL (a real duplicate).
    bar = (site / "man/en/man1/bar.1.html").read_text()
    assert bar.split("<h2>", 1)[1] == foo.split("<h2>", 1)[1]
    de = (site / "man/de/man1/foo.1.html").read_text()
    assert '<html lang="de">' in de and "frobniziert Grüße" in de
    assert '<a href="/private/man/en/man8/adm.8.html"><b>adm</b>(8)</a>' in de  # English fallback
    assert (site / "copyright/pkga.txt").read_text() == (site / "copyright/pkgb.txt").read_text() == LICENSE
    pypi = (site / "pypi/demo-pkg/index.html").read_text()
    assert "<h1>Demo_Pkg 1.0</h1>" in pypi and "<li>one</li>" in pypi
    assert load_site_manifest(site).pages_written == 18


def test_html_docs_capped_per_package(source_tree, tmp_path):
    html = Path(source_tree.doc_root) / "big/html"
    html.mkdir(parents=True)
    for i in range(5):
        (html / f"ch{i}.html").write_text(f"<html><body><p>Chapter {i}</p></body></html>")
    m = build_site(tmp_path / "site", source_tree.replace(max_html_docs_per_package=2))
    assert m.by_source["html_docs"] == 2 + 1  # two of big's five pages, pkg's one
    docs = links(tmp_path / "site/docs/index.html")
    assert sum(u.startswith("/docs/usr-share-doc/big/") for u in docs) == 2


def extracted(page: str) -> str:
    """The page's text as ``extracted_docs`` extracts it (tiny settings), through trafilatura."""
    text, extractor = extract_html(page, ExtractConfig.from_preset("tiny"))
    assert extractor == "trafilatura"
    return text


def test_man_page_structure_survives_extraction(source_tree, tmp_path):
    (Path(source_tree.man_root) / "man1/grep.1").write_text(GREP_EN)
    build_site(tmp_path / "site", source_tree)
    page = (tmp_path / "site/man/en/man1/grep.1.html").read_text()
    assert extracted(page) == (
        "grep(1)\n"
        "NAME\n"
        "grep - print lines that match patterns\n"
        "SYNOPSIS\n"
        "grep [OPTION...] PATTERNS [FILE...]\n"
        "DESCRIPTION\n"
        "grep searches for PATTERNS in each FILE. A paragraph long enough that groff at eighty columns would "
        "wrap it over several lines, justify it with extra spaces and perhaps hyphenate a word such as "
        "internationalization at the end of a line.\n"
        "Matcher Selection\n"
        "-R, --root CHROOT_DIR\n"
        "Apply changes in the CHROOT_DIR directory.\n"
        "EXAMPLES\n"
        "grep -i 'hello world' menu.h main.c\n"
        "grep -r pattern ."
    )
    assert "<h3>Matcher Selection</h3>" in page and "<pre>grep -i" in page


def test_build_site_is_cached_by_config_hash(source_tree, tmp_path):
    site = tmp_path / "site"
    first = build_site(site, source_tree)
    again = build_site(site, source_tree)
    assert again.cached is True and again.config_hash == first.config_hash
    changed = build_site(site, source_tree.replace(sources=("man", "copyright")))
    assert changed.cached is False and changed.by_source == {"copyright": 2, "man": 4}
    assert not (site / "pypi").exists()


def test_serve_site(source_tree, tmp_path):
    site = tmp_path / "site"
    build_site(site, source_tree)
    with serve_site(site) as base:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", base)
        with urllib.request.urlopen(base + "man/en/man1/foo.1.html") as r:
            assert r.headers["Content-Type"] == "text/html; charset=utf-8"
            assert b"frobnicate" in r.read()
        with urllib.request.urlopen(base + "copyright/pkga.txt") as r:
            assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
        with urllib.request.urlopen(base + "robots.txt") as r:
            assert r.read() == b"User-agent: *\nDisallow: /private/\n"
        with urllib.request.urlopen(base + "man/") as r:  # a directory serves its index.html
            assert b"Manual pages by language" in r.read()
        for missing in ("nope.html", "man/en/man1/"):  # no file; a directory without index: no listing
            with pytest.raises(urllib.error.HTTPError) as exc:
                urllib.request.urlopen(base + missing)
            assert exc.value.code == 404
    with pytest.raises(OSError):  # stopped on exit
        urllib.request.urlopen(base, timeout=2)


def test_crawl_fixture_site(source_tree, tmp_path):
    site = tmp_path / "site"
    build_site(site, source_tree)
    with serve_site(site) as base:
        cfg = CrawlConfig.from_preset(
            "tiny", seeds=(base,), allow_private_hosts=("127.0.0.1",), concurrency=2
        )
        report = crawl(cfg, tmp_path / "crawl")
    m = pd.read_parquet(report.manifest_path)
    # 8 index pages + foo, bar, foo(de), guide, pypi page (HTML) + 2 copyright files and a TeX manual (text).
    assert report.pages_fetched == 16
    assert report.robots_refusals == 2  # the private index and adm.8 (linked from the manual pages)
    assert report.errors_by_kind == {"http_4xx": 1}  # guide.html links to a page that does not exist
    assert sorted(m.loc[m["robots"] == "disallowed", "url"].str.removeprefix(base)) == [
        "private/man/en/man8/",
        "private/man/en/man8/adm.8.html",
    ]


def test_markdown_to_html():
    md = "# Title\n\nText with **bold**, *em*, `a<b`, [x](http://e.org).\ncontinued\n\n```\ncode <here>\n```\n1. a\n2. b\n"
    assert markdown_to_html(md) == (
        "<h1>Title</h1>\n"
        '<p>Text with <strong>bold</strong>, <em>em</em>, <code>a&lt;b</code>, <a href="http://e.org">x</a>. '
        "continued</p>\n"
        "<pre><code>code &lt;here&gt;</code></pre>\n"
        "<ol>\n<li>a</li>\n<li>b</li>\n</ol>"
    )


def test_config_validation():
    with pytest.raises(ConfigError, match="unknown source"):
        LocalWebConfig(sources=("man", "wikipedia"))
    with pytest.raises(ConfigError, match="robots_disallow_prefix"):
        LocalWebConfig(robots_disallow_prefix="private")
    assert LocalWebConfig.from_preset("small").max_man_pages_en == 100_000


@pytest.mark.slow
def test_build_and_crawl_real_system_sources(tmp_path):
    if not Path("/usr/share/man").is_dir():
        pytest.skip("no /usr/share/man on this machine")
    cfg = LocalWebConfig.from_preset(
        "tiny",
        max_man_pages_per_lang=3,
        max_man_pages_en=20,
        max_html_docs=5,
        max_metadata=5,
        max_copyright=5,
    )
    m = build_site(tmp_path / "site", cfg)
    assert m.by_source["man"] >= 20 and len(m.by_language) >= 12
    assert m.render_failures <= m.by_source["man"] // 10
    assert build_site(tmp_path / "site", cfg).cached is True
    with serve_site(tmp_path / "site") as base:
        cfg = CrawlConfig.from_preset("tiny", seeds=(base,), allow_private_hosts=("127.0.0.1",))
        report = crawl(cfg, tmp_path / "crawl")
    man = pd.read_parquet(report.manifest_path)
    fetched = man[man["warc_file"] != ""]
    langs = set(fetched["url"].str.extract(r"/man/([A-Za-z_]+)/man")[0].dropna())
    assert len(langs) >= 12
    assert report.pages_fetched >= m.pages_written - m.private_pages - 1


MALLARD = """<page xmlns="http://projectmallard.org/1.0/" xmlns:if="http://projectmallard.org/if/1.0/"
      type="topic" id="wifi">
  <info><credit type="author"><name>A. Writer</name></credit><desc>Not shown.</desc></info>
  <title>Connect to a <gui>Wi-Fi</gui> network</title>
  <comment><p>Editorial note, not shown.</p></comment>
  <p>Open the <gui>Settings</gui> panel and press <keyseq><key>Ctrl</key><key>W</key></keyseq>, or choose
  <guiseq><gui>Network</gui><gui>Wi-Fi</gui></guiseq> from the menu.</p>
  <media type="image" src="figures/wifi.png">A screenshot</media>
  <steps>
    <item><p>Run <cmd>nmcli device wifi list</cmd> to see the <media type="image" src="n.svg">wireless</media>
    networks.</p></item>
    <item><p if:test="platform:gnome-classic">Classic only.</p><p>Select a network.</p></item>
  </steps>
  <if:choose>
    <if:when test="platform:unity"><p>Unity text.</p></if:when>
    <if:else><p>Everywhere else.</p></if:else>
  </if:choose>
  <section id="cli"><title>From a terminal</title>
    <code>nmcli device wifi connect MyNet
nmcli connection show</code>
    <table><title>Fields</title><tr><td><p>SSID</p></td><td><p>the network's name</p></td></tr></table>
  </section>
</page>
"""


def test_help_pages_from_mallard(source_tree, tmp_path):
    help_root = tmp_path / "help"
    (help_root / "C/demo").mkdir(parents=True)
    (help_root / "de/demo").mkdir(parents=True)
    (help_root / "C/demo/wifi.page").write_text(MALLARD)
    (help_root / "de/demo/wifi.page").write_text(MALLARD.replace("Connect to a", "Verbinden mit einem"))
    (help_root / "C/demo/broken.page").write_text("<page><p>unclosed</page>")
    (help_root / "C/demo/figures").mkdir()
    (help_root / "C/demo/figures/wifi.png").write_bytes(b"\x89PNG")
    cfg = source_tree.replace(sources=("help_pages",), help_root=str(help_root))
    m = build_site(tmp_path / "site", cfg)
    assert m.by_source == {"help_pages": 2} and m.failures_by_reason == {"help_page_invalid": 1}
    assert links(tmp_path / "site/index.html") == ["/", "/help/"]
    assert links(tmp_path / "site/help/index.html") == [
        "/",
        "/help/C/demo/wifi.html",
        "/help/de/demo/wifi.html",
    ]
    page = (tmp_path / "site/help/C/demo/wifi.html").read_text()
    assert '<html lang="en">' in page and "<title>Connect to a Wi-Fi network</title>" in page
    assert '<html lang="de">' in (tmp_path / "site/help/de/demo/wifi.html").read_text()
    assert extracted(page) == (
        "Connect to a Wi-Fi network\n"
        "Open the Settings panel and press Ctrl+W, or choose Network ▸ Wi-Fi from the menu.\n"
        "- Run nmcli device wifi list to see the wireless networks.\n"
        "- Select a network.\n"
        "Everywhere else.\n"
        "From a terminal\n"
        "nmcli device wifi connect MyNet\n"
        "nmcli connection show\n"
        "Fields\n"
        "SSID | the network's name"
    )


def test_mallard_to_html_rejects_other_xml():
    with pytest.raises(ValueError, match="not a Mallard <page>"):
        mallard_to_html("<book><title>x</title></book>")
    with pytest.raises(ValueError, match="not well-formed XML"):
        mallard_to_html("<page>")
    title, body = mallard_to_html('<page xmlns="http://projectmallard.org/1.0/"><title>T</title></page>')
    assert (title, body) == ("T", "<h1>T</h1>")


def test_html_doc_roots_capped_per_language(source_tree, tmp_path):
    lo = tmp_path / "libreoffice/help"
    for lang in ("de", "en-US"):
        (lo / lang / "text").mkdir(parents=True)
        for i in range(3):
            (lo / lang / f"text/p{i}.html").write_text(f"<html><body><p>{lang} {i}</p></body></html>")
    cfg = source_tree.replace(sources=("html_docs",), html_doc_roots=(str(lo),), max_html_docs_per_package=2)
    m = build_site(tmp_path / "site", cfg)
    assert m.by_source == {"html_docs": 1 + 2 + 2}  # pkg's guide, two pages of each language
    label = str(lo).strip("/").replace("/", "-")
    docs = links(tmp_path / "site/docs/index.html")
    assert sum(u.startswith(f"/docs/{label}/de/text/") for u in docs) == 2
    assert sum(u.startswith(f"/docs/{label}/en-US/text/") for u in docs) == 2


def test_large_preset_reads_every_installed_source():
    large = LocalWebConfig.from_preset("large")
    assert large.sources == ("man", "html_docs", "tex_docs", "metadata", "copyright", "help_pages")
    assert large.html_doc_roots == (
        "/usr/share/libreoffice/help",
        "/usr/share/gimp/2.0/help",
        "/usr/share/debian-reference",
        "/usr/share/developers-reference",
    )
    assert (large.max_help_pages, large.render_workers) == (1_000_000, 16)
    assert LocalWebConfig.from_preset("large", render_workers=2).render_workers == 2
    # the tiny default stays as it was: no help pages, no extra HTML trees
    tiny = LocalWebConfig.from_preset("tiny")
    assert (tiny.sources, tiny.html_doc_roots) == (
        ("man", "html_docs", "tex_docs", "metadata", "copyright"),
        (),
    )
    with pytest.raises(
        ConfigError, match="unknown preset 'huge'; choose one of tiny, small, 8b, 70b, 405b, large"
    ):
        LocalWebConfig.from_preset("huge")
