import pandas as pd
import pytest

from ml.config import ConfigError
from ml.curate.url_filter import (
    BLOCKLIST_DIR,
    UrlFilterConfig,
    blocked,
    filter_urls,
    load_blocklist,
    read_blocklist,
)

URLS = {
    "doc": "http://127.0.0.1:8000/man/en/man1/sed.1.html",
    "sub": "https://de.pornhub.com/view?id=1",  # a subdomain of a listed host
    "exact": "http://XVIDEOS.com./",  # case and the trailing dot do not hide a host
    "word": "https://example.org/free-porn/page",
    "tld": "http://cams.xxx/index.html",
    "spam": "https://pills.example.net/cheap_viagra.html",
    "near": "https://example.org/pornography-studies/essay",  # a word that contains "porn" is not the word
    "extra": "https://ads.tracker.example/landing",
}


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"id": list(URLS), "url": list(URLS.values()), "text": ["t"] * len(URLS)})


def test_every_drop_has_its_reason_and_entry():
    cfg = UrlFilterConfig(extra_hosts=("tracker.example",))
    res = filter_urls(_frame(), cfg)
    assert res.kept["id"].tolist() == ["doc", "near"]
    got = dict(
        zip(res.dropped["id"], zip(res.dropped["reason"], res.dropped["detail"], strict=True), strict=True)
    )
    word = r"(?:^|[^a-z])(?:porn|porno|xxx|hentai|camgirls?|sexcams?|nsfw)(?:[^a-z]|$)"
    assert got == {
        "sub": ("blocked_host", "pornhub.com"),
        "exact": ("blocked_host", "xvideos.com"),
        "word": ("blocked_pattern", word),
        "tld": ("blocked_pattern", word),  # ".xxx" is also the word xxx between dots
        "spam": ("blocked_pattern", r"(?:^|[^a-z])(?:casino|viagra|cialis)(?:[^a-z]|$)"),
        "extra": ("blocked_host", "tracker.example"),
    }
    assert res.stats == {"blocklist_version": 1, "blocklist_hosts": 21, "blocklist_patterns": 3}
    assert res.summary()["dropped/blocked_host"] == 3


def test_shipped_list_is_versioned_and_checked():
    hosts, patterns = read_blocklist(str(BLOCKLIST_DIR / "v1.txt"))
    assert len(hosts) == 20 and len(patterns) == 3 and "onlyfans.com" in hosts
    none = load_blocklist(UrlFilterConfig(blocklist_version=0))
    assert none.hosts == frozenset() and blocked(URLS["sub"], none) is None
    with pytest.raises(FileNotFoundError, match="v9.txt"):
        load_blocklist(UrlFilterConfig(blocklist_version=9))
    with pytest.raises(ConfigError, match="not a regex"):
        UrlFilterConfig(extra_patterns=("(",))


def test_a_malformed_list_line_is_an_error(tmp_path):
    bad = tmp_path / "list.txt"
    bad.write_text("host a.example\nblock b.example\n")
    with pytest.raises(ValueError, match="list.txt:2: expected"):
        load_blocklist(UrlFilterConfig(blocklist_path=str(bad)))
