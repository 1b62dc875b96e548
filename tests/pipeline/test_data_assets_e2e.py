"""End to end: materialize raw_crawl and extracted_docs from a small local web into a temp home, and check
the artifacts, the MLflow runs (params, metrics, input datasets) and the DVC versioning."""

import json
import subprocess
import sys
from pydoc_data.topics import topics

import pandas as pd
import pytest
import yaml
from pipeline_helpers import asset_metadata, run_assets, write_wet

from ml.io import md5_file, read_shards

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e")]

STANDARD_KEYS = {"path", "num_records", "mlflow_run_id", "mlflow_run_url", "dvc_md5", "git_sha", "summary"}


@pytest.fixture
def small_web_yaml(tmp_path):
    # Real system documentation with small caps: a few man pages per language, a few docs.
    path = tmp_path / "web.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "max_man_pages_per_lang": 4,
                "max_man_pages_en": 40,
                "max_html_docs": 10,
                "max_metadata": 10,
                "max_copyright": 20,
                "max_tex_docs": 2,
            }
        )
    )
    return path


def test_crawl_and_extract_into_a_temp_home(home, small_web_yaml):
    result = run_assets(
        ["raw_crawl", "extracted_docs"],
        {"ops": {"raw_crawl": {"config": {"local_web_yaml": str(small_web_yaml), "max_pages": 600}}}},
    )
    assert result.success
    crawl_meta, docs_meta = asset_metadata(result, "raw_crawl"), asset_metadata(result, "extracted_docs")
    for meta in (crawl_meta, docs_meta):
        assert STANDARD_KEYS <= set(meta)
    assert crawl_meta["pages_fetched"] > 100 and crawl_meta["robots_refusals"] >= 1
    art = home / "data" / "extracted_docs" / "snap-1"
    docs = read_shards(art / "docs")
    assert len(docs) == docs_meta["num_records"] == docs_meta["docs_kept"]
    assert docs["lang"].nunique() >= 5  # translated man pages
    assert docs_meta["languages"] == docs["lang"].nunique()

    # DVC: the artifact is versioned and its md5 is the one in the metadata; the repo is clean.
    dvc_file = yaml.safe_load((home / "data" / "extracted_docs" / "snap-1.dvc").read_text())
    assert dvc_file["outs"][0]["md5"] == docs_meta["dvc_md5"]
    status = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=home, capture_output=True, text=True)
    assert status.returncode == 0 and "up to date" in status.stdout.lower(), status.stdout

    # MLflow: one run per asset under one parent, with params, metrics and the upstream dataset input.
    from dagster_project.resources import MlflowResource

    client = MlflowResource().client()
    run = client.get_run(docs_meta["mlflow_run_id"])
    assert run.data.tags["dagster.asset_key"] == "extracted_docs"
    assert run.data.tags["dvc_md5"] == docs_meta["dvc_md5"]
    assert run.data.params["config_class"] == "ExtractConfig"
    assert run.data.metrics["docs_out"] == len(docs)
    inputs = run.inputs.dataset_inputs
    assert [i.dataset.name for i in inputs] == ["raw_crawl"] and inputs[0].dataset.digest == crawl_meta[
        "dvc_md5"
    ][:36]
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.data.tags["dagster.run_id"] == result.run_id
    crawl_run = client.get_run(crawl_meta["mlflow_run_id"])
    assert crawl_run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert json.loads(crawl_run.data.params["local_web.max_man_pages_per_lang"]) == 4


def test_rematerialize_keeps_previous_version_in_dvc(home, small_web_yaml):
    cfg = {"ops": {"raw_crawl": {"config": {"local_web_yaml": str(small_web_yaml), "max_pages": 50}}}}
    first = asset_metadata(run_assets(["raw_crawl"], cfg), "raw_crawl")
    cfg["ops"]["raw_crawl"]["config"]["max_pages"] = 80
    second = asset_metadata(run_assets(["raw_crawl"], cfg), "raw_crawl")
    assert first["dvc_md5"] != second["dvc_md5"]
    cache = home / ".dvc" / "cache" / "files" / "md5"
    first_hash = first["dvc_md5"].removesuffix(".dir")
    assert (cache / first_hash[:2] / (first_hash[2:] + ".dir")).exists()  # old version still restorable


def test_ingest_warc_files_like_common_crawl(home, small_web_yaml, tmp_path):
    """warc_paths ingests existing WARC files (here: the crawl's own, standing in for a CC download)."""
    run_assets(
        ["raw_crawl"],
        {"ops": {"raw_crawl": {"config": {"local_web_yaml": str(small_web_yaml), "max_pages": 60}}}},
    )
    warcs = sorted((home / "data" / "raw_crawl" / "snap-1").glob("*.warc.gz"))
    cc = tmp_path / "cc"
    cc.mkdir()
    for w in warcs:
        (cc / ("CC-MAIN-" + w.name)).write_bytes(w.read_bytes())
    (cc / "CC-MAIN-broken.warc.gz").write_bytes(warcs[0].read_bytes()[:3000])  # truncated download
    result = run_assets(
        ["raw_crawl", "extracted_docs"],
        {"ops": {"raw_crawl": {"config": {"warc_paths": [str(cc / "CC-MAIN-*.warc.gz")]}}}},
        partition="cc-2024",
    )
    crawl_meta, docs_meta = asset_metadata(result, "raw_crawl"), asset_metadata(result, "extracted_docs")
    assert crawl_meta["read_errors"] == 1 and "CC-MAIN-broken.warc.gz" in crawl_meta["errors"][0]
    assert crawl_meta["num_records"] > 40 and docs_meta["docs_kept"] > 30


def test_ingest_wet_text_records(home, tmp_path):
    """A Common-Crawl-style WET file (``conversion`` records of plain text) becomes documents as is."""
    texts = [t for t in topics.values() if len(t) > 800][:12]
    wet = write_wet(tmp_path / "CC-MAIN-20240101-00000.warc.wet.gz", texts, "https://docs.example/")
    result = run_assets(
        ["raw_crawl", "extracted_docs"],
        {"ops": {"raw_crawl": {"config": {"warc_paths": [str(wet)]}}}},
        partition="cc-wet",
    )
    assert asset_metadata(result, "raw_crawl")["num_records"] == len(texts)
    docs = read_shards(home / "data" / "extracted_docs" / "cc-wet" / "docs")
    assert sorted(docs["url"]) == sorted(f"https://docs.example/{i}" for i in range(len(texts)))
    assert set(docs["lang"]) == {"en"} and docs["text"].str.len().min() > 700


def test_ingested_files_with_one_name_are_all_kept(home, tmp_path):
    """``a/CC.warc.wet.gz`` and ``b/CC.warc.wet.gz``: both stored (no overwrite), every record in the manifest
    with its stored file, the full source path and the source md5."""
    texts = [t for t in topics.values() if len(t) > 800][:6]
    a = write_wet(tmp_path / "a" / "CC.warc.wet.gz", texts[:3], "https://a.example/")
    b = write_wet(tmp_path / "b" / "CC.warc.wet.gz", texts[3:], "https://b.example/")
    result = run_assets(
        ["raw_crawl", "extracted_docs"],
        {"ops": {"raw_crawl": {"config": {"warc_paths": [str(tmp_path / "*" / "CC.warc.wet.gz")]}}}},
        partition="same-name",
    )
    assert asset_metadata(result, "raw_crawl")["num_records"] == 6
    art = home / "data" / "raw_crawl" / "same-name"
    stored = sorted(p.name for p in art.glob("*.wet.gz"))
    assert len(stored) == 2 and all(n.endswith("-CC.warc.wet.gz") for n in stored)
    manifest = pd.read_parquet(art / "manifest.parquet")
    by_source = manifest.groupby("source_path")["url"].apply(sorted).to_dict()
    assert by_source == {
        str(a.resolve()): [f"https://a.example/{i}" for i in range(3)],
        str(b.resolve()): [f"https://b.example/{i}" for i in range(3)],
    }
    assert set(manifest["source_md5"]) == {md5_file(a), md5_file(b)}
    docs = read_shards(home / "data" / "extracted_docs" / "same-name" / "docs")
    assert len(docs) == 6
