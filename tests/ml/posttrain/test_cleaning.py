"""Cleaning: overused tones dropped with the measured value; rejected responses are not judged."""

from __future__ import annotations

from ml.posttrain.cleaning import ToneConfig, clean_records, tone_issues


def test_tone_issues_exact():
    assert tone_issues("Sure. The answer is 4.") == []
    assert tone_issues("Great!! 🎉🎉🚀 Done!") == [("emojis", "3 > 2"), ("exclamations", "3 > 2")]
    assert tone_issues("I’m so sorry, but no.") == [("apology", "'I’m so sorry'")]
    assert tone_issues("i apologise for the delay") == [("apology", "'i apologise'")]
    assert tone_issues("Hi! 👋") == []
    assert tone_issues("Wow!!!", ToneConfig(max_exclamations=3)) == []


def test_clean_records_counts_and_reasons():
    sft = {
        "id": "s1",
        "messages": [
            {"role": "user", "content": "Sorry!!! help"},
            {"role": "assistant", "content": "I apologize. Here it is."},
        ],
    }
    fine = {"id": "s2", "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}
    pref = {"id": "p1", "prompt": [], "chosen": "Fine.", "rejected": "I'm sorry!!!! 😀😀😀"}
    loud = {**pref, "id": "p2", "edited": "Yes!!! Yes!"}
    kept, dropped, counts = clean_records([sft, fine, pref, loud])
    assert [r["id"] for r in kept] == ["s2", "p1"]  # the user's tone and a rejected response are not judged
    assert [(r["id"], r["drop_reason"], r["drop_detail"]) for r in dropped] == [
        ("s1", "apology", "'I apologize'"),
        ("p2", "exclamations", "4 > 2"),
    ]
    assert counts == {"kept": 2, "apology": 1, "exclamations": 1}
