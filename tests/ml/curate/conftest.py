"""Real documents for curation tests: a small local web built from this machine's docs, text extracted."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from ml.sources.extract import ExtractConfig, extract_html, identify_language
from ml.sources.localweb import LocalWebConfig, build_site

# ~600 content pages: English and translated man pages, package HTML docs, PyPI descriptions, licences.
SMALL_WEB = LocalWebConfig(
    max_man_pages_en=300,
    max_man_pages_per_lang=6,
    max_html_docs=60,
    max_metadata=120,
    max_copyright=150,
    render_workers=2,
)


def _content_pages(site: Path) -> list[Path]:
    """HTML and text pages that carry a document (index pages left out)."""
    pages = [p for p in sorted(site.rglob("*")) if p.suffix in (".html", ".htm", ".txt") and p.is_file()]
    return [p for p in pages if not p.name.startswith("index") or p.parent.parent.name == "pypi"]


@pytest.fixture(scope="session")
def local_web_docs(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """``url, text, lang`` of every content page of a small local web, extracted like the crawl does."""
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed (scripts/install-system-deps.sh installs it)")
    site = tmp_path_factory.mktemp("web") / "site"
    build_site(site, SMALL_WEB)
    cfg = ExtractConfig.from_preset("tiny")
    rows = []
    for page in _content_pages(site):
        raw = page.read_text(encoding="utf-8", errors="replace")
        text = raw.strip() if page.suffix == ".txt" else extract_html(raw, cfg)[0]
        if text:
            url = "/" + page.relative_to(site).as_posix()
            rows.append({"id": url, "url": url, "text": text, "lang": identify_language(text)[0]})
    return pd.DataFrame(rows)
