"""The lifecycle report renderer: escaping, number formatting, plots inlined, bad input refused."""

import base64

import pytest

from ml.report import Plot, Section, Table, fmt, render_html, render_markdown

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8


def _sections():
    return [
        Section(
            "Scaling <laws>",
            notes=("alpha & friends",),
            tables=(
                Table("fit", ("metric", "value"), (("alpha", 0.49312), ("tokens", 1790000), ("x|y", None))),
            ),
            plots=(Plot("isoflops", PNG),),
        )
    ]


def test_numbers_are_formatted_for_people():
    assert [fmt(v) for v in (0.49312, 1790000, 2.5e7, 3.1e-5, 0.0, float("nan"), None, True, "s")] == [
        "0.4931",
        "1,790,000",
        "2.500e+07",
        "3.100e-05",
        "0",
        "—",
        "—",
        "True",
        "s",
    ]


def test_html_escapes_text_and_inlines_plots():
    page = render_html("Report <1>", _sections(), subtitle="snapshot a&b")
    assert page.startswith("<!doctype html>") and page.endswith("</html>\n")
    assert "<h1>Report &lt;1&gt;</h1>" in page and "<p>snapshot a&amp;b</p>" in page
    assert "<h2>Scaling &lt;laws&gt;</h2>" in page and "<p>alpha &amp; friends</p>" in page
    assert "<tr><td>alpha</td><td>0.4931</td></tr><tr><td>tokens</td><td>1,790,000</td></tr>" in page
    assert f"src='data:image/png;base64,{base64.b64encode(PNG).decode()}'" in page
    assert page == render_html("Report <1>", _sections(), subtitle="snapshot a&b")  # deterministic


def test_markdown_has_pipe_tables_and_data_uri_images():
    md = render_markdown(_sections())
    assert md.splitlines()[:9] == [
        "### Scaling <laws>",
        "alpha & friends",
        "**fit**",
        "",
        "| metric | value |",
        "|---|---|",
        "| alpha | 0.4931 |",
        "| tokens | 1,790,000 |",
        "| x\\|y | — |",
    ]
    assert f"![isoflops](data:image/png;base64,{base64.b64encode(PNG).decode()})" in md


def test_bad_input_is_refused_with_its_name():
    with pytest.raises(ValueError, match=r"Table 'fit': row 1 has 1 cells, the header 2"):
        Table("fit", ("a", "b"), ((1, 2), (3,)))
    with pytest.raises(ValueError, match=r"Plot 'loss': not a PNG file"):
        Plot("loss", b"GIF89a")
