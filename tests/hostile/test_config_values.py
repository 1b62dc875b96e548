"""Config values that make no sense are refused at construction, naming the field and the value."""

from __future__ import annotations

import re

import pytest

from ml.config import ConfigError
from ml.sources.crawl import CrawlConfig
from ml.sources.extract import ExtractConfig
from ml.sources.warc import WarcSink, iter_many, iter_records

CRAWL_BAD = [
    ("max_pages", True),  # a bool is not a count
    ("max_pages", 0),
    ("max_pages", 2.5),
    ("max_depth", -1),
    ("max_total_bytes", -1),
    ("max_total_bytes", 0),
    ("max_response_bytes", -5),
    ("max_warc_file_bytes", 0),
    ("concurrency", 0),
    ("per_host_concurrency", False),
    ("retries", -1),
    ("max_redirects", -1),
    ("timeout_s", 0.0),
    ("timeout_s", -1.0),
    ("timeout_s", float("nan")),
    ("fetch_deadline_s", 0.0),
    ("fetch_deadline_s", float("inf")),
    ("per_host_delay_s", -0.5),
    ("backoff_s", -1.0),
    ("max_decompression_ratio", 0.5),
    ("scope", "everywhere"),
    ("seeds", "https://example.org/"),  # a str, not a tuple of URLs
    ("allow_private_hosts", ("",)),
    ("accepted_content_types", ()),
    ("user_agent", ""),
    ("warc_prefix", "../crawl"),
    ("warc_prefix", ""),
]

EXTRACT_BAD = [
    ("min_chars", -5),
    ("min_words", -1),
    ("min_chars", True),
    ("langid_max_chars", 0),
    ("max_payload_bytes", -1),
    ("max_payload_bytes", 0),
    ("max_control_char_frac", 1.5),
    ("max_control_char_frac", -0.1),
    ("lang_min_score", 2.0),
    ("batch_size", 0),
    ("extractor", "bs4"),
    ("include_tables", "yes"),
    ("html_types", ["text/html"]),
]


def _message(cls: str, name: str, value: object) -> str:
    return rf"{cls}\.{re.escape(name)}\b.*{re.escape(repr(value))}"


@pytest.mark.parametrize(("name", "value"), CRAWL_BAD)
def test_crawl_config_refuses(name, value):
    with pytest.raises(ConfigError, match=_message("CrawlConfig", name, value)):
        CrawlConfig(**{name: value})


@pytest.mark.parametrize(("name", "value"), EXTRACT_BAD)
def test_extract_config_refuses(name, value):
    with pytest.raises(ConfigError, match=_message("ExtractConfig", name, value)):
        ExtractConfig(**{name: value})


def test_presets_and_defaults_pass():
    for preset in ("tiny", "small", "8b", "70b", "405b"):
        CrawlConfig.from_preset(preset)
        ExtractConfig.from_preset(preset)
    assert CrawlConfig(timeout_s=5, fetch_deadline_s=30).timeout_s == 5  # an int is a fine float


@pytest.mark.parametrize("value", [0, -1, True, 1.5])
def test_warc_reader_and_writer_options_refused(tmp_path, value):
    with pytest.raises(ConfigError, match=rf"max_payload_bytes.*{re.escape(repr(value))}"):
        iter_records(tmp_path / "x.warc.gz", max_payload_bytes=value)
    with pytest.raises(ConfigError, match=rf"max_payload_bytes.*{re.escape(repr(value))}"):
        iter_many([], [], max_payload_bytes=value)
    with pytest.raises(ConfigError, match=rf"WarcSink\.max_file_bytes.*{re.escape(repr(value))}"):
        WarcSink(tmp_path, max_file_bytes=value)
    assert not any(tmp_path.iterdir())  # refused before creating anything


def test_warc_sink_prefix_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"WarcSink\.prefix.*'a/b'"):
        WarcSink(tmp_path / "out", prefix="a/b")
    assert not (tmp_path / "out").exists()
