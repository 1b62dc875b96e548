"""The post-training assets materialized the way ``lifecycle run`` does it (synthetic data, then rounds 1
and 2 of reward model, rejection samples, SFT, DPO and chat model in order, then the rounds table) on small
fixtures: a random tiny-preset model as the base model, a byte-level tokenizer with the chat template, a
handful of corpus documents. Runs of a few steps: these tests check the wiring, artifacts, metadata and
round order; the ml tests check the numbers."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from dagster_project.definitions import defs
from ml.io import write_shards
from ml.model.llama import Llama, ModelConfig
from ml.tokens.tokenizer import byte_tokenizer, save_tokenizer
from ml.train.weights import export_hf

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e")]

SNAPSHOT = "t"
STANDARD_KEYS = {
    "path",
    "num_records",
    "mlflow_run_id",
    "mlflow_run_url",
    "dvc_md5",
    "git_sha",
    "summary",
    "inputs",
}
ROUND_ASSETS = sorted(  # every asset of a round: the posttrain_round job's selection
    k.to_user_string() for k in defs.resolve_job_def("posttrain_round").asset_layer.selected_asset_keys
)
SELECT = ["synthetic_data", "safety_classifier", "safety_evals", *ROUND_ASSETS, "posttrain_rounds"]
FEW_SAFETY = {
    "data": {"per_category": 1},
    "sample": {"max_new_tokens": 4},
    "injection_per_technique": 1,
    "code_tasks": 1,
}
TEXTS = [
    "The quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat near the door.",
    "Tokens are counted per document and every drop carries its reason with the measured value here.",
    "Shards hold documents in order and an index marks where each one begins and where it ends.",
    "A model reads the held out text only after training so the score says what it really learned.",
]


def _few_steps(steps: int = 2) -> dict:
    return {
        "steps": steps,
        "schedule": {"warmup_steps": 1},
        "data": {"batch_size": 2, "seq_len": 512},
        "eval_every": steps,
        "ckpt_every": steps,
        "eval_batches": 1,
    }


OPS = {
    "synthetic_data": {
        "config": {
            "n_math": 24,
            "n_code": 4,
            "n_qa": 4,
            "qa_window_words": 12,
            "max_tokens": 300,
            "heldout_fraction": 0.25,
            "val_fraction": 0.2,
        }
    },
    "reward_model": {"config": {"train": _few_steps()}},
    "rejection_samples": {"config": {"k": 2, "n_prompts": 2, "max_new_tokens": 8}},
    "sft_model": {"config": {"train": _few_steps()}},
    "dpo_model": {"config": {"train": _few_steps(), "seeds": [1, 2]}},
    "chat_model": {"config": {"max_items": 2, "max_new_tokens": 8}},
    "posttrain_rounds": {"config": {"rounds": 2}},
    "safety_evals": {"config": FEW_SAFETY},
    # a random model's answers after 2-step rounds: the regression gate judges the test's margins (1.0)
    "chat_safety_evals": {"config": {**FEW_SAFETY, "vr_margin": 1.0, "frr_margin": 1.0}},
}


def _fixtures(home) -> None:
    data = home / "data"
    tok = byte_tokenizer(16)
    save_tokenizer(tok, data / "tokenizer" / SNAPSHOT)
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset("tiny", vocab_size=272, max_seq_len=1024)
    hf = data / "base_model" / SNAPSHOT / "hf"
    export_hf(Llama.from_config(cfg), cfg, hf)
    save_tokenizer(tok, hf)
    docs = pd.DataFrame(
        {
            "id": [f"d{i}" for i in range(len(TEXTS))],
            "url": "http://x",
            "text": TEXTS,
            "lang": "en",
            "fetch_time": "2026-01-01",
            "source": "test",
        }
    )
    write_shards(docs, data / "curated_corpus" / SNAPSHOT / "docs")
    shards = data / "token_shards" / SNAPSHOT
    shards.mkdir(parents=True)
    (shards / "manifest.json").write_text(
        json.dumps({"vocab_size": 272, "config": {"val_fraction": 0.99, "seed": 0}})
    )


@pytest.fixture(scope="module")
def rounds_run(tmp_path_factory):
    """(home, runs, materializations by (asset, partition)) of one ``lifecycle run`` of the selection."""
    from dagster_project.cli import _instance, materialize_lifecycle

    home = tmp_path_factory.mktemp("posttrain") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIFECYCLE_HOME", str(home))
        mp.setenv("DAGSTER_HOME", str(home / ".dagster"))
        mp.setenv("LIFECYCLE_PRESET", "tiny")
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("LIFECYCLE_DVC", raising=False)
        (home / ".dagster").mkdir(parents=True)
        _fixtures(home)
        runs = materialize_lifecycle(SELECT, SNAPSHOT, None, OPS)
        mats = {}
        for run in runs:
            for e in _instance().all_logs(run["run_id"]):
                if e.dagster_event is not None and e.dagster_event.is_step_materialization:
                    m = e.dagster_event.step_materialization_data.materialization
                    mats[(m.asset_key.to_user_string(), str(m.partition))] = m.metadata
        yield home, runs, mats


def _value(meta, key):
    return getattr(meta[key], "value", meta[key])


def test_rounds_run_in_order_after_the_synthetic_data(rounds_run):
    _, runs, mats = rounds_run
    assert [(r["job"], r["partition"]) for r in runs] == [
        ("lifecycle", SNAPSHOT),
        ("posttrain_round", f"{SNAPSHOT}|round-1"),
        ("posttrain_round", f"{SNAPSHOT}|round-2"),
        ("lifecycle", SNAPSHOT),
    ]
    assert all(r["success"] for r in runs), runs
    assert {a for a, _ in mats} == set(SELECT)
    for asset in ROUND_ASSETS:
        for k in (1, 2):
            meta = mats[(asset, f"{SNAPSHOT}|round-{k}")]
            assert _value(meta, "version_status") == "current" and _value(meta, "dvc_md5").endswith(".dir")
            assert STANDARD_KEYS <= set(meta) and _value(meta, "mlflow_run_id")


def test_synthetic_data_counts_drops_and_never_trains_on_held_out(rounds_run):
    home, _, mats = rounds_run
    meta = mats[("synthetic_data", SNAPSHOT)]
    out = home / "data" / "synthetic_data" / SNAPSHOT
    report = json.loads((out / "report.json").read_text())
    assert report["generated"] == 32 and _value(meta, "generated") == 32
    assert sum(report["splits"].values()) == _value(meta, "num_records")
    assert _value(meta, "heldout_records") == report["splits"]["heldout"] > 0
    dropped = [json.loads(x) for x in (out / "dropped.jsonl").read_text().splitlines()]
    assert dict(pd.Series([d["drop_reason"] for d in dropped]).value_counts()) == report["dropped_by_reason"]
    held = {json.loads(x)["id"] for x in (out / "heldout.jsonl").read_text().splitlines()}
    for asset in ("sft_model", "dpo_model", "reward_model"):  # the training sets each stage wrote
        for train in (home / "data" / "_work" / asset).rglob("train.jsonl"):
            assert not held & {json.loads(x)["id"] for x in train.read_text().splitlines()}


def test_round_two_starts_from_round_one(rounds_run):
    home, _, mats = rounds_run
    one, two = (mats[("sft_model", f"{SNAPSHOT}|round-{k}")] for k in (1, 2))
    assert _value(one, "started_from") == "base_model" and _value(two, "started_from") == "chat_model"
    inputs = _value(two, "inputs")
    assert set(inputs) == {"chat_model", "synthetic_data", "rejection_samples"}
    ev = json.loads((home / "data" / "chat_model" / SNAPSHOT / "round-2" / "evals.json").read_text())
    assert ev["started_from"] == "chat_model" and ev["round"] == 2
    first = json.loads((home / "data" / "chat_model" / SNAPSHOT / "round-1" / "evals.json").read_text())
    assert ev["models"]["start"] == first["models"]["chat"]  # round 2's start is round 1's chat model


def test_reward_model_and_rejection_samples(rounds_run):
    home, _, mats = rounds_run
    rm = mats[("reward_model", f"{SNAPSHOT}|round-1")]
    assert 0.0 <= _value(rm, "heldout_pair_accuracy") <= 1.0 and _value(rm, "heldout_pairs") > 0
    rs = home / "data" / "rejection_samples" / SNAPSHOT / "round-1"
    report = json.loads((rs / "report.json").read_text())
    samples = [json.loads(x) for x in (rs / "samples.jsonl").read_text().splitlines()]
    assert report["samples"] == sum(len(s["samples"]) for s in samples) == report["prompts"] * 2
    assert report["sft_records"] == len((rs / "sft.jsonl").read_text().splitlines())


def test_dpo_caches_reference_logps_and_the_chat_model_averages_its_runs(rounds_run):
    home, _, mats = rounds_run
    dpo = home / "data" / "dpo_model" / SNAPSHOT / "round-1"
    ref = json.loads((dpo / "reference_logps.json").read_text())
    assert len(ref["train"]) == _value(mats[("dpo_model", f"{SNAPSHOT}|round-1")], "pairs_train")
    assert sorted(p.name for p in (dpo / "runs").iterdir()) == ["seed-1", "seed-2"]
    from safetensors.torch import load_file

    chat = home / "data" / "chat_model" / SNAPSHOT / "round-1"
    runs = [load_file(dpo / "runs" / s / "hf" / "model.safetensors") for s in ("seed-1", "seed-2")]
    avg = load_file(chat / "hf" / "model.safetensors")
    for name, t in avg.items():
        torch.testing.assert_close(t, (runs[0][name] + runs[1][name]) / 2)
    ev = json.loads((chat / "evals.json").read_text())
    assert ev["transformers_parity"]["equal"] and ev["averaged_runs"] == 2
    assert set(ev["models"]) == {"start", "sft", "chat"} and "pref_accuracy" in ev["models"]["chat"]


def test_safety_data_is_mixed_into_sft_and_dpo_and_each_chat_model_is_evaluated(rounds_run):
    home, _, mats = rounds_run
    sft, dpo = (mats[(a, f"{SNAPSHOT}|round-1")] for a in ("sft_model", "dpo_model"))
    # tiny's share 0.2: safety records are a fifth of the train set, half of them borderline
    for meta in (sft, dpo):
        n, total = (
            _value(meta, "safety.records"),
            _value(meta, "train_records" if meta is sft else "pairs_train"),
        )
        assert n == round(0.25 * (total - n)) and _value(meta, "safety.borderline") == round(n * 0.5)
    trained = [
        json.loads(x)["id"]
        for t in (home / "data" / "_work" / "sft_model").rglob("train.jsonl")
        for x in t.read_text().splitlines()
    ]
    assert sum(i.startswith("safety-") for i in trained) >= _value(sft, "safety.records")
    base = json.loads((home / "data" / "safety_evals" / SNAPSHOT / "report.json").read_text())
    evals = [
        json.loads(
            (home / "data" / "chat_safety_evals" / SNAPSHOT / f"round-{k}" / "report.json").read_text()
        )
        for k in (1, 2)
    ]
    assert evals[0]["previous"]["md5"] == base["model"]["md5"]  # round 1 against the base model
    assert evals[1]["previous"]["md5"] == evals[0]["model"]["md5"]  # round 2 against round 1's chat model
    assert evals[1]["previous"]["headline"] == evals[0]["headline"]
    promoted = json.loads(
        (home / "data" / "chat_promotion" / SNAPSHOT / "round-2" / "evals.json").read_text()
    )
    assert promoted["promote"] and promoted["registered"]["chat_model"]["version"] == 2


def test_rounds_table_shows_every_round(rounds_run):
    home, _, mats = rounds_run
    out = home / "data" / "posttrain_rounds" / SNAPSHOT
    table = pd.read_parquet(out / "rounds.parquet")
    assert list(table.index) == [1, 2] and "chat.pref_accuracy" in table.columns
    assert {"start.vr", "chat.vr", "start.frr", "chat.frr", "chat.refusal_margin"} <= set(table.columns)
    assert (out / "rounds.png").read_bytes()[:4] == b"\x89PNG"
    meta = mats[("posttrain_rounds", SNAPSHOT)]
    shown = _value(meta, "rounds_table").splitlines()
    assert shown[0] == "| metric | round 1 | round 2 |" and shown[-1].startswith("| win_rate_vs_start |")
    assert _value(meta, "rounds_plot").startswith("![rounds](data:image/png;base64,")
