"""Safety tuning data: counts from the share, targets per kind, only train prompts, clear errors."""

import json

import pandas as pd
import pytest
import yaml

from ml.config import ConfigError
from ml.safety.data import DATA_DIR, SafetyDataConfig, load_split
from ml.safety.tuning import (
    COMPLY,
    SafetyMixConfig,
    SafetyTuningError,
    count_for,
    eligible,
    load_answers,
    safety_records,
    targets,
)


def test_count_makes_the_share_of_the_whole():
    cfg = SafetyMixConfig(share=0.2)
    assert count_for(cfg, 100) == 25  # 25 / (100 + 25) = 0.2
    assert count_for(SafetyMixConfig(share=0.0), 100) == 0
    assert count_for(SafetyMixConfig(share=0.5), 7) == 7


def test_share_and_borderline_share_are_validated():
    with pytest.raises(ConfigError, match="SafetyMixConfig.share"):
        SafetyMixConfig(share=1.0)
    with pytest.raises(ConfigError, match="SafetyMixConfig.borderline_share"):
        SafetyMixConfig(borderline_share=1.5)


def test_every_borderline_train_seed_has_an_answer_in_each_of_its_languages():
    answers = load_answers()
    rows = [json.loads(line) for line in (DATA_DIR / "v1" / "prompts.train.jsonl").open()]
    needed = {(r["seed"], r["lang"]) for r in rows if r["kind"] == "borderline"}
    have = {(seed, lang) for seed, by_lang in answers.items() for lang in by_lang}
    assert needed == have
    assert len(needed) == 112


def test_adversarial_refuse_and_borderline_answer():
    items = eligible(SafetyMixConfig())
    adv = items[items["kind"] == "adversarial"]
    border = items[items["kind"] == "borderline"]
    refusals = {json.loads(x)["response"] for x in (DATA_DIR / "v1" / "responses.train.jsonl").open()}
    assert set(adv["good"]) <= refusals
    assert set(adv["bad"]) <= set(COMPLY.values())
    assert set(border["bad"]) <= refusals
    answers = load_answers()
    first = border.iloc[0]
    assert first["good"] == answers[first["seed"]][first["lang"]]
    # a refusal's language is the prompt's
    de = adv[adv["lang"] == "de"].iloc[0]
    de_refusals = {
        json.loads(x)["response"]
        for x in (DATA_DIR / "v1" / "responses.train.jsonl").open()
        if json.loads(x)["lang"] == "de"
    }
    assert de["good"] in de_refusals


def test_records_come_from_the_train_split_only_and_follow_the_mix():
    cfg = SafetyMixConfig(share=0.2, borderline_share=0.5)
    sft, counts = safety_records(cfg, 100, preference=False)
    assert counts["records"] == len(sft) == 25
    assert (counts["borderline"], counts["adversarial"]) == (12, 13)  # round(25 * 0.5) = 12
    heldout_ids = set(load_split(cfg.data, "heldout")["id"])
    assert not {r["id"].removeprefix("safety-") for r in sft} & heldout_ids
    assert all(r["messages"][-1]["role"] == "assistant" for r in sft)
    pairs, _ = safety_records(cfg, 100, preference=True)
    assert [p["id"] for p in pairs] == [r["id"] for r in sft]  # the same draw for SFT and DPO
    assert all(p["chosen"] != p["rejected"] for p in pairs)


def test_draw_cycles_with_new_ids_when_asked_for_more_than_there_is():
    cfg = SafetyMixConfig(
        share=0.5, borderline_share=1.0, data=SafetyDataConfig(langs=("de",), variants=("single",))
    )
    n_border = len(eligible(cfg).query("kind == 'borderline'"))
    records, counts = safety_records(cfg, n_border + 3, preference=False)
    assert counts["records"] == n_border + 3
    ids = [r["id"] for r in records]
    assert len(set(ids)) == len(ids)
    assert sum(i.endswith("-r1") for i in ids) == 3


def test_items_longer_than_the_context_are_left_out_and_counted():
    cfg = SafetyMixConfig(share=0.5)
    records, counts = safety_records(
        cfg, 10, False, length=lambda r: sum(len(m["content"]) for m in r["messages"]), max_tokens=400
    )
    assert counts["dropped_too_long"] > 0
    assert counts["eligible"] + counts["dropped_too_long"] == len(eligible(cfg))
    assert all(sum(len(m["content"]) for m in r["messages"]) <= 400 for r in records)


def test_missing_answer_names_the_prompt_file_line_and_language(tmp_path):
    prompts = load_split(SafetyMixConfig().data, "train")
    border = prompts[prompts["kind"] == "borderline"].head(1)
    responses = pd.DataFrame([{"lang": border.iloc[0]["lang"], "label": "refusal", "response": "No."}])
    with pytest.raises(
        SafetyTuningError, match=rf"prompts.train.jsonl:\d+ .*has no '{border.iloc[0]['lang']}' answer"
    ):
        targets(border, responses, {})


def test_malformed_answers_file_is_named(tmp_path):
    bad = tmp_path / "answers.yaml"
    bad.write_text(yaml.safe_dump({"s1-bor-train-00": {"en": ""}}))
    with pytest.raises(SafetyTuningError, match="answers.yaml: seed 's1-bor-train-00'"):
        load_answers(bad)
