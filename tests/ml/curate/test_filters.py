import math

import pandas as pd
import pytest

from ml.config import ConfigError
from ml.curate.filters import (
    FILTER_ORDER,
    AlphaRatioFilter,
    Doc,
    DupLinesFilter,
    FilterConfig,
    LengthFilter,
    StopWordsFilter,
    dup_ngram_char_frac,
    fit_kl_reference,
    heuristic_filter,
    load_wordlist,
    ngram_char_fracs,
    top_ngram_char_frac,
    unit_counts,
)

SENTENCES = [
    "The river town grew slowly around a wooden bridge that farmers used to bring grain to the market.",
    "Over two centuries the bridge was rebuilt in stone, and merchants opened shops along both banks.",
    "Today the old mill houses a small museum where visitors can see how flour was ground by water power.",
    "Children from nearby schools come every spring to learn about the history of their region.",
    "In the evening, people walk along the quiet river path and watch herons fishing in the shallow water.",
]
PROSE = " ".join(SENTENCES)  # 86 words, passes every Gopher rule
LINES = "\n".join(SENTENCES)
CFG = FilterConfig.from_preset("small", enabled=tuple(f for f in FILTER_ORDER if f != "kl_outlier"))


def _frame(docs: dict[str, str], lang: str = "en") -> pd.DataFrame:
    return pd.DataFrame({"id": list(docs), "url": [f"http://h/{k}" for k in docs], "text": list(docs.values()),
                         "lang": lang})  # fmt: skip


BAD_DOCS = {
    "too_short": "A short note about the river town.",
    "alpha_ratio": PROSE + " " + " ".join(str(1000 + 7 * i) for i in range(40)),  # 86 alpha words of 126
    "mean_word_length": " ".join(
        f"extraordinarilylongword{chr(97 + i % 26)}{chr(97 + i // 26)}" for i in range(60)
    ),
    "symbol_ratio": PROSE + " " + " ".join(f"#tag{chr(97 + i)}" for i in range(10)),  # 10 '#' / 96 words
    "ellipsis_lines": "\n".join(s[:-1] + "..." if i < 2 else s for i, s in enumerate(SENTENCES)),  # 2/5 lines
    "bullet_lines": "\n".join("- " + s for s in SENTENCES),
    "dup_lines": LINES + "\n" + "\n".join([SENTENCES[0]] * 3),  # 3 of 8 lines repeat an earlier one
    "dup_ngram_coverage": PROSE + " " + "buy cheap watches online today " * 5,
    "dirty_words": PROSE + " fuck this shit and the porn spam",
}


def test_every_rule_drops_its_doc_and_keeps_prose():
    res = heuristic_filter(_frame({"good": PROSE, **BAD_DOCS}), CFG)
    assert res.kept["id"].tolist() == ["good"]
    assert dict(zip(res.dropped["id"], res.dropped["reason"], strict=True)) == {k: k for k in BAD_DOCS}
    details = dict(zip(res.dropped["id"], res.dropped["detail"], strict=True))
    assert details["too_short"] == "7 words < 50"
    assert details["symbol_ratio"] == "0.104 > 0.1"
    assert details["ellipsis_lines"] == "0.400 > 0.3"
    assert details["dup_lines"] == "dup_line_frac=0.375 > 0.3"
    assert details["dirty_words"] == "3 words, ratio 0.032"
    # top 4-gram "buy cheap watches online" (24 chars with its spaces) x5 over the doc's 644 chars
    assert details["dup_ngram_coverage"] == "top4gram_frac=0.186 > 0.16"
    good = res.kept.iloc[0]
    assert good["n_words"] == 86 and good["alpha_word_frac"] == 1.0 and good["dup5gram_frac"] == 0.0
    assert res.stats["fails/too_short"] == 1


def test_too_long_and_datatrove_protocol():
    f = LengthFilter(FilterConfig(max_words=80))
    assert f.filter({"text": PROSE, "lang": "en"}) == (False, "too_long")
    assert LengthFilter(FilterConfig()).filter(Doc(PROSE)) is True
    assert AlphaRatioFilter(FilterConfig()).filter(Doc(BAD_DOCS["alpha_ratio"])) == (False, "alpha_ratio")
    scores = DupLinesFilter(FilterConfig()).scores(Doc(BAD_DOCS["dup_lines"]))
    assert scores["dup_line_frac"] == 3 / 8
    # only the 3 repeats count, over every character of the doc (newlines included): 3 * 97 / 782
    assert scores["dup_line_char_frac"] == 3 * len(SENTENCES[0]) / len(BAD_DOCS["dup_lines"]) == 291 / 782


def test_ngram_fractions_by_hand():
    words = "a b a b a b c".split()  # 13 characters
    assert top_ngram_char_frac(words, 2, 13) == 9 / 13  # "a b" (3 chars) occurs 3 times
    assert top_ngram_char_frac(words, 3, 13) == 10 / 13  # "a b a" and "b a b" tie at 2: the first wins
    assert top_ngram_char_frac("x y z".split(), 2, 5) == 0.0  # nothing repeats
    # repeats only: "a b a" at 2 repeats the one at 0 (3 chars); the scan then jumps past it
    assert dup_ngram_char_frac(words, 3, 13) == 3 / 13
    assert dup_ngram_char_frac(words, 2, 13) == 4 / 13  # "a b" at 2 and at 4 (b a at 1 is new)
    assert dup_ngram_char_frac(["x"], 5, 1) == 0.0
    # a phrase said twice: the first saying is the text, only the second counts
    said_twice = "one two three four five one two three four five"
    assert dup_ngram_char_frac(said_twice.split(), 5, len(said_twice)) == 19 / 47


def test_duplicate_paragraphs_count_repeats_only():
    para = "\n\n".join([SENTENCES[0], SENTENCES[1], SENTENCES[0], SENTENCES[0]])
    scores = DupLinesFilter(FilterConfig()).scores(Doc(para))
    assert scores["dup_para_frac"] == 2 / 4 and scores["dup_para_char_frac"] == 2 * 97 / len(para)
    res = heuristic_filter(_frame({"p": para}), CFG.replace(min_words=10))
    assert res.dropped["detail"].tolist() == ["dup_para_frac=0.500 > 0.3"]
    assert res.dropped["reason"].tolist() == ["dup_paragraphs"]


def test_dirty_words_need_a_list_and_a_minimum_count():
    docs = {"dirty": BAD_DOCS["dirty_words"], "two": PROSE + " this shit and the porn spam"}
    res = heuristic_filter(_frame(docs), CFG)
    assert res.dropped["id"].tolist() == ["dirty"] and res.kept["id"].tolist() == ["two"]
    assert res.kept["dirty_word_count"].tolist() == [2]
    res_ko = heuristic_filter(_frame(docs, lang="ko"), CFG)  # no ko.txt: not penalised
    assert res_ko.dropped.empty and res_ko.kept["dirty_word_count"].tolist() == [0, 0]


def test_wordlists_ship_for_ten_languages():
    for lang in ("en", "de", "fr", "es", "it", "pt", "nl", "ru", "pl", "sv"):
        assert len(load_wordlist(lang)) >= 15, lang
    assert "блять" in load_wordlist("ru") and "kurwa" in load_wordlist("pl")
    assert load_wordlist("xx") == frozenset() and load_wordlist("../etc") == frozenset()


def test_kl_outlier_against_the_corpus_distribution():
    docs = {f"n{i}": " ".join(SENTENCES[i % 5 :] + SENTENCES[: i % 5]) for i in range(12)}
    docs["hex"] = " ".join(f"0x{(37 * i) % 256:02X}{(91 * i) % 256:02X}" for i in range(80))
    cfg = FilterConfig(enabled=("kl_outlier",), kl_min_docs=10)
    res = heuristic_filter(_frame(docs), cfg)
    assert res.dropped["id"].tolist() == ["hex"] and res.dropped["reason"].tolist() == ["kl_outlier"]
    assert res.kept["kl_div"].max() < 0.1  # rotations of the same prose match the corpus closely
    assert res.stats["kl_reference_langs"] == 1
    # a language with fewer than kl_min_docs docs has no reference: its docs are not scored
    mixed = _frame(docs)
    mixed.loc[mixed["id"] == "hex", "lang"] = "de"
    res2 = heuristic_filter(mixed, cfg)
    assert res2.dropped.empty and math.isnan(res2.kept.set_index("id").loc["hex", "kl_div"])
    assert res2.stats["skipped/kl_outlier/de"] == 1 and "skipped/kl_outlier/en" not in res2.stats
    assert FilterConfig().kl_min_docs == FilterConfig.from_preset("tiny").kl_min_docs == 100
    # top-fraction mode drops the highest-KL doc of each language even under max_kl
    res3 = heuristic_filter(_frame(docs), cfg.replace(max_kl=100.0, kl_top_fraction=0.05))
    assert res3.dropped["id"].tolist() == ["hex"]
    ref = fit_kl_reference(_frame(docs), cfg)
    assert ref["en"].n_docs == 13 and ref["en"].total == sum(len(t.replace(" ", "")) for t in docs.values())


def test_config_validation():
    with pytest.raises(ConfigError, match="unknown filter"):
        FilterConfig(enabled=("length", "nope"))
    with pytest.raises(ConfigError, match="n = 2, 3, 4"):
        FilterConfig(max_top_ngram_frac=(0.2,))
    assert FilterConfig.from_preset("tiny").min_words == 20


# 60 words of English with one stop word ("the"): a word list, not prose
NO_STOP = " ".join(["the"] + [f"option{chr(97 + i % 26)}{chr(97 + i // 26)}" for i in range(59)])
JA = (
    "このコマンドは指定されたファイルを読み込み、各行の内容を標準出力に書き出します。"
    "オプションを指定しない場合は、すべての行をそのまま表示します。"
    "エラーが起きたときは終了コードとして一を返し、理由を標準エラー出力に書きます。"
)  # 110 characters, 6 of them punctuation


def test_stop_words_per_language_and_skipped_without_a_list():
    docs = _frame({"prose": PROSE, "list": NO_STOP})
    res = heuristic_filter(docs, CFG)
    assert res.kept["id"].tolist() == ["prose"] and res.kept["stop_word_count"].tolist() == [5]  # the to ...
    assert res.dropped["detail"].tolist() == ["1 distinct stop words < 2"]
    assert res.dropped["reason"].tolist() == ["stop_words"]
    de = "Der Hund und die Katze schlafen, weil das Haus warm ist."
    # und, die, das; not "Der" (case as written) nor "ist." (whole whitespace words, as Gopher counts)
    assert StopWordsFilter(CFG).scores(Doc(de, "de"))["stop_word_count"] == 3
    res_ko = heuristic_filter(docs.assign(lang="ko"), CFG)  # no Korean list: the rule does not apply
    assert "stop_words" not in set(res_ko.dropped["reason"]) and res_ko.stats["skipped/stop_words/ko"] == 2
    assert math.isnan(res_ko.kept["stop_word_count"].iloc[0])


def test_cjk_words_are_characters():
    tiny = FilterConfig.from_preset("tiny", enabled=CFG.enabled)
    res = heuristic_filter(_frame({"ja": JA, "ja_as_ko": JA}).assign(lang=["ja", "ko"]), tiny)
    kept = res.kept.set_index("id").loc["ja"]
    assert kept["n_words"] == 104 and kept["mean_word_length"] == 1.0 and kept["stop_word_count"] == 7
    # the same text split on whitespace is one 110-character "word": too short for an English-style rule
    assert res.dropped["id"].tolist() == ["ja_as_ko"] and res.dropped["detail"].tolist() == ["1 words < 20"]
    assert Doc(JA, "ja", char_words=True).words[:3] == ["こ", "の", "コ"]
    assert Doc("グループ gpasswd を使う", "ja", char_words=True).words == [
        "グ",
        "ル",
        "ー",
        "プ",
        "gpasswd",
        "を",
        "使",
        "う",
    ]
    with pytest.raises(ConfigError, match="char_word_mean_length"):
        FilterConfig(char_word_mean_length=(4.0, 1.0))


def _reference_ngram_fracs(words: list[str], n_chars: int, sep: int) -> dict[str, float]:
    out = {f"top{n}gram_frac": top_ngram_char_frac(words, n, n_chars, sep) for n in (2, 3, 4)}
    return out | {f"dup{n}gram_frac": dup_ngram_char_frac(words, n, n_chars) for n in range(5, 11)}


def test_ngram_fracs_on_ids_equal_the_reference_functions():
    import random

    rng = random.Random(0)
    vocab = ["a", "bb", "ccc", "a b", "dd", "e", "ff", "g"]
    cases = [([], 0, 1), (["x"], 1, 1), ("a b a b a".split(), 9, 1), ("a b a b a".split(), 0, 1)]
    for _ in range(2000):  # small vocabularies: many repeats, ties between top n-grams, overlapping repeats
        words = [rng.choice(vocab[: rng.randint(1, 8)]) for _ in range(rng.randint(0, 60))]
        cases.append((words, sum(map(len, words)) + len(words) + rng.randint(-1, 3), rng.choice([0, 1])))
    cases.append(((PROSE + " " + PROSE[:200]).split(), len(PROSE) + 201, 1))
    for words, n_chars, sep in cases:
        assert ngram_char_fracs(words, n_chars, sep) == _reference_ngram_fracs(words, n_chars, sep), words


def test_unit_counts_equal_a_counter_of_the_units_in_order():
    from collections import Counter

    text = "Ab c\u00a0d\tab\n\u3000Ab"
    doc = Doc(text)
    assert list(unit_counts(doc, "char").items()) == list(
        Counter(ch for ch in text if not ch.isspace()).items()
    )
    assert unit_counts(doc, "word") == Counter(["ab", "c", "d", "ab", "ab"])
