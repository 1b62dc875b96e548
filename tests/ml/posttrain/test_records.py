"""Post-training records: malformed ones refused by name, held-out split by id."""

from __future__ import annotations

import json

import pytest

from ml.posttrain.records import (
    RecordError,
    assert_no_heldout,
    check_preference_record,
    check_sft_record,
    read_jsonl,
    split_of,
    split_records,
)

GOOD = {"id": "r1", "prompt": [{"role": "user", "content": "hi"}], "chosen": "Hello!", "rejected": "Go away."}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"chosen": None}, r"record \(id 'r1'\): missing 'chosen' response"),
        ({"rejected": "   "}, r"record \(id 'r1'\): 'rejected' response must be non-empty text, got '   '"),
        ({"edited": ""}, r"'edited' response must be non-empty text"),
        ({"chosen": 3}, r"'chosen' response must be non-empty text, got 3"),
        ({"rejected": "Hello!"}, r"'chosen' and 'rejected' are the same text"),
        ({"prompt": []}, r"record \(id 'r1'\) prompt: messages must be a non-empty list"),
        ({"prompt": [{"role": "bot", "content": "x"}]}, r"prompt: chat message #0: role 'bot'"),
        ({"prompt": [{"role": "assistant", "content": "x"}]}, r"must end with a user or ipython turn"),
        ({"id": ""}, r"record: 'id' must be a non-empty string"),
    ],
)
def test_malformed_preference_records_are_named(change, message):
    record = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(RecordError, match=message):
        check_preference_record(record)


def test_good_records_pass():
    assert check_preference_record(GOOD) == GOOD
    sft = {"id": "s", "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    assert check_sft_record(sft) == sft
    with pytest.raises(RecordError, match=r"\(id 's'\): no assistant turn"):
        check_sft_record({**sft, "messages": sft["messages"][:1]})


def test_read_jsonl_names_file_line_and_id(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + json.dumps({**GOOD, "id": "r2", "chosen": ""}) + "\n")
    with pytest.raises(RecordError, match=r"p.jsonl:3 \(id 'r2'\): 'chosen' response must be non-empty"):
        read_jsonl(path, check_preference_record)
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD) + "\n")
    with pytest.raises(RecordError, match=r"p.jsonl:2: duplicate id 'r1'"):
        read_jsonl(path, check_preference_record)
    path.write_text("{oops\n")
    with pytest.raises(RecordError, match=r"p.jsonl:1: not JSON"):
        read_jsonl(path, check_preference_record)


def test_heldout_split_by_id_is_stable_and_enforced():
    records = [{"id": f"math-{i}"} for i in range(1000)]
    splits = split_records(records, heldout_fraction=0.1, seed=0)
    assert len(splits["heldout"]) == 110 and len(splits["train"]) == 890
    assert split_of("math-0", 0.1) == "train" and split_of(splits["heldout"][0]["id"], 0.1) == "heldout"
    # the split of an id never depends on the other records
    again = split_records(records[::-1][:500], heldout_fraction=0.1, seed=0)
    assert {r["id"] for r in again["heldout"]} <= {r["id"] for r in splits["heldout"]}
    assert_no_heldout((r["id"] for r in splits["train"]), 0.1)
    with pytest.raises(
        RecordError, match=f"record id '{splits['heldout'][0]['id']}' is in the held-out split"
    ):
        assert_no_heldout([r["id"] for r in splits["heldout"]], 0.1)
