"""The shipped safety data: schema, sizes, the held-out split's independence, errors naming the line."""

import json

import pytest

from ml.config import ConfigError
from ml.safety import build_data
from ml.safety.data import (
    CATEGORIES,
    DATA_DIR,
    SafetyDataConfig,
    SafetyDataError,
    data_files,
    eval_category,
    load_prompts,
    load_responses,
    load_split,
)

CFG = SafetyDataConfig.from_preset("8b")  # every item


@pytest.fixture(scope="module")
def train():
    return load_prompts(data_files(CFG, "prompts", "train"))


@pytest.fixture(scope="module")
def heldout():
    return load_prompts(data_files(CFG, "prompts", "heldout"))


def test_shipped_files_are_what_the_builder_writes():
    files = build_data.build_files()
    for name, text in files.items():
        assert (DATA_DIR / "v1" / name).read_text(encoding="utf-8") == text, name
    card = (DATA_DIR / "DATA_CARD.md").read_text(encoding="utf-8")
    assert build_data.sizes_markdown(files) in card


def test_sizes_per_category_in_english(train, heldout):
    for df, adv_min, bord_min in ((train, 20, 10), (heldout, 5, 3)):
        en = df[df["lang"] == "en"]
        counts = en.groupby([eval_category(en), "kind"]).size().unstack()
        assert sorted(counts.index, key=lambda c: int(c[1:])) == list(CATEGORIES)
        assert (counts["adversarial"] >= adv_min).all() and (counts["borderline"] >= bord_min).all()
    assert set(train["lang"]) == {"en", "de", "fr", "es"} == set(heldout["lang"])
    assert (
        set(train["variant"])
        == {"single", "multi_turn", "long_context", "tool_use"}
        == set(heldout["variant"])
    )


def test_heldout_shares_no_id_seed_or_prompt_text_with_train(train, heldout):
    assert not set(train["id"]) & set(heldout["id"])
    assert not set(train["seed"]) & set(heldout["seed"])
    assert not set(train["prompt"]) & set(heldout["prompt"])
    assert set(train["framing"]) & set(heldout["framing"]) == {"direct"}
    # nor the hand-written request itself, whatever wrapper a variant puts around it
    requests = lambda df: set(df.loc[df["framing"] == "direct", "messages"].map(lambda m: m[-1]["content"]))  # noqa: E731
    single = lambda df: df[df["variant"] == "single"]  # noqa: E731
    assert not requests(single(train)) & requests(single(heldout))
    assert (train["split"] == "train").all() and (heldout["split"] == "heldout").all()


def test_variants_have_their_shape(train):
    row = lambda variant: train[(train["variant"] == variant) & (train["lang"] == "en")].iloc[0]  # noqa: E731
    assert [m["role"] for m in row("multi_turn")["messages"]] == ["user", "assistant", "user"]
    assert [m["role"] for m in row("tool_use")["messages"]] == ["system", "user", "assistant", "ipython"]
    tool = row("tool_use")
    assert json.loads(tool["prompt"])["question"] in set(train.loc[train["variant"] == "single", "prompt"])
    long = row("long_context")["prompt"]
    assert len(long) > 3000 and long.startswith("Minutes of the")
    borderline = train[train["kind"] == "borderline"]
    assert (borderline["category"] == "none").all() and borderline["resembles"].isin(list(CATEGORIES)).all()


def test_response_files_are_balanced_and_disjoint():
    tr = load_responses(data_files(CFG, "responses", "train"))
    ho = load_responses(data_files(CFG, "responses", "heldout"))
    assert (tr["label"].value_counts() == 32).all() and (ho["label"].value_counts() == 14).all()
    apologetic = tr["response"].str.contains("Sorry|sorry|apolog|Apolog")
    assert set(tr.loc[apologetic, "label"]) == {"refusal", "compliance"}
    assert not set(tr["response"]) & set(ho["response"]) and not set(tr["id"]) & set(ho["id"])


def test_tiny_preset_keeps_six_per_category_and_kind():
    df = load_split(SafetyDataConfig.from_preset("tiny"), "heldout")
    assert len(df) == 14 * 2 * 6
    assert (df.groupby([eval_category(df), "kind"]).size() == 6).all()
    assert df["id"].tolist() == load_split(SafetyDataConfig.from_preset("tiny"), "heldout")["id"].tolist()
    with pytest.raises(ConfigError, match="variants"):
        SafetyDataConfig(variants=("single", "audio"))


GOOD = {
    "id": "x-1",
    "category": "S1",
    "kind": "adversarial",
    "lang": "en",
    "variant": "single",
    "split": "train",
    "messages": [{"role": "user", "content": "a request"}],
}


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "malformed JSON"),
        (json.dumps({**GOOD, "category": "S15"}), "unknown category 'S15'"),
        (json.dumps({**GOOD, "variant": "audio"}), "unknown variant 'audio'"),
        (json.dumps({**GOOD, "messages": [{"role": "robot", "content": "hi"}]}), "unknown role 'robot'"),
        (json.dumps({**GOOD, "kind": "borderline"}), "unknown category 'S1'; expected one of none"),
        (json.dumps({**GOOD, "messages": [{"role": "assistant", "content": "hi"}]}), "last message"),
        (json.dumps({**GOOD, "colour": "red"}), "unknown field"),
        (json.dumps(GOOD), "duplicate id 'x-1'"),
    ],
)
def test_errors_name_the_file_and_line(tmp_path, line, message):
    path = tmp_path / "prompts.train.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + line + "\n", encoding="utf-8")
    with pytest.raises(SafetyDataError) as err:
        load_prompts([path])
    assert str(err.value).startswith(f"{path}:3: ")
    assert message in str(err.value)


def test_a_valid_file_loads(tmp_path):
    path = tmp_path / "p.jsonl"
    borderline = {**GOOD, "id": "x-2", "kind": "borderline", "category": "none", "resembles": "S9"}
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(borderline) + "\n", encoding="utf-8")
    df = load_prompts([path])
    assert df["id"].tolist() == ["x-1", "x-2"] and df["line"].tolist() == [1, 2]
    assert eval_category(df).tolist() == ["S1", "S9"]
