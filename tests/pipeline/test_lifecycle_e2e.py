"""The whole default lifecycle, crawl to pre-training, materialized into a temp home from a small local web."""

import json
import subprocess
import sys

import dagster as dg
import pandas as pd
import pytest
import yaml

from dagster_project.definitions import defs, stage_names
from ml.io import read_shards

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e")]


def test_every_asset_materializes_with_gates_passing(home, tmp_path):
    from dagster_project.cli import _instance
    from dagster_project.partitions import SNAPSHOTS

    web = tmp_path / "web.yaml"
    web.write_text(
        yaml.safe_dump(
            {
                "max_man_pages_per_lang": 8,
                "max_man_pages_en": 150,
                "max_html_docs": 30,
                "max_metadata": 40,
                "max_copyright": 60,
                "max_tex_docs": 2,
            }
        )
    )
    run_config = {
        "ops": {
            "raw_crawl": {"config": {"local_web_yaml": str(web)}},
            "tokenizer": {"config": {"vocab_size": 1024}},
            "pretrained_base": {
                "config": {
                    "steps": 8,
                    "schedule": {"warmup_steps": 2},
                    "data": {"batch_size": 4, "seq_len": 64},
                    "eval_every": 4,
                    "ckpt_every": 4,
                }
            },
            # a few prompts of each evaluation: the e2e run checks the wiring, the ml tests the numbers
            "safety_evals": {
                "config": {
                    "data": {"per_category": 1},
                    "sample": {"max_new_tokens": 8},
                    "injection_per_technique": 1,
                    "code_tasks": 2,
                }
            },
            "fp8_model": {"config": {"eval_docs": 8, "eval_tokens_per_doc": 64}},
        }
    }
    instance = _instance()
    instance.add_dynamic_partitions(SNAPSHOTS.name, ["e2e"])
    result = defs.resolve_job_def("lifecycle").execute_in_process(
        run_config=run_config, instance=instance, partition_key="e2e", raise_on_error=True
    )
    assert result.success

    done = {
        e.step_materialization_data.materialization.asset_key.to_user_string()
        for e in result.get_asset_materialization_events()
    }
    assert done == set(stage_names())  # every discovered stage
    checks = [
        e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    assert len(checks) == len(defs.resolve_asset_graph().asset_check_keys)
    by_name = {c.check_name: c for c in checks}
    # an 8-step run has learned token frequencies at best: the unigram check warns, honestly, with numbers
    unigram = by_name.pop("pretrained_base_beats_unigram")
    assert not unigram.passed and unigram.severity == dg.AssetCheckSeverity.WARN
    gap = unigram.metadata["nats_below_unigram"].value
    assert gap < unigram.metadata["min_nats_below_unigram"].value
    assert gap == pytest.approx(unigram.metadata["unigram_nats"].value - unigram.metadata["val_loss"].value)
    # the small test web has (almost) no math: the mix check may warn that a class is unfilled, naming it,
    # but no check fails at ERROR severity
    mix = by_name.pop("mix_hits_target")
    assert mix.passed or (
        mix.severity == dg.AssetCheckSeverity.WARN and mix.metadata["unfilled_classes"].value
    )
    assert all(c.passed for c in by_name.values()), [n for n, c in by_name.items() if not c.passed]
    metadata = [
        e.step_materialization_data.materialization.metadata
        for e in result.get_asset_materialization_events()
    ]
    assert all(m["dagster/row_count"] == m["num_records"] for m in metadata)

    data = home / "data"
    corpus = read_shards(data / "curated_corpus" / "e2e" / "docs")
    assert len(corpus) > 50 and {"domain", "quality_score"} <= set(corpus.columns)
    mix = json.loads((data / "curated_corpus" / "e2e" / "mix_report.json").read_text())
    # every class the corpus could fill is within 0.05 of its applied (re-normalized) target
    filled = {c: v for c, v in mix["classes"].items() if c not in mix["unfilled_classes"]}
    assert filled and all(abs(v["realized"] - v["applied_target"]) <= 0.05 for v in filled.values())
    metrics = [
        json.loads(line)
        for line in (data / "pretrained_base" / "e2e" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [m["step"] for m in metrics] == list(range(1, 9)) and metrics[-1]["loss"] < metrics[0]["loss"]

    # safety: the classifier's held-out numbers, one evaluation of the base model, the FP8 model's quality
    safety = json.loads((data / "safety_classifier" / "e2e" / "report.json").read_text())
    assert safety["heldout"]["items"] == 616 and safety["heldout"]["macro_recall"] >= 0.35
    evals = json.loads((data / "safety_evals" / "e2e" / "report.json").read_text())
    assert evals["model"]["asset"] == "pretrained_base" and evals["previous"] is None
    responses = pd.read_parquet(data / "safety_evals" / "e2e" / "responses.parquet")
    assert len(responses) == 28 and set(responses["kind"]) == {"adversarial", "borderline"}  # 14 x 2 x 1
    assert evals["headline"]["vr"] == responses[responses["kind"] == "adversarial"]["violated"].mean()
    assert len(pd.read_parquet(data / "safety_evals" / "e2e" / "injection.parquet")) == 18
    assert pd.read_parquet(data / "safety_evals" / "e2e" / "analyser_self_check.parquet")["ok"].all()
    quality = json.loads((data / "fp8_model" / "e2e" / "quality.json").read_text())
    assert quality["docs"] == 8 and quality["layers"] == {
        "fp8_layers": [1, 2],
        "high_precision_layers": [0, 3],
    }
    assert abs(quality["ppl_increase"]) <= quality["max_ppl_increase"]

    # every artifact is versioned and the DVC repo of the home is clean
    for asset in stage_names():
        assert (data / asset / "e2e.dvc").exists(), asset
    status = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=home, capture_output=True, text=True)
    assert "up to date" in status.stdout.lower(), status.stdout
