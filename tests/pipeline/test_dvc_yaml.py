"""dvc.yaml tells the truth: generated from the discovered asset graph, each stage depends on the source
files its module imports and on the params its command passes; editing a library module in a copy of
the repo makes exactly the stages that use it, and everything downstream of them, stale."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from dagster_project.definitions import defs, stage_names
from dagster_project.dvc_yaml import render_dvc_yaml, source_deps

ROOT = Path(__file__).resolve().parents[2]
DVC = [sys.executable, "-m", "dvc"]


def downstream_of(name: str) -> list[str]:
    """``name`` and every asset downstream of it in the Dagster graph, in dependency order."""
    graph = defs.resolve_asset_graph()
    seen, todo = set(), [dg.AssetKey(name)]
    while todo:
        key = todo.pop()
        if key not in seen:
            seen.add(key)
            todo.extend(graph.get(key).child_keys)
    return [n for n in stage_names() if dg.AssetKey(n) in seen]


# stands in for `python -m dagster_project.cli materialize NAME --partition P --preset T`: a new output
FAKE_PYTHON = '#!/bin/sh\nmkdir -p "data/$4/$6" && echo "rebuilt $4 with $8" > "data/$4/$6/x"\n'


def test_dvc_yaml_matches_asset_graph():
    from dagster_project.definitions import stage_names

    on_disk = (ROOT / "dvc.yaml").read_text()
    assert on_disk == render_dvc_yaml(), "dvc.yaml is stale: run `lifecycle dvc-yaml`"
    stages = yaml.safe_load(on_disk)["stages"]
    assert list(stages) == stage_names()
    assert stages["extracted_docs"]["outs"] == ["data/extracted_docs/${partition}"]
    assert stages["minhash_deduped"]["cmd"] == (
        "LIFECYCLE_DVC=off ${python} -m dagster_project.cli materialize minhash_deduped "
        "--partition ${partition} --preset ${preset}"
    )
    assert all(s["params"] == ["preset", "partition"] for s in stages.values())
    deps = stages["minhash_deduped"]["deps"]
    assert {"ml/curate/minhash.py", "assets/data/minhash.py", "data/pii_redacted/${partition}"} <= set(deps)
    assert "ml/curate/url_dedup.py" not in deps and "assets/data/url_dedup.py" not in deps
    assert "dagster_project/train_entry.py" in stages["pretrain_initial"]["deps"]  # run by torchrun
    # params.yaml names the venv `make install` creates, relative to the repo root
    assert yaml.safe_load((ROOT / "params.yaml").read_text())["python"] == ".venv/bin/python"
    assert "VENV := .venv" in (ROOT / "Makefile").read_text()


def test_source_deps_follow_imports_inside_functions(tmp_path):
    (tmp_path / "ml" / "sub").mkdir(parents=True)
    (tmp_path / "ml" / "__init__.py").write_text("")
    (tmp_path / "ml" / "sub" / "__init__.py").write_text("")
    (tmp_path / "ml" / "sub" / "a.py").write_text("from . import b\n\ndef f():\n    from ml.sub.c import g\n")
    (tmp_path / "ml" / "sub" / "b.py").write_text("import json\n")
    (tmp_path / "ml" / "sub" / "c.py").write_text("from ml.sub.b import x\ng = 1\n")
    (tmp_path / "ml" / "sub" / "unused.py").write_text("")
    assert source_deps("ml.sub.a", root=tmp_path) == [
        "ml/__init__.py",
        "ml/sub/__init__.py",
        "ml/sub/a.py",
        "ml/sub/b.py",
        "ml/sub/c.py",
    ]


def _dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([*DVC, *args], cwd=repo, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


@pytest.fixture
def repo_copy(tmp_path) -> Path:
    """The repo's packages and params in a temp dir, its dvc.yaml generated there, every stage's output
    faked and committed to dvc.lock as if the pipeline had run."""
    repo = tmp_path / "repo"
    for pkg in ("ml", "assets", "dagster_project"):
        shutil.copytree(ROOT / pkg, repo / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    fake = repo / "fakepython"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    (repo / "params.yaml").write_text(yaml.safe_dump({**params, "python": "./fakepython"}))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    gen = subprocess.run(
        [sys.executable, "-m", "dagster_project.cli", "dvc-yaml"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
    )
    assert gen.returncode == 0, gen.stderr
    _dvc(repo, "init", "--no-scm", "-q")
    for name in yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]:
        (repo / "data" / name / params["partition"]).mkdir(parents=True)
        (repo / "data" / name / params["partition"] / "x").write_text(name)
    _dvc(repo, "commit", "--force", "-q")
    assert json.loads(_dvc(repo, "status", "--json").stdout) == {}
    return repo


def test_editing_minhash_makes_it_and_its_downstream_stale(repo_copy):
    with open(repo_copy / "ml" / "curate" / "minhash.py", "a") as f:
        f.write("\n# an edit\n")
    status = json.loads(_dvc(repo_copy, "status", "--json").stdout)
    assert status == {"minhash_deduped": [{"changed deps": {"ml/curate/minhash.py": "modified"}}]}
    # DVC reruns the stale stage, and each stage whose input it changed; nothing upstream
    out = _dvc(repo_copy, "repro").stdout
    ran = [line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")]
    assert ran == downstream_of("minhash_deduped")
    assert "url_deduped" not in ran and len(ran) >= 10
    assert (repo_copy / "data" / "url_deduped" / "local-web" / "x").read_text() == "url_deduped"


def test_params_reach_the_command(repo_copy):
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    (repo_copy / "params.yaml").write_text(yaml.safe_dump({**params, "preset": "small"}))
    status = json.loads(_dvc(repo_copy, "status", "--json").stdout)
    assert set(status) == set(yaml.safe_load((repo_copy / "dvc.yaml").read_text())["stages"])
    # the param changed, and with it the command that passes it to the run
    assert status["raw_crawl"] == [
        {"changed deps": {"params.yaml": {"preset": "modified"}}},
        "changed command",
    ]
    _dvc(repo_copy, "repro", "raw_crawl", "--single-item")
    assert (
        repo_copy / "data" / "raw_crawl" / "local-web" / "x"
    ).read_text() == "rebuilt raw_crawl with small\n"
