"""Adding a stage is adding its module: a throwaway stage written into a copy of the repo appears in the
definitions, the ``lifecycle`` job, a job for its domain, the checks, dvc.yaml and the stage list the
end-to-end tests expect — through the production discovery path, with no other file edited."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

STAGE = '''"""A throwaway stage: counts the token shards' files."""

import dagster as dg

from dagster_project.artifacts import Artifact, TokenShards
from dagster_project.partitions import SNAPSHOTS


@dg.asset(partitions_def=SNAPSHOTS, kinds={"python"})
def shard_census(context: dg.AssetExecutionContext, token_shards: TokenShards) -> dg.Output[Artifact]:
    """How many files the token shards hold."""
    raise NotImplementedError


@dg.asset_check(asset=shard_census, blocking=True, partitions_def=SNAPSHOTS)
def shard_census_nonempty(shard_census: Artifact) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)
'''

PROBE = """
import json, yaml
from dagster_project.definitions import defs, stage_names
from dagster_project.dvc_yaml import render_dvc_yaml
graph = defs.resolve_asset_graph()
job = defs.resolve_job_def("lifecycle")
census = defs.resolve_job_def("census_pipeline")
stages = yaml.safe_load(render_dvc_yaml())["stages"]
print(json.dumps({
    "stage_names": stage_names(),
    "lifecycle": sorted(k.to_user_string() for k in job.asset_layer.selected_asset_keys),
    "census_job": sorted(k.to_user_string() for k in census.asset_layer.selected_asset_keys),
    "checks": sorted(k.name for k in graph.asset_check_keys),
    "group": graph.get(next(k for k in graph.get_all_asset_keys() if k.path == ["shard_census"])).group_name,
    "dvc": stages.get("shard_census"),
}))
"""


def test_a_new_stage_module_is_discovered_everywhere(tmp_path):
    repo = tmp_path / "repo"
    for pkg in ("ml", "assets", "dagster_project"):
        shutil.copytree(ROOT / pkg, repo / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "assets" / "census").mkdir()
    (repo / "assets" / "census" / "__init__.py").write_text("")
    (repo / "assets" / "census" / "shard_census.py").write_text(STAGE)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=repo, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout.strip().splitlines()[-1])

    names = found["stage_names"]
    assert "shard_census" in names and names.index("shard_census") > names.index("token_shards")
    assert "shard_census" in found["lifecycle"]
    assert found["census_job"] == ["shard_census"] and found["group"] == "census"
    assert "shard_census_nonempty" in found["checks"]
    dvc = found["dvc"]
    assert "assets/census/shard_census.py" in dvc["deps"] and "data/token_shards/${partition}" in dvc["deps"]
    assert dvc["outs"] == ["data/shard_census/${partition}"]
    assert "shard_census" in dvc["cmd"]
