"""The Definitions load, the graph is the lifecycle's, and dvc.yaml mirrors it."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

from dagster_project.definitions import defs

ROOT = Path(__file__).resolve().parents[2]
LIFECYCLE = [
    "raw_crawl",
    "extracted_docs",
    "url_deduped",
    "minhash_deduped",
    "line_deduped",
    "filtered_docs",
    "quality_classifier",
    "quality_scored",
    "domain_classified",
    "curated_corpus",
    "tokenizer",
    "token_shards",
    "pretrained_base",
]


def _keys():
    return {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}


def test_asset_graph_is_the_lifecycle():
    assert _keys() == set(LIFECYCLE)
    graph = defs.resolve_asset_graph()
    parents = {
        k.to_user_string(): {p.to_user_string() for p in graph.get(k).parent_keys}
        for k in graph.get_all_asset_keys()
    }
    assert parents["extracted_docs"] == {"raw_crawl"}
    assert parents["token_shards"] == {"curated_corpus", "tokenizer"}
    assert parents["pretrained_base"] == {"token_shards", "tokenizer"}


def test_every_asset_has_a_docstring_and_checks_are_blocking():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        assert defs.resolve_assets_def(key).descriptions_by_key[key], f"{key} has no description"
    checks = list(defs.resolve_asset_graph().asset_check_keys)
    assert len(checks) >= 5
    for spec_key in checks:
        assert defs.resolve_asset_graph().get_check_spec(spec_key).blocking


def test_dvc_yaml_matches_asset_graph():
    from dagster_project.dvc_yaml import render_dvc_yaml

    on_disk = (ROOT / "dvc.yaml").read_text()
    assert on_disk == render_dvc_yaml(), "dvc.yaml is stale: run `lifecycle dvc-yaml`"
    stages = yaml.safe_load(on_disk)["stages"]
    assert list(stages) == [k for k in LIFECYCLE if k in stages] and set(stages) == set(LIFECYCLE)
    assert stages["extracted_docs"]["outs"] == ["data/extracted_docs/${partition}"]
    assert "data/raw_crawl/${partition}" in stages["extracted_docs"]["deps"]


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
