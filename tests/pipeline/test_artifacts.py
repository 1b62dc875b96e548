"""Artifact handles: a path, the recorded version, and helpers; a missing artifact fails with its name."""

import json

import dagster as dg
import pandas as pd
import pytest

from dagster_project.artifacts import DocShards, HFCheckpoint, Tokenizer, TokenShards, handle_type
from dagster_project.resources import DvcResource, directory_md5
from ml.io import write_shards


def test_doc_shards_handle_reads_its_documents(home):
    art = home / "data" / "url_deduped" / "snap"
    df = pd.DataFrame(
        {
            "id": ["a", "b"],
            "url": ["u1", "u2"],
            "text": ["x y", "z"],
            "lang": "en",
            "fetch_time": "t",
            "source": "s",
        }
    )
    write_shards(df, art / "docs")
    handle = DocShards.at("url_deduped", "snap")
    assert handle.path == art and handle.docs_dir == art / "docs" and handle.partition == "snap"
    assert handle.md5 == directory_md5(art)  # no DVC record: the content hash
    assert handle.read()["id"].tolist() == ["a", "b"] and len(handle.shard_paths()) >= 1


def test_md5_is_the_one_dvc_recorded(home):
    art = home / "data" / "tokenizer" / "snap"
    art.mkdir(parents=True)
    (art / "tokenizer.json").write_text("{}")
    (art / "special_tokens_map.json").write_text("{}")
    md5 = DvcResource().track(art)
    handle = Tokenizer.at("tokenizer", "snap")
    assert handle.md5 == md5 and md5.endswith(".dir")
    assert [p.name for p in handle.hf_files()] == ["tokenizer.json", "special_tokens_map.json"]


def test_token_shards_and_checkpoint_helpers(home):
    shards = home / "data" / "token_shards" / "all"
    shards.mkdir(parents=True)
    (shards / "manifest.json").write_text(json.dumps({"vocab_size": 1024}))
    assert TokenShards.at("token_shards", None).vocab_size == 1024
    (home / "data" / "pretrained_base" / "p" / "hf").mkdir(parents=True)
    assert HFCheckpoint.at("pretrained_base", "p").hf_dir == home / "data" / "pretrained_base" / "p" / "hf"


def test_missing_artifact_names_asset_and_partition(home):
    with pytest.raises(dg.Failure, match=r"Upstream artifact curated_corpus \(partition snap\) is missing"):
        DocShards.at("curated_corpus", "snap")


def test_handle_types():
    assert handle_type(DocShards) == (DocShards, False)
    assert handle_type(dict[str, TokenShards]) == (TokenShards, True)
    with pytest.raises(dg.Failure, match="must be typed Artifact"):
        handle_type(str)
