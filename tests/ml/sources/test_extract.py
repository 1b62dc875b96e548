import dataclasses
import hashlib

import pytest

from ml.config import ConfigError
from ml.sources.extract import (
    KEPT_COLUMNS,
    ExtractConfig,
    decode_payload,
    doc_id,
    extract_documents,
    extract_html,
)
from ml.sources.records import WebRecord

T0 = "2024-01-02T03:04:05Z"
PROSE = (
    "This page explains how to write a simple loop in Python and what each part of the loop does. "
    "Read it from top to bottom, then run the example in an interpreter to see the numbers printed."
)
CODE_PAGE = f"""<!doctype html><html><head><title>Loops</title></head><body>
<nav><a href="/">Home</a> <a href="/about">About</a></nav>
<article><h1>Loops in Python</h1><p>{PROSE}</p>
<pre><code>for i in range(3):
    print(i)
total = sum(range(10))</code></pre>
<p>The formula <math alttext="x^2 + y^2 = z^2"><mi>x</mi></math> is not code, but it is kept as well.</p>
<p>{PROSE}</p></article><footer>Copyright 2024</footer></body></html>"""
GERMAN = (
    "Die Stadtbibliothek öffnet am Montag wieder ihre Türen. Nach monatelangen Umbauarbeiten können die "
    "Besucher nun in hellen Räumen lesen, arbeiten und sich mit Freunden treffen. Die Leiterin der Bibliothek "
    "freut sich über das neue Café im Erdgeschoss und über die längeren Öffnungszeiten am Wochenende."
)
FRENCH = (
    "La bibliothèque municipale rouvre ses portes lundi prochain. Après des mois de travaux, les visiteurs "
    "peuvent désormais lire, travailler et retrouver leurs amis dans des salles lumineuses. La directrice se "
    "réjouit du nouveau café au rez-de-chaussée et des horaires élargis pendant le week-end."
)


def rec(url, payload, content_type="text/html; charset=utf-8", status=200, record_type="response", offset=0):
    return WebRecord(url=url, fetch_time=T0, record_type=record_type, content_type=content_type,
                     http_status=status, payload=payload, warc_file="crawl-00000.warc.gz", offset=offset)  # fmt: skip


def page(body: str) -> bytes:
    return f"<html><head><title>t</title></head><body><article><p>{body}</p></article></body></html>".encode()


CFG = ExtractConfig.from_preset("tiny")


def test_code_block_and_math_survive_with_newlines():
    text, extractor = extract_html(CODE_PAGE, CFG)
    assert extractor == "trafilatura"
    assert "for i in range(3):\n    print(i)\ntotal = sum(range(10))" in text
    assert "$x^2 + y^2 = z^2$" in text
    assert "Home" not in text and "Copyright" not in text
    assert "```" not in text and "#" not in text  # paper: markdown markers removed


def test_groff_man_page_keeps_sections_and_options():
    # groff -Thtml shape: title/section headers as h1/h2, option lists in layout tables
    rows = "".join(
        f'<tr valign="top"><td width="11%"></td><td width="3%"><p><b>-{c}</b></p></td><td width="5%"></td>'
        f"<td><p>option {c} changes the listing</p></td></tr>"
        for c in "aA"
    )
    groff = (
        '<html><head><meta name="generator" content="groff -Thtml"><title>LS</title></head><body>'
        '<h1 align="center">LS</h1><a href="#NAME">NAME</a><br><hr>'
        '<h2>NAME<a name="NAME"></a></h2><p style="margin-left:11%">ls - list directory contents</p>'
        f'<h2>OPTIONS</h2><table width="100%" border="0">{rows}</table><hr></body></html>'
    )
    text, _ = extract_html(groff, ExtractConfig.from_preset("small"))
    assert "ls - list directory contents\nOPTIONS\n-a\noption a changes the listing\n-A\n" in text


def test_lxml_fallback_when_trafilatura_finds_too_little():
    # old generated API docs: layout tables, the content is a few identifiers; trafilatura keeps < min_chars
    menu = "".join(f'<tr><td><a href="{x.lower()}.html">{x}</a></td></tr>' for x in ["Home", "Introduction"])
    html = (
        '<?xml version="1.0" encoding="ISO-8859-1"?>\n<html xmlns="http://www.w3.org/1999/xhtml"><head>'
        '<title>API</title><script>var skipped = 1;</script></head><body><table width="100%"><tr>'
        f'<td width="180"><table>{menu}</table></td><td><table><tr><td><h2>Types</h2>'
        "<p>Type const xmlChar *:</p><p>exsltDateXpathCtxtRegister</p><pre>int main(void)\n{\n  return 0;\n}</pre>"
        '</td></tr></table></td></tr></table><p><a href="mailto:a@b">Daniel Veillard</a></p></body></html>'
    )
    text, extractor = extract_html(html, ExtractConfig.from_preset("small"))
    assert extractor == "lxml"
    assert text == (
        "Home\nIntroduction\nTypes\nType const xmlChar *:\nexsltDateXpathCtxtRegister\n"
        "int main(void)\n{\n  return 0;\n}\nDaniel Veillard"
    )


def test_documents_columns_ids_languages_and_drops():
    records = [
        rec("http://local/code.html", CODE_PAGE.encode()),
        rec("http://local/de.html", page(GERMAN), offset=100),
        rec("http://local/fr.html", page(FRENCH).decode().encode("latin-1", "xmlcharrefreplace")
            .replace(b"<head>", b'<head><meta charset="iso-8859-1">'), content_type="text/html", offset=200),
        rec("http://local/wet", (PROSE + "\n\n" + PROSE + "\n").encode(), content_type="text/plain",
            status=None, record_type="conversion", offset=300),
        rec("http://local/logo.png", b"\x89PNG\r\n\x1a\n" + bytes(64), content_type="image/png"),
        rec("http://local/blob.html", bytes(range(256)) * 4, content_type="text/html"),
        rec("http://local/missing.html", b"<html><body>Not Found</body></html>", status=404),
        rec("http://local/short.html", page("Too short.")),
    ]  # fmt: skip
    res = extract_documents(records, CFG, source="localweb")
    kept = res.kept.set_index("url")
    assert list(res.kept.columns) == list(KEPT_COLUMNS)
    assert list(kept.index) == [
        "http://local/code.html",
        "http://local/de.html",
        "http://local/fr.html",
        "http://local/wet",
    ]
    assert kept.loc["http://local/de.html", "lang"] == "de"
    assert kept.loc["http://local/fr.html", "lang"] == "fr"
    assert kept.loc["http://local/de.html", "lang_score"] > 0.99
    assert "la directrice se réjouit du nouveau café" in kept.loc["http://local/fr.html", "text"].lower()
    assert kept.loc["http://local/wet", "text"] == PROSE + "\n\n" + PROSE
    assert kept.loc["http://local/wet", "extractor"] == "plain"
    assert kept.loc["http://local/de.html", "warc_offset"] == 100
    assert (kept["source"] == "localweb").all()
    assert (
        kept.loc["http://local/de.html", "id"]
        == hashlib.sha1(f"http://local/de.html{T0}".encode()).hexdigest()[:16]
    )
    assert kept.loc["http://local/wet", "n_words"] == 2 * len(PROSE.split())
    reasons = dict(zip(res.dropped["url"], res.dropped["reason"], strict=True))
    assert reasons == {
        "http://local/logo.png": "not_html",
        "http://local/blob.html": "undecodable",
        "http://local/missing.html": "http_error",
        "http://local/short.html": "too_short",
    }
    assert res.dropped.set_index("url").loc["http://local/logo.png", "id"] == doc_id(
        "http://local/logo.png", T0
    )
    summary = res.summary()
    assert summary["docs_in"] == 8 and summary["docs_out"] == 4
    assert summary["lang/de"] == 1 and summary["lang/fr"] == 1 and summary["lang/en"] == 2
    assert summary["extractor/plain"] == 1 and summary["extractor/trafilatura"] == 3


def test_batches_give_the_same_result():
    records = [rec(f"http://local/{i}.html", page(GERMAN if i % 2 else FRENCH)) for i in range(5)]
    one = extract_documents(records, CFG.replace(batch_size=100), "s")
    many = extract_documents(records, CFG.replace(batch_size=2), "s")
    assert one.kept.equals(many.kept)
    assert one.summary() == many.summary()


def test_workers_give_the_same_result():
    from concurrent.futures import ProcessPoolExecutor

    records = [rec(f"http://local/{i}.html", page(GERMAN if i % 3 else FRENCH), offset=i) for i in range(70)]
    records.append(rec("http://local/empty.html", b"  "))
    here = extract_documents(records, CFG, "s")
    with ProcessPoolExecutor(2) as pool:
        there = extract_documents(records, CFG, "s", client=pool)
    assert here.kept.equals(there.kept) and here.dropped.equals(there.dropped)
    assert here.summary() == there.summary() and here.summary()["docs_in"] == 71
    assert (len(here.kept), len(here.dropped)) == (70, 1)  # three batches of 32 on the workers


def test_output_names_the_warc_file_not_where_it_lies():
    # the same crawl read from two homes (or two versions of it) gives byte-identical documents
    records = [rec("http://local/de.html", page(GERMAN), offset=100)]
    paths = ["/home-a/data/raw_crawl/.versions/local-web/v1/crawl-00000.warc.gz", "/b/crawl-00000.warc.gz"]
    outs = [
        extract_documents([dataclasses.replace(records[0], warc_file=p)], CFG, source="s").kept for p in paths
    ]
    assert outs[0]["warc_file"].tolist() == ["crawl-00000.warc.gz"]
    assert outs[0].equals(outs[1])


def test_decode_payload_charsets():
    assert decode_payload("Grüße".encode("latin-1"), "text/html; charset=ISO-8859-1") == (
        "Grüße",
        "iso8859-1",
    )
    assert decode_payload("Grüße".encode(), "text/html") == ("Grüße", "utf-8")
    assert decode_payload(b'<meta charset="koi8-r">' + "Привет".encode("koi8-r"), "text/html")[1] == "koi8-r"
    assert decode_payload(bytes(range(256)) * 4, "text/html") is None


def test_config_rejects_unknown_extractor():
    with pytest.raises(ConfigError, match="extractor"):
        ExtractConfig(extractor="bs4")


def test_same_capture_twice_is_kept_once():
    page = (
        "<html><body><p>"
        + "A paragraph of ordinary English prose for the extractor. " * 8
        + "</p></body></html>"
    )
    rec = WebRecord(
        url="http://h/a",
        fetch_time="2024-01-01T00:00:00Z",
        record_type="response",
        content_type="text/html; charset=utf-8",
        http_status=200,
        payload=page.encode(),
        warc_file="a.warc.gz",
        offset=0,
    )
    res = extract_documents([rec, rec], ExtractConfig.from_preset("tiny"), source="t")
    assert len(res.kept) == 1
    assert res.dropped["reason"].tolist() == ["duplicate_record"]
