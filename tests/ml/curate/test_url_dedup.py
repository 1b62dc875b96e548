import pandas as pd
import pytest

from ml.curate.url_dedup import UrlDedupConfig, normalize_url, url_dedup


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("HTTP://Example.COM:80/a//b/?utm_source=x&b=2&a=1#frag", "http://example.com/a/b?a=1&b=2"),
        ("https://example.com", "https://example.com/"),
        ("https://example.com:443/", "https://example.com/"),
        ("https://example.com:8443/docs/", "https://example.com:8443/docs"),
        ("http://example.com./a/./b/../c?fbclid=1&gclid=2", "http://example.com/a/c"),
        ("http://example.com/p?q=a%2fb&utm_medium=mail", "http://example.com/p?q=a%2Fb"),
        ("http://127.0.0.1:8000/man/ls.1.html", "http://127.0.0.1:8000/man/ls.1.html"),
    ],
)
def test_normalize_url(url, expected):
    assert normalize_url(url) == expected


def test_trailing_slash_and_www_are_options():
    cfg = UrlDedupConfig(strip_trailing_slash=False, strip_www=True)
    assert normalize_url("https://www.example.com/docs/", cfg) == "https://example.com/docs/"


def test_keeps_most_recent_fetch_and_names_the_kept_id():
    df = pd.DataFrame({
        "id": ["a", "b", "c", "d", "e"],
        "url": ["http://h/page/", "http://H/page?utm_campaign=z", "http://h/other", "http://h/page#top", "not a url"],
        "fetch_time": ["2024-01-01T00:00:00Z", "2024-03-01T00:00:00Z", "2024-01-01T00:00:00Z",
                       "2024-02-01T00:00:00+00:00", "2024-01-01T00:00:00Z"],
        "text": ["old", "new", "other", "mid", "x"],
    })  # fmt: skip
    res = url_dedup(df, UrlDedupConfig.from_preset("tiny"))
    assert res.kept["id"].tolist() == ["b", "c"]
    assert res.kept["url_norm"].tolist() == ["http://h/page", "http://h/other"]
    assert res.dropped[["id", "reason", "detail"]].values.tolist() == [
        ["a", "duplicate_url", "b"],
        ["d", "duplicate_url", "b"],
        ["e", "invalid_url", "no scheme or host"],
    ]
    assert res.summary() == {
        "docs_in": 5, "docs_out": 2, "docs_dropped": 3, "dropped/duplicate_url": 2, "dropped/invalid_url": 1,
        "urls_unique": 2, "duplicate_urls": 2, "invalid_urls": 1,
    }  # fmt: skip


def test_same_fetch_time_tie_keeps_smallest_id():
    df = pd.DataFrame(
        {"id": ["z", "y"], "url": ["http://h/x", "http://h/x/"], "fetch_time": ["2024-01-01"] * 2}
    )
    res = url_dedup(df, UrlDedupConfig())
    assert res.kept["id"].tolist() == ["y"]
    assert res.dropped["detail"].tolist() == ["y"]


def test_bad_input_names_the_column():
    with pytest.raises(KeyError, match="fetch_time"):
        url_dedup(pd.DataFrame({"id": ["a"], "url": ["http://h/"]}), UrlDedupConfig())
    with pytest.raises(ValueError, match="fetch_time is not ISO-8601"):
        url_dedup(
            pd.DataFrame({"id": ["a"], "url": ["http://h/"], "fetch_time": ["yesterday"]}), UrlDedupConfig()
        )
