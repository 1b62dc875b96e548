"""A round's sample selection and data sets, the held-out evaluation, the rounds table, and the chat model
in transformers (its chat template and greedy tokens equal ours)."""

from __future__ import annotations

import json
from collections import Counter

import pandas as pd
import pytest
import torch

from ml.model.llama import Llama, ModelConfig
from ml.posttrain.evaluate import evaluate_policy, greedy_replies, response_logps, win_rate
from ml.posttrain.hf_parity import greedy_parity
from ml.posttrain.math_synth import generate_math
from ml.posttrain.preferences import preference_pairs
from ml.posttrain.records import read_jsonl, write_jsonl
from ml.posttrain.rejection import RejectionSample
from ml.posttrain.round_data import select_samples, write_round_set
from ml.posttrain.rounds_report import rounds_png, rounds_table
from ml.posttrain.sandbox import SandboxLimits
from ml.tokens.chat import encode_chat_masked
from ml.tokens.tokenizer import byte_tokenizer, save_tokenizer
from ml.train.weights import export_hf

CFG = ModelConfig.from_preset(
    "tiny", dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, vocab_size=272, max_seq_len=1024
)
LIMITS = SandboxLimits()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Llama.from_config(CFG).eval()


def _msg(text: str) -> dict:
    return {"role": "assistant", "content": text}


def test_best_verified_sample_and_pairs_are_selected():
    good, other = [p.to_record() for p in generate_math(2)]
    right, wrong = good["messages"][1]["content"], "Answer: 0"
    results = [
        RejectionSample(good["id"], None, None, [_msg(wrong), _msg(right), None], [0.9, 0.1, None]),
        RejectionSample(other["id"], None, None, [_msg(wrong), None], [0.5, None]),
    ]
    sft, pairs, counts = select_samples([good, other], results, LIMITS)
    # the RM's favourite (0.9) fails its verifier: the passing sample is kept despite its lower reward
    assert [r["messages"][-1]["content"] for r in sft] == [right] and sft[0]["id"] == f"{good['id']}-rs"
    assert sft[0]["answer"] == good["answer"] and sft[0]["messages"][0] == good["messages"][0]
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [(right, wrong)]
    assert counts == Counter(
        samples=5,
        samples_passing=1,
        samples_unfinished=2,
        prompts_without_passing_sample=1,
        sft_records=1,
        pairs=1,
    )


def test_round_set_appends_to_train_only(tmp_path):
    base = tmp_path / "base"
    recs = [p.to_record() for p in generate_math(3)]
    for split, rs in (("train", recs[:1]), ("val", recs[1:2]), ("heldout", recs[2:])):
        write_jsonl(rs, base / f"{split}.jsonl")
    tok = tmp_path / "tokenizer.json"
    byte_tokenizer(16).save(str(tok))
    extra = [{**recs[0], "id": "x-rs"}]
    assert write_round_set(base, extra, tmp_path / "out", tok, False) == {"train": 2, "val": 1, "heldout": 1}
    assert [r["id"] for r in read_jsonl(tmp_path / "out" / "train.jsonl", lambda r, w: r)] == [
        recs[0]["id"],
        "x-rs",
    ]
    assert (tmp_path / "out" / "tokenizer.json").read_bytes() == tok.read_bytes()


def test_policy_metrics_on_held_out_items(model):
    tok = byte_tokenizer(16)
    held = [p.to_record() for p in generate_math(3)]
    pairs, _ = preference_pairs(held, LIMITS)
    metrics, replies = evaluate_policy(model, tok, held, pairs, max_new_tokens=4, limits=LIMITS)
    assert len(replies) == 3 and metrics["pass_rate_math"] == 0.0 and metrics["items_math"] == 3
    prompts = [r["messages"][:-1] for r in held]
    logp, n = response_logps(model, tok, prompts, [r["messages"][-1]["content"] for r in held])
    assert metrics["answer_loglik_math"] == pytest.approx(float(logp.sum() / n.sum()))
    # one sequence by hand: log p of every content token of the answer after its prompt
    enc = encode_chat_masked(held[0]["messages"], tok)
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([enc.ids[:-1]]))[0], -1)
    hand = sum(lp[t - 1, enc.ids[t]].item() for t in range(1, len(enc.ids)) if enc.content[t])
    assert logp[0].item() == pytest.approx(hand, abs=1e-4) and n[0].item() == sum(enc.content[1:])
    chosen, _ = response_logps(model, tok, [p["prompt"] for p in pairs], [p["chosen"] for p in pairs])
    rejected, _ = response_logps(model, tok, [p["prompt"] for p in pairs], [p["rejected"] for p in pairs])
    assert metrics["pref_accuracy"] == pytest.approx(float((chosen > rejected).float().mean()))
    assert greedy_replies(model, tok, prompts[:1], 4) == replies[:1]
    assert win_rate(model, tok, prompts, replies, replies) == 0.5  # equal answers tie


def test_rounds_table_has_a_row_per_round():
    ev = lambda k: {  # noqa: E731
        "models": {
            m: {"pass_rate_math": 0.0, "pref_accuracy": 0.5 + k / 10 + (m == "chat") / 10}
            for m in ("start", "sft", "chat")
        },
        "win_rate_vs_start": 0.25 * k,
    }
    table = rounds_table({2: ev(2), 1: ev(1)})
    assert list(table.index) == [1, 2]
    assert table.loc[2, "chat.pref_accuracy"] == pytest.approx(0.8)
    assert table.loc[1, "sft.pref_accuracy"] == pytest.approx(0.6)
    assert table["win_rate_vs_start"].tolist() == [0.25, 0.5]
    assert isinstance(table, pd.DataFrame) and "start.pass_rate_math" in table.columns
    assert not any(c.endswith((".vr", ".frr")) for c in table.columns)


def test_rounds_table_carries_the_safety_rates_of_start_and_chat():
    ev = {"models": {"chat": {"pref_accuracy": 0.5}}, "win_rate_vs_start": 0.5}
    safety = {
        1: {"headline": {"vr": 0.25, "frr": 0.5}, "previous": {"headline": {"vr": 0.75, "frr": 0.125}}},
        2: {"headline": {"vr": 0.125, "frr": 0.5}, "previous": {"headline": {"vr": 0.25, "frr": 0.5}}},
    }
    table = rounds_table({1: ev, 2: ev}, safety)
    assert table[["start.vr", "start.frr", "chat.vr", "chat.frr"]].values.tolist() == [
        [0.75, 0.125, 0.25, 0.5],
        [0.25, 0.5, 0.125, 0.5],
    ]
    assert rounds_png(table)[:4] == b"\x89PNG"


def test_chat_model_greedy_tokens_equal_in_transformers(model, tmp_path):
    """transformers loads the exported model and tokenizer, renders the prompt with the saved chat template
    to the same ids, and greedy-decodes the same tokens as our KV-cache generation."""
    export_hf(model, CFG, tmp_path)
    save_tokenizer(byte_tokenizer(16), tmp_path)
    assert "chat_template" in json.loads((tmp_path / "tokenizer_config.json").read_text())
    parity = greedy_parity(tmp_path, [{"role": "user", "content": "Solve for x: 3x + 4 = 10."}], 12)
    assert parity["prompt_equal"] and parity["equal"]
    assert len(parity["ours"]) >= 1 and parity["ours"] == parity["transformers"]
