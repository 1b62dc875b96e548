"""The Definitions load, the discovered graph holds the lifecycle's stages with their edges, every edge
is a typed artifact handle, and jobs come from the domain groups."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
from pipeline_helpers import ROUND_ASSETS

from dagster_project.artifacts import Artifact, handle_type
from dagster_project.definitions import defs, stage_names

ROOT = Path(__file__).resolve().parents[2]
CORE_STAGES = [
    "raw_crawl",
    "extracted_docs",
    "url_filtered",
    "url_deduped",
    "boilerplate_removed",
    "pii_redacted",
    "minhash_deduped",
    "line_deduped",
    "filtered_docs",
    "quality_classifier",
    "quality_scored",
    "domain_classified",
    "tokenizer",
    "curated_corpus",
    "token_shards",
    "pretrain_initial",
    "pretrain_long_context",
    "pretrain_annealed",
    "base_model",
    "base_model_evals",
]


def test_asset_graph_is_the_lifecycle():
    names = stage_names()
    assert [n for n in names if n in CORE_STAGES] == CORE_STAGES  # discovered, in dependency order
    graph = defs.resolve_asset_graph()
    parents = {
        k.to_user_string(): {p.to_user_string() for p in graph.get(k).parent_keys}
        for k in graph.get_all_asset_keys()
    }
    assert parents["extracted_docs"] == {"raw_crawl"}
    assert parents["url_filtered"] == {"extracted_docs"}
    assert parents["url_deduped"] == {"url_filtered"}
    assert parents["boilerplate_removed"] == {"url_deduped"}
    assert parents["pii_redacted"] == {"boilerplate_removed"}
    assert parents["minhash_deduped"] == {"pii_redacted"}
    assert parents["quality_scored"] == {"filtered_docs", "quality_classifier"}
    assert parents["tokenizer"] == {"domain_classified"}  # trained before the mix, which counts its tokens
    assert parents["curated_corpus"] == {"domain_classified", "tokenizer"}
    assert parents["token_shards"] == {"curated_corpus", "tokenizer"}
    assert parents["pretrain_initial"] == {"token_shards", "tokenizer"}
    shared = {"curated_corpus", "token_shards", "tokenizer"}
    assert parents["pretrain_long_context"] == {"pretrain_initial", *shared}
    assert parents["pretrain_annealed"] == {"pretrain_long_context", *shared}
    assert parents["base_model"] == {"pretrain_annealed", "pretrain_long_context", *shared}
    stages = {"pretrain_initial", "pretrain_long_context", "pretrain_annealed", "base_model"}
    assert parents["base_model_evals"] == stages | shared | {"mc_eval_items"}

    assert parents["mc_eval_items"] == {"curated_corpus", "token_shards"}
    assert parents["scaling_sweep"] == {"token_shards", "tokenizer", "mc_eval_items"}
    assert parents["scaling_law_fit"] == {"scaling_sweep", "token_shards"}
    assert parents["scaling_flagship"] == {"scaling_law_fit", "token_shards", "tokenizer", "mc_eval_items"}
    valued = {"pretrain_initial", "mc_eval_items", *shared}  # the mid checkpoint and the MC eval
    assert parents["data_value_control"] == valued
    assert parents["data_value"] == {"data_value_control", *valued}

    assert parents["synthetic_data"] == {"curated_corpus", "token_shards", "tokenizer"}
    assert parents["reward_model"] == {"base_model", "synthetic_data"}
    assert parents["rejection_samples"] == {"base_model", "synthetic_data", "reward_model"}
    assert parents["sft_model"] == {"base_model", "synthetic_data", "rejection_samples"}
    assert parents["dpo_model"] == {"sft_model", "synthetic_data", "rejection_samples"}
    assert parents["chat_model"] == {"dpo_model", "sft_model", "reward_model", "base_model", "synthetic_data"}
    assert parents["posttrain_rounds"] == {"chat_model", "chat_safety_evals"}
    assert parents["chat_safety_evals"] == {"chat_model", "safety_classifier", "safety_evals"}
    assert parents["chat_promotion"] == {"chat_model", "chat_safety_evals"}
    evaluations = {"base_model_evals", "safety_evals", "fp8_model", "scaling_flagship"}
    assert parents["model_promotion"] == {"base_model", *evaluations}


def _subclasses(cls: type) -> list[type]:
    return [cls, *(s for sub in cls.__subclasses__() for s in _subclasses(sub))]


def test_blocking_checks_are_gates_inside_their_asset():
    """A blocking check is a check spec of its asset's own op, so it runs before the version is promoted."""
    specs = {
        spec.key.name: spec.blocking
        for key in defs.resolve_asset_graph().get_all_asset_keys()
        for spec in defs.resolve_assets_def(key).check_specs
    }
    assert set(specs.values()) == {True} and sorted(specs) == [
        "base_model_beats_unigram",
        "base_model_matches_transformers",
        "chat_model_matches_transformers",
        "extracted_docs_contract",
        "forecast_vs_actual",
        "fp8_model_layers",
        "fp8_model_quality",
        "long_context_recovers_short_loss",
        "long_context_solves_niah",
        "mc_eval_items_enough",
        "mix_hits_target",
        "pretrain_annealed_lr_reaches_zero",
        "pretrain_initial_beats_unigram",
        "promotion_requirements_met",
        "raw_crawl_has_records",
        "safety_classifier_heldout_quality",
        "safety_evals_analysers_work",
        "safety_evals_group_regressions",
        "safety_evals_no_regression",
        "safety_evals_within_bounds",
        "synthetic_data_heldout_unseen",
        "token_shards_verify",
        "tokenizer_special_tokens",
    ]


def test_every_edge_is_a_typed_handle():
    """Each upstream is declared once, as a typed parameter; each asset names the artifact handle it writes."""
    graph = defs.resolve_asset_graph()
    handles = {c.__name__ for c in _subclasses(Artifact)}
    for key in graph.get_all_asset_keys():
        assets_def = defs.resolve_assets_def(key)
        op = assets_def.op
        assert assets_def.metadata_by_key[key]["artifact_type"] in handles, key
        for inp in op.input_defs:
            cls, _ = handle_type(inp.dagster_type.typing_type)
            assert issubclass(cls, Artifact), (key, inp.name)
    ins = defs.resolve_assets_def(dg.AssetKey("pretrain_initial")).op.input_defs
    assert {i.name: i.dagster_type.typing_type.__name__ for i in ins} == {
        "token_shards": "TokenShards",
        "tokenizer": "Tokenizer",
    }


def test_jobs_per_domain_group():
    graph = defs.resolve_asset_graph()
    groups = {k.to_user_string(): graph.get(k).group_name for k in graph.get_all_asset_keys()}
    assert groups["minhash_deduped"] == "data" and groups["tokenizer"] == "tokens"
    assert groups["pretrain_initial"] == groups["base_model_evals"] == "pretrain"
    assert groups["scaling_sweep"] == groups["scaling_law_fit"] == "scaling"
    # a job has one partition scheme: the sweep's (snapshot x cell) assets run in `sweep_cells`, the
    # data-value experiment's (snapshot x candidate class) in `data_value_candidates`
    cells = {k.to_user_string() for k in defs.resolve_job_def("sweep_cells").asset_layer.selected_asset_keys}
    assert cells == {"scaling_sweep"}
    job = defs.resolve_job_def("data_value_candidates")
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == {"data_value"}
    cells |= {"data_value"}
    # the post-training rounds' (snapshot x round) assets run in `posttrain_round`
    job = defs.resolve_job_def("posttrain_round")
    rounds = {k.to_user_string() for k in job.asset_layer.selected_asset_keys}
    assert rounds == set(ROUND_ASSETS)
    assert groups["synthetic_data"] == groups["posttrain_rounds"] == groups["chat_model"] == "posttrain"
    for group in set(groups.values()):
        job = defs.resolve_job_def(f"{group}_pipeline")
        selected = {k.to_user_string() for k in job.asset_layer.selected_asset_keys}
        assert selected == {a for a, g in groups.items() if g == group} - cells - rounds
    lifecycle = defs.resolve_job_def("lifecycle").asset_layer.selected_asset_keys
    assert {k.to_user_string() for k in lifecycle} == set(stage_names()) - cells - rounds


def test_lifecycle_run_phases_follow_the_sweep():
    from dagster_project.cli import phases

    before, sweep, after, rounds, after_rounds, candidates = phases(stage_names())
    assert before[0] == "lifecycle" and {"token_shards", "mc_eval_items", "base_model"} <= set(before[1])
    assert {"synthetic_data", "data_value_control"} <= set(before[1]) and "data_value" not in before[1]
    assert sweep == ("sweep_cells", ["scaling_sweep"])
    assert after == ("lifecycle", ["scaling_law_fit", "scaling_flagship", "model_promotion"])
    assert rounds[0] == "posttrain_round"
    assert rounds[1][:5] == ["reward_model", "rejection_samples", "sft_model", "dpo_model", "chat_model"]
    assert set(rounds[1][5:]) == {"chat_safety_evals", "chat_promotion"}
    assert after_rounds == ("lifecycle", ["posttrain_rounds", "lifecycle_report"])
    assert candidates == ("data_value_candidates", ["data_value"])  # every class, after everything else
    assert phases(["scaling_law_fit", "tokenizer"]) == [
        ("lifecycle", ["tokenizer"]),
        ("lifecycle", ["scaling_law_fit"]),
    ]
    assert phases(["posttrain_rounds", "sft_model", "base_model"]) == [
        ("lifecycle", ["base_model"]),
        ("posttrain_round", ["sft_model"]),
        ("lifecycle", ["posttrain_rounds"]),
    ]


def test_lifecycle_run_runs_the_configured_rounds_in_order_and_stops_after_a_failure(home, monkeypatch):
    from dagster_project import cli
    from dagster_project.partitions import ROUND_KEYS

    assert cli.rounds_config("tiny", None).rounds == 2 and cli.rounds_config("8b", None).rounds == 6
    assert cli.rounds_config("tiny", {"posttrain_rounds": {"config": {"rounds": 3}}}).rounds == 3
    calls = []

    def execute(job, partition, names, preset, ops):
        calls.append((job, str(partition)))
        return {"job": job, "partition": str(partition), "success": str(partition) != "s|round-2"}

    monkeypatch.setattr(cli, "_execute", execute)
    ops = {"posttrain_rounds": {"config": {"rounds": 3}}}
    runs = cli._run_rounds("s", ["sft_model"], "tiny", ops)
    assert calls == [("posttrain_round", "s|round-1"), ("posttrain_round", "s|round-2")]  # round 3 never runs
    assert [r["success"] for r in runs] == [True, False]
    assert cli._instance().get_dynamic_partitions(ROUND_KEYS.name) == ["round-1", "round-2", "round-3"]


def test_every_asset_has_a_docstring_and_checks_are_blocking():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        assert defs.resolve_assets_def(key).descriptions_by_key[key], f"{key} has no description"
    checks = list(defs.resolve_asset_graph().asset_check_keys)
    assert {c.name for c in checks} >= {
        "raw_crawl_has_records",
        "extracted_docs_contract",
        "mix_hits_target",
        "tokenizer_special_tokens",
        "token_shards_verify",
    }
    warn_only: set[str] = set()
    for spec_key in checks:
        blocking = defs.resolve_asset_graph().get_check_spec(spec_key).blocking
        assert blocking == (spec_key.name not in warn_only), spec_key.name


def test_dagster_definitions_validate(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}  # a fresh clone has no .dagster/ yet
    out = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0, out.stdout + out.stderr
