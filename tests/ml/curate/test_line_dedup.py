import pandas as pd
import pytest

from ml.config import ConfigError
from ml.curate.line_dedup import LineDedupConfig, is_heading, line_dedup, normalize_line

NAMES = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf"]
SEVEN = [
    "Cookie notice: we use cookies (2023).",
    "COOKIE NOTICE — we use cookies 1999!",
]  # same once normalised
SIX = "Subscribe to our newsletter"


def _bucket() -> pd.DataFrame:
    texts = [
        f"Unique content about {NAMES[i]}\n{SEVEN[i % 2]}\n{SIX}" for i in range(6)
    ]  # 6 x SEVEN, 6 x SIX
    texts += [f"Unique content about {NAMES[6]}", SEVEN[1]]  # 7th SEVEN: a doc with nothing else
    df = pd.DataFrame(
        {"id": [f"d{i}" for i in range(8)], "url": [f"http://h/{i}" for i in range(8)], "text": texts}
    )
    df["n_chars"] = df["text"].str.len()
    df["n_words"] = df["text"].str.split().str.len()
    return df


def test_normalize_line_like_ccnet():
    assert normalize_line("  Cookie notice: we use cookies (2023).  ") == "cookie notice we use cookies 0000"
    assert normalize_line(SEVEN[0]) == normalize_line(SEVEN[1])
    assert normalize_line("Grüße,\tWelt!") == "grüße welt"


def test_line_seen_n_plus_one_times_removed_n_times_kept():
    df = _bucket()
    res = line_dedup(df, LineDedupConfig(max_occurrences=6, bucket_size=8))
    assert res.kept["text"].tolist() == [f"Unique content about {n}\n{SIX}" for n in NAMES[:6]] + [
        "Unique content about golf"
    ]
    assert res.kept["lines_removed"].tolist() == [1, 1, 1, 1, 1, 1, 0]
    assert res.kept["n_chars"].tolist() == [len(t) for t in res.kept["text"]]
    assert res.kept["n_words"].tolist() == [8, 8, 8, 8, 8, 8, 4]
    assert res.dropped[["id", "reason", "detail"]].values.tolist() == [
        ["d7", "empty_after_line_dedup", "1 lines removed"]
    ]
    removed_chars = 3 * (len(SEVEN[0]) + 1) + 3 * (len(SEVEN[1]) + 1) + len(SEVEN[1])  # line + its newline
    assert res.stats == {
        "lines_in": 20,
        "lines_removed": 7,
        "fraction_lines_removed": 7 / 20,
        "chars_in": int(df["n_chars"].sum()),
        "chars_removed": removed_chars,
        "fraction_chars_removed": removed_chars / int(df["n_chars"].sum()),
        "buckets": 1,
    }


def test_counts_are_per_bucket():
    res = line_dedup(_bucket(), LineDedupConfig(max_occurrences=6, bucket_size=4))  # SEVEN: 4 + 3 per bucket
    assert res.stats["lines_removed"] == 0 and res.stats["buckets"] == 2
    assert res.kept["text"].tolist() == _bucket()["text"].tolist()
    assert res.dropped.empty


def test_repeats_inside_one_document_count_and_short_lines_are_spared():
    text = "\n".join(["menu item"] * 7 + ["ok"] * 9 + ["the body of the page"])
    df = pd.DataFrame({"id": ["a"], "url": ["http://h/a"], "text": [text]})
    res = line_dedup(df, LineDedupConfig(max_occurrences=6, bucket_size=10, min_line_chars=3))
    assert res.kept["text"].tolist() == ["\n".join(["ok"] * 9 + ["the body of the page"])]
    assert res.kept["lines_removed"].tolist() == [7]


def test_config_and_input_errors():
    with pytest.raises(ConfigError, match="max_occurrences"):
        LineDedupConfig(max_occurrences=0)
    with pytest.raises(KeyError, match="'text'"):
        line_dedup(pd.DataFrame({"id": ["a"], "url": ["u"]}), LineDedupConfig())
    assert LineDedupConfig.from_preset("8b").bucket_size == 30_000_000


def test_section_headings_are_structure_and_are_kept():
    # 8 man pages: the headings and the footer line each occur 8 times (> 6)
    pages = [
        f"NAME\ntool{c} - does thing {c}\nSYNOPSIS\ntool{c} [OPTION]...\nSEE ALSO\nReport bugs to the list."
        for c in "abcdefgh"  # (digits would normalise to one line)
    ]
    df = pd.DataFrame(
        {"id": [f"d{i}" for i in range(8)], "url": [f"http://h/{i}" for i in range(8)], "text": pages}
    )
    kept = line_dedup(df, LineDedupConfig(bucket_size=100)).kept
    # the footer goes; the headings, counted as structure, stay
    assert kept["text"].tolist()[3] == "NAME\ntoold - does thing d\nSYNOPSIS\ntoold [OPTION]...\nSEE ALSO"
    ccnet = line_dedup(df, LineDedupConfig(bucket_size=100, keep_headings=False)).kept
    assert ccnet["text"].tolist()[3] == "toold - does thing d\ntoold [OPTION]..."
    assert [
        is_heading(x) for x in ("NAME", "SEE ALSO", "ÜBERSICHT", "Name", "SEE ALSO:", "A B C D E", "")
    ] == [
        True,
        True,
        True,
        False,
        False,
        False,
        False,
    ]
