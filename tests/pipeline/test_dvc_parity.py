"""`dvc repro` parity: the md5s DVC computes when it reproduces the deterministic data stages in a clean home
are the md5s of the Dagster materialization, the md5 Dagster and MLflow record is DVC's own (dvc.lock), and
a `dvc push` / `dvc pull` round trip through the home's default local remote restores identical bytes.

Two homes, each a copy of the repo's packages, dvc.yaml and params.yaml (the layout of `make run`, whose home
is the repo root): Dagster materializes the crawl of a small local web and the stages after it in home A
(DVC on: each promotion commits its dvc.yaml stage); home B gets A's crawl and runs `dvc repro`. The crawl
itself is handed over, not reproduced: its WARC records carry fetch dates and the loopback port.
"""

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml
from pipeline_helpers import asset_metadata, run_assets

from dagster_project.resources import directory_md5

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e")]

ROOT = Path(__file__).resolve().parents[2]
PARTITION = "local-web"  # params.yaml's partition: the one `dvc repro` materializes
PARITY_STAGES = ["extracted_docs", "url_filtered", "url_deduped", "boilerplate_removed", "pii_redacted"]
SMALL_WEB = {
    "max_man_pages_per_lang": 3,
    "max_man_pages_en": 20,
    "max_html_docs": 6,
    "max_metadata": 6,
    "max_copyright": 10,
    "max_tex_docs": 1,
}


def repo_home(path: Path) -> Path:
    """A project home laid out like the repo: its packages, dvc.yaml and params.yaml (this interpreter)."""
    for pkg in ("ml", "assets", "dagster_project"):
        shutil.copytree(ROOT / pkg, path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", path / "dvc.yaml")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    (path / "params.yaml").write_text(yaml.safe_dump({**params, "python": sys.executable}))
    return path


def home_env(home: Path) -> dict[str, str]:
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "MLFLOW_TRACKING_URI", "LIFECYCLE_DVC")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return {**env, "LIFECYCLE_HOME": str(home), "DAGSTER_HOME": str(home / ".dagster")}


def dvc(home: Path, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=home,
        env=home_env(home),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, f"dvc {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def lock_md5s(home: Path) -> dict[str, str]:
    """Each stage's output md5 in ``home``'s dvc.lock."""
    lock = yaml.safe_load((home / "dvc.lock").read_text())["stages"]
    return {name: stage["outs"][0]["md5"] for name, stage in lock.items()}


def file_bytes(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def parity_table(rows: list[tuple[str, str, str]]) -> str:
    lines = ["| stage | dagster md5 | dvc md5 | equal |", "| --- | --- | --- | --- |"]
    lines += [f"| {s} | {a} | {b} | {a == b} |" for s, a, b in rows]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def dagster_home(tmp_path_factory) -> Iterator[Path]:
    """Home A, after Dagster materialized the crawl and the parity stages (env pointing at it meanwhile)."""
    tmp = tmp_path_factory.mktemp("parity")
    home = repo_home(tmp / "dagster-home")
    (home / ".dagster").mkdir()
    web = tmp / "web.yaml"
    web.write_text(yaml.safe_dump(SMALL_WEB))
    with pytest.MonkeyPatch.context() as mp:
        for k, v in home_env(home).items():
            mp.setenv(k, v)
        for k in ("MLFLOW_TRACKING_URI", "LIFECYCLE_DVC"):
            mp.delenv(k, raising=False)
        result = run_assets(
            ["raw_crawl", *PARITY_STAGES],
            {"ops": {"raw_crawl": {"config": {"local_web_yaml": str(web), "max_pages": 300}}}},
            partition=PARTITION,
        )
        assert result.success
        md5s = {name: asset_metadata(result, name)["dvc_md5"] for name in ["raw_crawl", *PARITY_STAGES]}
        (home / "metadata.json").write_text(json.dumps(md5s))
        yield home


def test_dagster_md5s_are_dvcs_own_and_push_pull_round_trips(dagster_home):
    home = dagster_home
    recorded = json.loads((home / "metadata.json").read_text())
    locked = lock_md5s(home)
    # every promotion committed its dvc.yaml stage: Dagster's md5 is DVC's, and DVC sees nothing stale
    assert {n: locked[n] for n in recorded} == recorded
    assert json.loads(dvc(home, "status", "--json", *recorded)) == {}
    from dagster_project.resources import MlflowResource

    client = MlflowResource().client()
    for name, md5 in recorded.items():
        event = dg.DagsterInstance.get().get_latest_materialization_event(dg.AssetKey(name))
        run_id = event.asset_materialization.metadata["mlflow_run_id"].value
        assert client.get_run(run_id).data.tags["dvc_md5"] == md5, name
        assert directory_md5(home / "data" / name / PARTITION) == md5, name

    # `dvc push` ran with each promotion; drop the outputs and the cache, pull them back from the remote
    assert (home / "dvc-remote").is_dir()
    before = {n: file_bytes(home / "data" / n / PARTITION) for n in recorded}
    for name in recorded:
        shutil.rmtree(home / "data" / name / PARTITION)
    shutil.rmtree(home / ".dvc" / "cache")
    dvc(home, "pull", *recorded)
    assert {n: file_bytes(home / "data" / n / PARTITION) for n in recorded} == before
    assert json.loads(dvc(home, "status", "--json", *recorded)) == {}


def test_dvc_repro_in_a_clean_home_reproduces_the_dagster_md5s(dagster_home, tmp_path, test_artifacts):
    recorded = json.loads((dagster_home / "metadata.json").read_text())
    clean = repo_home(tmp_path / "repro-home")
    dvc(clean, "init", "--no-scm", "-q")
    shutil.copytree(dagster_home / "data" / "raw_crawl" / PARTITION, clean / "data" / "raw_crawl" / PARTITION)
    dvc(clean, "commit", "--force", "-q", "raw_crawl")  # the crawl is the input, handed over
    out = dvc(clean, "repro", PARITY_STAGES[-1])
    ran = [line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")]
    assert ran == PARITY_STAGES, out

    reproduced = lock_md5s(clean)
    rows = [(name, recorded[name], reproduced[name]) for name in ["raw_crawl", *PARITY_STAGES]]
    table = parity_table(rows)
    (test_artifacts / "dvc_parity.md").write_text(table + "\n")
    print(f"\n`dvc repro` parity ({test_artifacts / 'dvc_parity.md'}):\n{table}")
    assert all(a == b for _, a, b in rows), table

    # the runs `dvc repro` started (DVC off inside them) record DVC's md5 in Dagster and MLflow too
    import mlflow

    instance = dg.DagsterInstance.from_config(str(clean / ".dagster"))
    client = mlflow.MlflowClient(f"sqlite:///{clean}/mlflow.db")
    for name in PARITY_STAGES:
        meta = instance.get_latest_materialization_event(dg.AssetKey(name)).asset_materialization.metadata
        assert meta["dvc_md5"].value == reproduced[name], name
        assert client.get_run(meta["mlflow_run_id"].value).data.tags["dvc_md5"] == reproduced[name], name
