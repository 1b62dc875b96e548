"""The whole default lifecycle, crawl to pre-training, the scaling sweep and two post-training rounds,
materialized into a temp home from a small local web, the way `lifecycle run` does it (snapshot assets, sweep
cells side by side, fit and flagship, rounds in order, the rounds table)."""

import json
import shutil
import subprocess
import sys

import dagster as dg
import pandas as pd
import pytest
import yaml
from pipeline_helpers import ROUND_ASSETS

from assets.models import EVALUATED_MODEL
from dagster_project.definitions import defs, stage_names
from ml.io import read_shards

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e")]

# Few steps of every pre-training stage. Such short runs honestly miss the bars of the tiny preset, so the
# test sets its own (test-only) bounds through run config and asserts the numbers the gates judged.
PRETRAIN_FEW_STEPS = {
    "pretrain_initial": {
        "config": {
            "train": {
                "steps": 8,
                "schedule": {"warmup_steps": 2, "batch_ramp": [[0, 256, 64], [1024, 512, 128]]},
                "data": {"batch_size": 4, "seq_len": 64},
                "eval_every": 4,
                "ckpt_every": 4,
                "eval_batches": 2,
            },
            "min_nats_below_unigram": -100.0,
        }
    },
    "pretrain_long_context": {
        "config": {
            "train": {
                "steps": 2,
                "schedule": {"warmup_steps": 1},
                "eval_every": 2,
                "ckpt_every": 2,
                "eval_batches": 1,
            },
            "seq_lens": [256, 512],
            "batch_tokens": 512,
            "niah": {"items_per_cell": 1, "depths": [0.0, 1.0]},
            "max_doc_tokens": 128,
            "max_short_loss_increase": 100.0,
        }
    },
    "pretrain_annealed": {
        "config": {
            "train": {
                "steps": 4,
                "data": {"seq_len": 256},
                "eval_every": 4,
                "ckpt_every": 2,
                "eval_batches": 1,
            }
        }
    },
    "base_model": {"config": {"count": 2, "min_nats_below_unigram": -100.0, "max_doc_tokens": 128}},
    "base_model_evals": {
        "config": {
            "niah": {"items_per_cell": 1, "lengths": [256], "depths": [0.5]},
            "max_doc_tokens": 128,
        }
    },
}


# A cheap sweep for the test: 2 budgets x 3 sizes of 10-40 steps; minima need not be interior in so short runs,
# so flagged budgets enter the fit (use_edge_minima, listed in its metadata) and the forecast check only warns.
TEST_SWEEP = {
    "budgets": [4e8, 8e8],
    "sizes": [["s8", 8, 1, 1, 1, 24, 1e-2], ["s12", 12, 1, 1, 1, 32, 1e-2], ["s16", 16, 1, 2, 1, 48, 1e-2]],
    "budget_sizes": [],
    "min_steps": 5,
    "eval_tokens": 2048,
    "bootstrap": 20,
    "use_edge_minima": True,
    "forecast_max_rel_error": 1e9,
}


# Two post-training rounds of a few steps each (the wiring; the asset and ml tests check the rest).
def _posttrain_steps(steps: int = 2) -> dict:
    return {
        "steps": steps,
        "schedule": {"warmup_steps": 1},
        "data": {"batch_size": 2, "seq_len": 512},
        "eval_every": steps,
        "ckpt_every": steps,
        "eval_batches": 1,
    }


POSTTRAIN_FEW_STEPS = {
    "synthetic_data": {
        "config": {
            "n_math": 24,
            "n_code": 4,
            "n_qa": 4,
            "max_tokens": 300,
            "heldout_fraction": 0.25,
            "val_fraction": 0.2,
        }
    },
    "reward_model": {"config": {"train": _posttrain_steps()}},
    "rejection_samples": {"config": {"k": 2, "n_prompts": 2, "max_new_tokens": 8}},
    "sft_model": {"config": {"train": _posttrain_steps()}},
    "dpo_model": {"config": {"train": _posttrain_steps(), "seeds": [1, 2]}},
    "chat_model": {"config": {"max_items": 2, "max_new_tokens": 8}},
    "posttrain_rounds": {"config": {"rounds": 2}},
}
# a few prompts of each evaluation: the e2e run checks the wiring, the ml tests the numbers
FEW_SAFETY = {
    "data": {"per_category": 1},
    "sample": {"max_new_tokens": 8},
    "injection_per_technique": 1,
    "code_tasks": 2,
}


def _events(instance, runs: list[dict], event_type: str) -> list:
    return [
        e.dagster_event
        for run in runs
        for e in instance.all_logs(run["run_id"])
        if e.dagster_event is not None and e.dagster_event.event_type_value == event_type
    ]


def test_every_asset_materializes_with_gates_passing(home, tmp_path):
    from dagster_project.cli import _instance, materialize_lifecycle

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
    ops = {
        "raw_crawl": {"config": {"local_web_yaml": str(web)}},
        "tokenizer": {"config": {"vocab_size": 1024}},
        "safety_evals": {"config": FEW_SAFETY},
        # 2-step rounds change a chat model's answers at random: the regression gate judges the test's
        # own margins (1.0), its numbers are checked below
        "chat_safety_evals": {"config": {**FEW_SAFETY, "vr_margin": 1.0, "frr_margin": 1.0}},
        "fp8_model": {"config": {"eval_docs": 32, "eval_tokens_per_doc": 64}},
        **PRETRAIN_FEW_STEPS,
        **POSTTRAIN_FEW_STEPS,
        **{name: {"config": TEST_SWEEP} for name in ("scaling_sweep", "scaling_law_fit", "scaling_flagship")},
    }
    runs = materialize_lifecycle(None, "e2e", None, ops)
    failures = [
        f"{e.step_key}: {e.step_failure_data.error.message.strip()[:3000]}"
        for e in _events(_instance(), runs, "STEP_FAILURE")
    ]
    assert not failures, failures
    assert [r["job"] for r in runs] == (
        ["lifecycle"]
        + ["sweep_cells"] * 6
        + ["lifecycle"]
        + ["posttrain_round"] * 2
        + ["lifecycle"]
        + ["data_value_candidates"] * 3  # one per class the small web has (no math_reasoning), last
    )
    assert all(r["success"] for r in runs), runs
    instance = _instance()
    materializations = [
        e.step_materialization_data.materialization for e in _events(instance, runs, "ASSET_MATERIALIZATION")
    ]

    done = [m.asset_key.to_user_string() for m in materializations]
    assert set(done) == set(stage_names()) and done.count("scaling_sweep") == 6  # every stage, every cell
    assert all(done.count(a) == 2 for a in ROUND_ASSETS)  # every round
    checks = [e.event_specific_data for e in _events(instance, runs, "ASSET_CHECK_EVALUATION")]
    # the round assets' checks (chat model 1, its safety evaluation 4, its promotion 1) run once per round
    assert len(checks) == len(defs.resolve_asset_graph().asset_check_keys) + 6
    by_name = {c.check_name: c for c in checks}
    # an 8-step run has learned token frequencies at best: the gates judged the test's own bounds, with numbers
    unigram = by_name.pop("pretrain_initial_beats_unigram")
    gap = unigram.metadata["nats_below_unigram"].value
    assert unigram.passed and gap < 1.5 and unigram.metadata["min_nats_below_unigram"].value == -100.0
    assert gap == pytest.approx(unigram.metadata["unigram_nats"].value - unigram.metadata["val_loss"].value)
    recovered = by_name.pop("long_context_recovers_short_loss")
    assert recovered.passed and {"256.short_loss", "512.short_loss"} <= set(recovered.metadata)
    assert by_name.pop("long_context_solves_niah").metadata["512.min_niah_accuracy"].value == 0.0
    assert by_name.pop("pretrain_annealed_lr_reaches_zero").metadata["last_lr"].value == 0.0
    base_gap = by_name.pop("base_model_beats_unigram").metadata["nats_below_unigram"].value
    assert base_gap < 1.5
    parity = by_name.pop("base_model_matches_transformers")
    assert parity.passed and parity.metadata["abs_diff"].value <= 1e-4
    # the test web holds out few documents: fewer than 500 items is a warning that names the count
    items = by_name.pop("mc_eval_items_enough")
    assert items.passed or (
        items.severity == dg.AssetCheckSeverity.WARN and items.metadata["items"].value < 500
    )
    # a 10-40 step sweep forecasts nothing well: the check reports its errors and warns (bound set out of reach)
    forecast = by_name.pop("forecast_vs_actual")
    assert forecast.passed == (forecast.metadata["worst_rel_error"].value <= 0.02)
    assert forecast.passed or forecast.severity == dg.AssetCheckSeverity.WARN
    # the small test web has (almost) no math: the mix check may warn that a class is unfilled, naming it,
    # but no check fails at ERROR severity
    mix = by_name.pop("mix_hits_target")
    assert mix.passed or (
        mix.severity == dg.AssetCheckSeverity.WARN and mix.metadata["unfilled_classes"].value
    )
    assert all(c.passed for c in by_name.values()), [n for n, c in by_name.items() if not c.passed]
    assert all(m.metadata["dagster/row_count"] == m.metadata["num_records"] for m in materializations)

    data = home / "data"
    corpus = read_shards(data / "curated_corpus" / "e2e" / "docs")
    assert len(corpus) > 50 and {"domain", "quality_score"} <= set(corpus.columns)
    mix = json.loads((data / "curated_corpus" / "e2e" / "mix_report.json").read_text())
    # every class the corpus could fill is within 0.05 of its applied (re-normalized) target
    filled = {c: v for c, v in mix["classes"].items() if c not in mix["unfilled_classes"]}
    assert filled and all(abs(v["realized"] - v["applied_target"]) <= 0.05 for v in filled.values())
    metrics = [
        json.loads(line)
        for line in (data / "pretrain_initial" / "e2e" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [m["step"] for m in metrics] == list(range(1, 9)) and metrics[-1]["loss"] < metrics[0]["loss"]
    assert [m["batch_tokens"] for m in metrics] == [256] * 4 + [
        512
    ] * 4  # the ramp: 64 -> 128 after 1,024 tokens
    stages = json.loads((data / "pretrain_long_context" / "e2e" / "stages.json").read_text())["stages"]
    assert [s["seq_len"] for s in stages] == [256, 512]
    annealed = [
        json.loads(x) for x in (data / "pretrain_annealed" / "e2e" / "metrics.jsonl").read_text().splitlines()
    ]
    assert annealed[-1]["lr"] == 0.0
    assert sorted(p.name for p in (data / "pretrain_annealed" / "e2e" / "checkpoints").iterdir())[-2:] == [
        "step-00000002",
        "step-00000004",
    ]
    base = json.loads((data / "base_model" / "e2e" / "evals.json").read_text())
    assert base["averaged_steps"] == [2, 4]
    from transformers import LlamaForCausalLM

    LlamaForCausalLM.from_pretrained(str(data / "base_model" / "e2e" / "hf"))
    evals = json.loads((data / "base_model_evals" / "e2e" / "evals.json").read_text())
    assert [r["stage"] for r in evals["stages"]] == ["initial", "long_context", "annealed", "average"]
    assert evals["mc_items"] == len(pd.read_parquet(data / "mc_eval_items" / "e2e" / "items.parquet"))
    report = (data / "lifecycle_report" / "e2e" / "report.html").read_text()
    for title in (
        "Curation funnel",
        "Data mix",
        "Scaling laws",
        "Pre-training stages",
        "Post-training rounds",
        "Safety and FP8",
        "Model registry",
    ):
        assert f"<h2>{title}" in report

    # safety: the classifier's held-out numbers, one evaluation of the base model, the FP8 model's quality
    safety = json.loads((data / "safety_classifier" / "e2e" / "report.json").read_text())
    assert safety["heldout"]["items"] == 616 and safety["heldout"]["macro_recall"] >= 0.35
    evals = json.loads((data / "safety_evals" / "e2e" / "report.json").read_text())
    assert evals["model"]["asset"] == EVALUATED_MODEL and evals["previous"] is None
    responses = pd.read_parquet(data / "safety_evals" / "e2e" / "responses.parquet")
    assert len(responses) == 28 and set(responses["kind"]) == {"adversarial", "borderline"}  # 14 x 2 x 1
    assert evals["headline"]["vr"] == responses[responses["kind"] == "adversarial"]["violated"].mean()
    assert len(pd.read_parquet(data / "safety_evals" / "e2e" / "injection.parquet")) == 18
    assert pd.read_parquet(data / "safety_evals" / "e2e" / "analyser_self_check.parquet")["ok"].all()
    quality = json.loads((data / "fp8_model" / "e2e" / "quality.json").read_text())
    assert quality["docs"] == 32 and quality["layers"] == {
        "fp8_layers": [1, 2],
        "high_precision_layers": [0, 3],
    }
    assert abs(quality["ppl_increase"]) <= quality["max_ppl_increase"]

    _check_scaling(data, forecast)
    rounds = json.loads((data / "chat_model" / "e2e" / "round-2" / "evals.json").read_text())
    assert rounds["started_from"] == "chat_model" and rounds["transformers_parity"]["equal"]
    table = pd.read_parquet(data / "posttrain_rounds" / "e2e" / "rounds.parquet")
    assert list(table.index) == [1, 2]
    _check_round_safety(data, table)
    _check_registry(home)

    # every artifact is versioned and the DVC repo of the home is clean
    cells = sorted(p.name for p in (data / "scaling_sweep" / "e2e").iterdir() if p.is_dir())
    assert cells == ["4e8_s12", "4e8_s16", "4e8_s8", "8e8_s12", "8e8_s16", "8e8_s8"]
    for asset in stage_names():
        if asset in ROUND_ASSETS:
            assert all((data / asset / "e2e" / f"round-{k}.dvc").exists() for k in (1, 2)), asset
            continue
        assert asset in ("scaling_sweep", "data_value") or (data / asset / "e2e.dvc").exists(), asset
    assert all((data / "scaling_sweep" / "e2e" / f"{cell}.dvc").exists() for cell in cells)
    valued = ("general", "code", "multilingual")  # the classes the small web has
    assert all((data / "data_value" / "e2e" / f"{c}.dvc").exists() for c in valued)
    status = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=home, capture_output=True, text=True)
    assert "up to date" in status.stdout.lower(), status.stdout

    # a sweep with a missing cell: the fit is refused, naming the cell
    shutil.rmtree(data / "scaling_sweep" / "e2e" / "8e8_s12")
    again = materialize_lifecycle(["scaling_law_fit"], "e2e", None, ops)
    assert [r["success"] for r in again] == [False]
    failures = [e.step_failure_data.error.message for e in _events(instance, again, "STEP_FAILURE")]
    assert len(failures) == 1 and "scaling_sweep is missing for partition(s) e2e|8e8_s12:" in failures[0]


def _check_round_safety(data, table) -> None:
    """Safety data in each round's SFT/DPO; each chat model evaluated against the round's start."""
    sft = json.loads((data / "chat_model" / "e2e" / "round-1" / "evals.json").read_text())
    assert sft["round"] == 1
    base = json.loads((data / "safety_evals" / "e2e" / "report.json").read_text())
    for k in (1, 2):
        ev = json.loads((data / "chat_safety_evals" / "e2e" / f"round-{k}" / "report.json").read_text())
        assert ev["model"]["asset"] == "chat_model"
        start = (
            base
            if k == 1
            else json.loads((data / "chat_safety_evals" / "e2e" / "round-1" / "report.json").read_text())
        )
        assert ev["previous"]["md5"] == start["model"]["md5"]
        assert (
            table.loc[k, "start.vr"] == start["headline"]["vr"]
            and table.loc[k, "chat.vr"] == ev["headline"]["vr"]
        )
        comparison = pd.read_parquet(
            data / "chat_safety_evals" / "e2e" / f"round-{k}" / "comparison_category.parquet"
        )
        assert "all" in comparison.index


def _check_registry(home) -> None:
    """base, FP8 and each round's chat model registered; candidate on the newest; champion where promoted."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{home}/mlflow.db")
    versions = {
        name: sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
        for name in ("llama-lifecycle-base", "llama-lifecycle-fp8", "llama-lifecycle-chat")
    }
    assert versions == {
        "llama-lifecycle-base": [1],
        "llama-lifecycle-fp8": [1],
        "llama-lifecycle-chat": [1, 2],
    }
    chat = client.get_model_version_by_alias("llama-lifecycle-chat", "candidate")
    assert int(chat.version) == 2 and chat.tags["partition"] == "e2e|round-2"
    champions = {
        name: int(client.get_model_version_by_alias(name, "champion").version)
        for name in ("llama-lifecycle-base", "llama-lifecycle-fp8", "llama-lifecycle-chat")
    }
    assert champions == {"llama-lifecycle-base": 1, "llama-lifecycle-fp8": 1, "llama-lifecycle-chat": 2}
    promotion = json.loads((home / "data" / "model_promotion" / "e2e" / "evals.json").read_text())
    assert promotion["promote"] and {r["asset"] for r in promotion["requirements"]} == {
        "base_model_evals",
        "safety_evals",
        "fp8_model",
        "scaling_flagship",
    }


def _check_scaling(data, forecast_check) -> None:
    """Every cell's record, the fit's numbers beside the paper's, and the flagship against its forecast."""
    records = [
        json.loads(p.read_text()) for p in sorted((data / "scaling_sweep" / "e2e").glob("*/cell.json"))
    ]
    for r in records:
        assert r["tokens"] == r["steps"] * 256 and r["flops"] == r["tokens"] * r["flops_per_token"]
        assert (
            r["tokens_seen"] == r["tokens"]
            and r["eval_tokens"] == 2048
            and min(r["wall_time_s"], r["cpu_time_s"]) > 0
        )
        assert 0 <= r["mc_accuracy"] <= 1 and r["mc_normalized_nll"] > 0 and r["mc_chance"] == 0.25
        curve = (data / "scaling_sweep" / "e2e" / r["key"] / "metrics.jsonl").read_text().splitlines()
        assert len(curve) == r["steps"]
    fit = json.loads((data / "scaling_law_fit" / "e2e" / "fit.json").read_text())
    assert (fit["paper_alpha"], fit["paper_A"], fit["include_edge"]) == (0.53, 0.29, True)
    assert [b["budget"] for b in fit["budgets"]] == [4e8, 8e8] and all(b["used"] for b in fit["budgets"])
    assert fit["alpha_ci"][0] <= fit["alpha_ci"][1] and fit["forecast"]["budget"] == 2.4e9
    assert {"isoflops.png", "power_law.png"} <= {p.name for p in (data / "scaling_law_fit" / "e2e").iterdir()}
    flagship = json.loads((data / "scaling_flagship" / "e2e" / "flagship.json").read_text())
    assert flagship["record"]["size"] == fit["flagship"]["size"] and flagship["record"]["budget"] == 2.4e9
    loss = flagship["compare"]["val_loss"]
    assert loss["forecast"] == fit["forecast"]["expected_loss"]
    assert loss["actual"] == flagship["record"]["final_val_loss"]
    assert loss["rel_error"] == abs(loss["actual"] - loss["forecast"]) / abs(loss["actual"])
    assert forecast_check.metadata["val_loss_rel_error"].value == loss["rel_error"]
