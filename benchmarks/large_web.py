"""How many curated tokens the ``large`` local web yields: build it, sample its pages, extract, tokenize.

    nice -n 19 env PYTHONPATH=. python benchmarks/large_web.py --site /tmp/large-site \\
        [--workers 2] [--man-en N --man-lang N] [--per-stratum 25] [--home /tmp/mr5/repo/data] \\
        [--out benchmarks/results/DATE-cpu-large-web.json]

1. Builds ``LocalWebConfig.from_preset("large")`` (after ``make install-large-web``) with ``--workers``
   render processes. Manual pages are the slow part (one groff run each): ``--man-en``/``--man-lang`` cap
   them, and the man figures are then extrapolated by the share of the installed pages rendered (printed,
   and marked ``extrapolated`` in the JSON). Every other source is built in full.
2. Sorts the content pages (index pages left out) into strata: one per manual language, per LibreOffice,
   GIMP and Mallard help language, per ``/usr/share/doc`` package with >= 200 pages (the rest one stratum),
   PyPI, copyright files and TeX manuals. Counts pages and bytes of each.
3. Extracts a seeded random sample of ``--per-stratum`` pages per stratum with the project's extraction
   (``extract_html``, ExtractConfig ``small``: trafilatura, >= 200 characters and 30 words) and estimates
   each stratum's extracted bytes by the ratio estimator (sampled extracted bytes / sampled page bytes x
   the stratum's page bytes).
4. Tokens: trains the ``small`` tokenizer (32,768 BPE, the project's trainer) on half of the sampled texts
   and counts bytes per token on the other half; also counts with the ``tiny`` 4,096 tokenizer of
   ``--home`` when it has one.
5. Curated share: from ``--home``'s tiny funnel (``extracted_docs`` vs the first copies, ``repeat == 0``,
   of ``curated_corpus``), bytes kept per source (``/docs/``, ``/man/``, ...). Applied per source; Mallard
   help pages take the ``/docs/`` share (both are manuals in HTML).
6. Line duplication across translations: for sampled LibreOffice/GIMP/Mallard pages, the same page in
   every language; the share of a page's bytes on lines that occur in more than 6 languages (line dedup,
   ``LineDedupConfig.max_occurrences``, removes lines seen more than 6 times in a bucket).
"""

from __future__ import annotations

import argparse
import glob
import json
import random
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from ml.sources.extract import ExtractConfig, extract_html, identify_language
from ml.sources.localweb import LocalWebConfig, _lang_roots, _list_man_pages, build_site
from ml.tokens.tokenizer import TokenizerConfig, count_tokens, load_tokenizer, train_tokenizer

FAMILY_PREFIX = {
    "/docs/usr-share-libreoffice-help/": "libreoffice",
    "/docs/usr-share-gimp-2.0-help/": "gimp",
}


def stratum(url: str) -> tuple[str, str]:
    """``(source family, stratum)`` of a content page's URL."""
    parts = url.split("/")
    for prefix, family in FAMILY_PREFIX.items():
        if url.startswith(prefix):
            return family, f"{family}:{parts[3]}"
    if url.startswith("/docs/tex/"):
        return "tex", "tex"
    if url.startswith("/docs/"):
        return "docs", f"docs:{parts[2]}/{parts[3]}"
    if url.startswith(("/man/", "/private/man/")):
        lang = parts[2] if url.startswith("/man/") else parts[3]
        return "man", f"man:{lang}"
    if url.startswith("/help/"):
        return "help", f"help:{parts[2]}"
    return parts[1], parts[1]


def content_pages(site: Path) -> pd.DataFrame:
    rows = []
    for p in site.rglob("*"):
        if p.suffix not in (".html", ".htm", ".txt") or not p.is_file():
            continue
        url = "/" + p.relative_to(site).as_posix()
        if (p.name.startswith("index") and not url.startswith("/pypi/")) or url == "/robots.txt":
            continue
        family, strat = stratum(url)
        rows.append((url, family, strat, p.stat().st_size))
    df = pd.DataFrame(rows, columns=["url", "family", "stratum", "bytes"])
    small_docs = df["family"].eq("docs") & df.groupby("stratum")["url"].transform("size").lt(200)
    df.loc[small_docs, "stratum"] = "docs:other"
    return df


def extract_sample(site: Path, pages: pd.DataFrame, per_stratum: int, seed: int) -> pd.DataFrame:
    cfg = ExtractConfig.from_preset("small")
    sample = pages.sample(frac=1.0, random_state=seed).groupby("stratum").head(per_stratum)
    texts, langs = [], []
    for url in sample["url"]:
        path = site / url.lstrip("/")
        raw = path.read_text(encoding="utf-8", errors="replace")
        text = raw if path.suffix == ".txt" else extract_html(raw, cfg, url=url)[0]
        ok = len(text) >= cfg.min_chars and len(text.split()) >= cfg.min_words
        texts.append(text if ok else "")
        langs.append(identify_language(text)[0] if ok else "")
    sample = sample.assign(text=texts, lang=langs)
    return sample.assign(text_bytes=sample["text"].str.encode("utf-8").str.len())


def stratum_estimates(pages: pd.DataFrame, sample: pd.DataFrame) -> pd.DataFrame:
    """Per stratum: pages, page bytes, sampled pages, kept share and estimated extracted bytes."""
    tot = pages.groupby("stratum").agg(
        family=("family", "first"), pages=("url", "size"), bytes=("bytes", "sum")
    )
    s = sample.groupby("stratum").agg(
        sampled=("url", "size"), kept=("text_bytes", lambda b: int((b > 0).sum())),
        s_bytes=("bytes", "sum"), s_text=("text_bytes", "sum"),
    )  # fmt: skip
    out = tot.join(s)
    out["text_bytes"] = (out["bytes"] * out["s_text"] / out["s_bytes"]).round()
    en = sample[sample["lang"] == "en"].groupby("stratum")["text_bytes"].sum()
    out["en_text_bytes"] = (out["text_bytes"] * en.reindex(out.index).fillna(0) / out["s_text"]).fillna(0)
    return out


def token_rates(sample: pd.DataFrame, home: Path | None, seed: int) -> dict[str, float]:
    """Bytes per token of the sampled texts: a ``small`` tokenizer trained on one half, counted on the
    other; the tiny home's tokenizer on all of them."""
    texts = [t for t in sample["text"] if t]
    rng = random.Random(seed)
    rng.shuffle(texts)
    train, held = texts[: len(texts) // 2], texts[len(texts) // 2 :]
    t0 = time.monotonic()
    tok = train_tokenizer(train, TokenizerConfig.from_preset("small"))
    held_bytes = sum(len(t.encode()) for t in held)
    out = {
        "small_bytes_per_token": held_bytes / int(count_tokens(tok, held).sum()),
        "small_train_docs": len(train),
        "small_heldout_docs": len(held),
        "small_train_s": round(time.monotonic() - t0, 1),
    }
    tiny_dir = home / "tokenizer/local-web" if home else None
    if tiny_dir and (tiny_dir / "tokenizer.json").is_file():
        tiny = load_tokenizer(tiny_dir)
        all_bytes = sum(len(t.encode()) for t in texts)
        out["tiny_bytes_per_token"] = all_bytes / int(count_tokens(tiny, texts).sum())
    return out


def curated_shares(home: Path) -> dict[str, float]:
    """Bytes of the tiny funnel's curated first copies / extracted bytes, per source (URL's first part)."""

    def read(step: str, cols: list[str]) -> pd.DataFrame:
        files = sorted(glob.glob(str(home / step / "local-web/docs/*.parquet")))
        return pd.concat([pd.read_parquet(f, columns=cols) for f in files])

    ext = read("extracted_docs", ["url", "text"])
    cur = read("curated_corpus", ["url", "text", "repeat"])
    cur = cur[cur["repeat"] == 0]
    shares = {}
    for df, key in ((ext, "extracted"), (cur, "curated")):
        src = df["url"].str.split("/", n=4).str[3]
        df = df.assign(src=src, b=df["text"].str.encode("utf-8").str.len())
        shares[key] = df.groupby("src")["b"].sum()
    ratio = (shares["curated"] / shares["extracted"]).dropna()
    out = {k: float(v) for k, v in ratio.items()}
    out["all"] = float(shares["curated"].sum() / shares["extracted"].sum())
    return out


def _page_text(site: Path, url: str, cfg: ExtractConfig) -> str:
    return extract_html((site / url.lstrip("/")).read_text(encoding="utf-8", errors="replace"), cfg, url=url)[
        0
    ]


def translation_line_dups(site: Path, pages: pd.DataFrame, n_paths: int, seed: int) -> dict[str, float]:
    """Per translated family: share of its bytes on lines found in > 6 languages' copies of the same page
    (``n_paths`` pages, every language's copy extracted)."""
    cfg = ExtractConfig.from_preset("small")
    out = {}
    for family, lang_at in (("libreoffice", 3), ("gimp", 3), ("help", 2)):
        groups: dict[str, list[str]] = defaultdict(list)
        for url in pages.loc[pages["family"] == family, "url"]:
            parts = url.split("/")
            groups["/".join(parts[:lang_at] + parts[lang_at + 1 :])].append(url)
        keys = sorted(k for k, v in groups.items() if len(v) > 6)
        if not keys:
            continue
        total = dup = 0
        for key in random.Random(seed).sample(keys, min(n_paths, len(keys))):
            texts = [_page_text(site, u, cfg) for u in groups[key]]
            seen = Counter(line for t in texts for line in set(t.split("\n")) if line.strip())
            for line in (ln for t in texts for ln in t.split("\n") if ln.strip()):
                size = len(line.encode()) + 1
                total += size
                dup += size if seen[line] > 6 else 0
        out[family] = dup / total if total else 0.0
    return out


def man_scale(cfg: LocalWebConfig) -> dict[str, float]:
    """Installed manual pages / pages selected under the caps, per language (1.0: all rendered)."""
    man_root = Path(cfg.man_root)
    scale = {}
    for lang, root in _lang_roots(man_root).items():
        n = len(_list_man_pages(lang, root))
        cap = cfg.max_man_pages_en if lang == "en" else cfg.max_man_pages_per_lang
        scale[lang] = n / min(n, cap) if n else 1.0
    return scale


def totals(est: pd.DataFrame, scale: dict[str, float], rates: dict, shares: dict) -> pd.DataFrame:
    """Per family: pages, page bytes, extracted bytes (man extrapolated by ``scale``), tokens, curated."""
    est = est.copy()
    lang = est.index.to_series().str.removeprefix("man:")
    factor = np.where(est["family"] == "man", lang.map(scale).fillna(1.0), 1.0)
    for col in ("pages", "bytes", "text_bytes", "en_text_bytes"):
        est[col] = est[col] * factor
    fam = est.groupby("family")[["pages", "bytes", "text_bytes", "en_text_bytes"]].sum()
    fam["tokens_small"] = fam["text_bytes"] / rates["small_bytes_per_token"]
    source = {"libreoffice": "docs", "gimp": "docs", "help": "docs", "tex": "docs"}
    fam["curated_share"] = [shares.get(source.get(f, f), shares["all"]) for f in fam.index]
    fam["curated_tokens_small"] = fam["tokens_small"] * fam["curated_share"]
    fam.loc["TOTAL"] = fam.sum(numeric_only=True)
    fam.loc["TOTAL", "curated_share"] = (
        fam.loc["TOTAL", "curated_tokens_small"] / fam.loc["TOTAL", "tokens_small"]
    )
    return fam


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--site", type=Path, required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--man-en", type=int, default=None, help="cap on English manual pages (default: all)")
    ap.add_argument("--man-lang", type=int, default=None, help="cap per translated language (default: all)")
    ap.add_argument("--per-stratum", type=int, default=25)
    ap.add_argument("--dup-paths", type=int, default=15)
    ap.add_argument("--home", type=Path, default=Path("/tmp/mr5/repo/data"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    caps = {k: v for k, v in (("max_man_pages_en", a.man_en), ("max_man_pages_per_lang", a.man_lang)) if v}
    cfg = LocalWebConfig.from_preset("large", render_workers=a.workers, **caps)
    t0 = time.monotonic()
    manifest = build_site(a.site, cfg)
    print(f"built in {time.monotonic() - t0:.0f} s: {manifest.by_source}", flush=True)
    pages = content_pages(a.site)
    t0 = time.monotonic()
    sample = extract_sample(a.site, pages, a.per_stratum, a.seed)
    print(f"extracted {len(sample)} sampled pages in {time.monotonic() - t0:.0f} s", flush=True)
    est = stratum_estimates(pages, sample)
    rates = token_rates(sample, a.home, a.seed)
    shares = curated_shares(a.home)
    scale = man_scale(cfg)
    fam = totals(est, scale, rates, shares)
    dups = translation_line_dups(a.site, pages, a.dup_paths, a.seed)
    pd.set_option("display.width", 200)
    print(fam.round(3).to_string())
    print(json.dumps({"rates": rates, "shares": shares, "translation_line_dups": dups}, indent=1))
    result = {
        "manifest": {k: v for k, v in manifest.__dict__.items() if k != "by_language"},
        "man_caps": caps, "man_scale": scale, "extrapolated": {"man": bool(caps)},
        "langs_sampled": dict(Counter(sample.loc[sample["text_bytes"] > 0, "lang"]).most_common()),
        "strata": est.reset_index().to_dict(orient="records"), "families": fam.reset_index().to_dict(orient="records"),
        "rates": rates, "curated_shares": shares, "translation_line_dups": dups,
    }  # fmt: skip
    if a.out:
        a.out.write_text(json.dumps(result, indent=1, default=float) + "\n")
        sample.drop(columns="text").to_parquet(a.out.with_suffix(".sample.parquet"))


if __name__ == "__main__":
    sys.exit(main())
