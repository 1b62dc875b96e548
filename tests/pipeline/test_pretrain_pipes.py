"""pretrain_initial launches ml.train under torchrun (2 gloo ranks) through Dagster Pipes; rank 0 reports."""

import json

import pandas as pd
import pytest

from ml.tokens.shards import ShardConfig, write_token_shards
from ml.tokens.tokenizer import TokenizerConfig, save_tokenizer, train_tokenizer

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e")]


@pytest.fixture
def upstream(home):
    """Tokenizer + token shards for partition snap-1, built from real text (Python's reference manual)."""
    _write_upstream(home, 150)
    return home


def _write_upstream(home, n_texts: int):
    from pydoc_data.topics import topics

    texts = [t for t in topics.values() if len(t) > 500][:n_texts]
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
            "domain": "general",
        }
    )
    write_token_shards(df, tok, home / "data" / "token_shards" / "snap-1", ShardConfig.from_preset("tiny"))


def test_pretrain_runs_under_torchrun_through_pipes(upstream):
    import dagster as dg

    from dagster_project.cli import _instance
    from dagster_project.definitions import defs
    from dagster_project.partitions import SNAPSHOTS

    instance = _instance()
    instance.add_dynamic_partitions(SNAPSHOTS.name, ["snap-1"])
    train = {
        "steps": 6,
        "data": {"batch_size": 4, "seq_len": 64},
        "schedule": {"warmup_steps": 2, "batch_ramp": []},
        "eval_every": 3,
        "ckpt_every": 3,
    }
    result = defs.resolve_job_def("lifecycle").execute_in_process(
        run_config={
            "ops": {"pretrain_initial": {"config": {"train": train, "min_nats_below_unigram": -100.0}}},
            "resources": {"torchrun": {"config": {"nproc_per_node": 2}}},
        },
        instance=instance,
        partition_key="snap-1",
        asset_selection=[dg.AssetKey("pretrain_initial")],
    )
    assert result.success
    mat = result.get_asset_materialization_events()[0].step_materialization_data.materialization
    meta = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    assert meta["nproc_per_node"] == 2 and meta["final_step"] == 6 and meta["tokens_seen"] == 6 * 4 * 64
    art = upstream / "data" / "pretrain_initial" / "snap-1"
    steps = [json.loads(line)["step"] for line in (art / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # rank 0 alone wrote metrics, once per step
    config = json.loads((art / "hf" / "config.json").read_text())
    assert config["vocab_size"] == 1024  # the model follows the tokenizer
    from transformers import LlamaForCausalLM

    LlamaForCausalLM.from_pretrained(str(art / "hf"))  # the artifact is a loadable HF Llama
    logs = instance.all_logs(result.run_id)
    assert any("step 6:" in (e.user_message or "") for e in logs)  # streamed through Pipes

    # New token shards: the next materialization trains afresh (no resume from the other data's checkpoint)
    # and the finished run's work dir is cleaned up.
    work_root = upstream / "data" / "_work" / "pretrain_initial" / "snap-1"
    first_work = {p.name for p in work_root.iterdir()}
    _write_upstream(upstream, 40)  # 40 of the 70 long reference-manual topics
    again = defs.resolve_job_def("lifecycle").execute_in_process(
        run_config={
            "ops": {"pretrain_initial": {"config": {"train": train, "min_nats_below_unigram": -100.0}}}
        },
        instance=instance,
        partition_key="snap-1",
        asset_selection=[dg.AssetKey("pretrain_initial")],
    )
    assert again.success
    steps = [json.loads(line)["step"] for line in (art / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    second_work = {p.name for p in work_root.iterdir()}
    assert len(second_work) == 1 and second_work != first_work
