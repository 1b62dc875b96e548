"""The data-value annealing experiment on a tiny fixture: ``lifecycle run`` trains the initial model (keeping
its mid checkpoint), anneals the control once, then every candidate class; a class the corpus lacks fails
naming it, and a candidate compared with a control of another config fails."""

import json

import pandas as pd
import pytest

from ml.io import write_shards
from ml.tokens.shards import ShardConfig, write_token_shards
from ml.tokens.tokenizer import TokenizerConfig, save_tokenizer, train_tokenizer

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e")]

ANNEAL = {
    "steps": 4,
    "data": {"batch_size": 2, "seq_len": 64},
    "eval_every": 4,
    "eval_batches": 1,
    "ckpt_every": 4,
}
DATA_VALUE = {
    "anneal": {"train": ANNEAL},
    "mc_items": 20,
    "max_doc_tokens": 64,
    "heldout_seq_len": 64,
    "mix_tokens": 30_000,
}
OPS = {
    "pretrain_initial": {
        "config": {
            "train": {
                "steps": 6,
                "data": {"batch_size": 4, "seq_len": 64},
                "schedule": {"warmup_steps": 2, "batch_ramp": []},
                "eval_every": 3,
                "ckpt_every": 3,
            },
            "min_nats_below_unigram": -100.0,
        }
    },
    "mc_eval_items": {"config": {"preset": "tiny", "n_items": 40}},
    "data_value_control": {"config": DATA_VALUE},
    "data_value": {"config": DATA_VALUE},
}


@pytest.fixture
def upstream(home):
    """Tokenizer, curated corpus (general and code documents) and token shards for snapshot snap-1."""
    from pydoc_data.topics import topics

    # documents of <= 2,000 characters (<= ~950 tokens): small next to the 30,000-token mix sample
    texts = [t[:2000] for t in topics.values() if len(t) > 500][:120]
    tok_cfg = TokenizerConfig.from_preset("tiny", vocab_size=1024)
    tok = train_tokenizer(texts, tok_cfg)
    save_tokenizer(tok, home / "data" / "tokenizer" / "snap-1", tok_cfg)
    df = pd.DataFrame(
        {
            "id": [f"d{i}" for i in range(len(texts))],
            "url": [f"http://docs/{i}" for i in range(len(texts))],
            "text": texts,
            "lang": "en",
            "fetch_time": "2024-01-01",
            "source": "pydoc",
            "domain": ["code" if i % 4 == 0 else "general" for i in range(len(texts))],
        }
    )
    write_shards(df, home / "data" / "curated_corpus" / "snap-1" / "docs")
    write_token_shards(df, tok, home / "data" / "token_shards" / "snap-1", ShardConfig.from_preset("tiny"))
    return home


def _evals(home, candidate: str) -> dict:
    return json.loads((home / "data" / "data_value" / "snap-1" / candidate / "evals.json").read_text())


def test_every_candidate_class_is_annealed_against_one_control(upstream):
    from dagster_project.cli import _execute, materialize_lifecycle
    from dagster_project.partitions import data_value_partition

    names = ["mc_eval_items", "pretrain_initial", "data_value_control", "data_value"]
    runs = materialize_lifecycle(names, "snap-1", ops=OPS)
    # a class the snapshot's shards hold no tokens of is not run by `lifecycle run` ...
    # (the fixture's shards hold general and code tokens only)
    assert [r["job"] for r in runs] == ["lifecycle", *["data_value_candidates"] * 2]
    outcome = {r["partition"].split("|")[1]: r["success"] for r in runs[1:]}
    assert runs[0]["success"] and outcome == {"general": True, "code": True}
    # ... and materializing it anyway fails with the reason
    math = _execute(
        "data_value_candidates", data_value_partition("snap-1", "math_reasoning"), ["data_value"], None, OPS
    )
    assert not math["success"] and "hold no training tokens of class 'math_reasoning'" in _failure(math)

    control = json.loads((upstream / "data" / "data_value_control" / "snap-1" / "evals.json").read_text())
    shards_manifest = json.loads(
        (upstream / "data" / "token_shards" / "snap-1" / "manifest.json").read_text()
    )
    assert control["mid_step"] == 3  # the initial run's checkpoint at mid_fraction 0.5 of 6 steps
    # the noise floor: the control re-annealed with one other data-order seed (noise_seeds = 1)
    assert set(control["noise"]) == {"heldout_loss", "mc_accuracy", "mc_normalized_nll"} | {
        f"heldout_loss[{c}]" for c in ("code", "general")
    }
    assert control["noise"]["heldout_loss"] > 0
    for candidate in ("code", "general"):
        ev = _evals(upstream, candidate)
        assert ev["control"] == control["scores"]  # compared with the one control
        assert (
            ev["deltas"]["heldout_loss"] == ev["scores"]["heldout_loss"] - control["scores"]["heldout_loss"]
        )
        assert ev["deltas"]["mc_accuracy"] == ev["scores"]["mc_accuracy"] - control["scores"]["mc_accuracy"]
        for c in ("code", "general"):
            got = ev["scores"]["class_loss"][c] - control["scores"]["class_loss"][c]
            assert ev["deltas"][f"heldout_loss[{c}]"] == got
        # the share is set in tokens and met within documents whose tokens are estimated from characters:
        # the sample moves the candidate's share from the default's (25% code, 75% general) towards 30%
        assert ev["realized_share"] == ev["mix"]["token_shares"][candidate]
        default = shards_manifest["mix"]["realized"][candidate]
        assert abs(ev["realized_share"] - 0.3) < abs(default - 0.3), (ev["realized_share"], default)
        table = pd.read_parquet(upstream / "data" / "data_value" / "snap-1" / candidate / "value.parquet")
        assert len(table) == 5 and table["delta"].tolist()[0] == ev["deltas"]["heldout_loss"]
        assert dict(zip(table["metric"], table["noise"], strict=True)) == control["noise"] == ev["noise"]
        rows = [json.loads(x) for x in (upstream / "data" / "data_value" / "snap-1" / candidate /
                                        "metrics.jsonl").read_text().splitlines()]  # fmt: skip
        assert [r["step"] for r in rows] == [1, 2, 3, 4] and rows[-1]["lr"] == 0.0
    assert control["mix"]["token_shares"].keys() == {"code", "general"}  # a sample of the unchanged mix

    # a candidate is only compared with a control annealed and scored the same way
    other = {**OPS, "data_value": {"config": {**DATA_VALUE, "mc_items": 10}}}
    run = _execute(
        "data_value_candidates", data_value_partition("snap-1", "code"), ["data_value"], None, other
    )
    assert not run["success"]
    assert "was made with another annealing / evaluation config" in _failure(run)


def _failure(run: dict) -> str:
    from dagster_project.cli import _instance

    logs = _instance().all_logs(run["run_id"])
    return "".join(
        e.dagster_event.step_failure_data.error.message
        for e in logs
        if e.dagster_event is not None and e.dagster_event.is_step_failure
    )
