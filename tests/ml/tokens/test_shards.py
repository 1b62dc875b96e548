"""Token shards: exact tokens, boundary index, manifest counts, split, repeats, tamper detection."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from ml.io import ShardError
from ml.tokens.shards import (
    ShardConfig,
    assign_split,
    heldout_mask,
    open_index,
    open_shard,
    read_manifest,
    split_keys,
    val_mask,
    write_token_shards,
    written_config,
)
from ml.tokens.tokenizer import byte_tokenizer, tokenizer_sha256

BOS, EOS = 256, 257  # byte_tokenizer(16): ids 0-255 are bytes, specials follow


def three_docs() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": ["d0", "d1", "d2"],
            "url": ["u0", "u1", "u2"],
            "text": ["ab", "cdé", "f"],
            "lang": ["en", "fr", "en"],
            "source": ["web", "web", "code"],
            "domain": ["general", "general", "code"],
        }
    )


@pytest.fixture()
def tok():
    return byte_tokenizer(16)


def test_three_docs_exact(tok, tmp_path):
    cfg = ShardConfig(tokens_per_shard=100, val_fraction=0.0)
    m = write_token_shards(three_docs(), tok, tmp_path / "shards", cfg)
    d = tmp_path / "shards"
    assert sorted(p.name for p in d.iterdir()) == ["manifest.json", "train-00000.bin", "train-00000.idx.npy"]
    tokens = np.fromfile(d / "train-00000.bin", dtype="<u4")
    # "é" is two UTF-8 bytes, 0xC3 0xA9.
    assert tokens.tolist() == [BOS, 97, 98, EOS, BOS, 99, 100, 0xC3, 0xA9, EOS, BOS, 102, EOS]
    assert np.load(d / "train-00000.idx.npy").tolist() == [0, 4, 10]
    assert np.load(d / "train-00000.idx.npy").dtype == np.int64
    assert m.splits == {
        "train": {"docs": 3, "unique_docs": 3, "tokens": 13},
        "val": {"docs": 0, "unique_docs": 0, "tokens": 0},
    }
    assert m.tokens_per_source == {"train": {"code": 3, "web": 10}, "val": {}}
    assert m.tokens_per_lang == {"train": {"en": 7, "fr": 6}, "val": {}}
    assert m.tokens_per_class == {"train": {"code": 3, "general": 10}, "val": {}}
    assert m.mix == {"realized": {"code": 3 / 13, "general": 10 / 13}}
    assert (m.vocab_size, m.dtype, m.bos_id, m.eos_id) == (272, "uint32", BOS, EOS)
    assert m.tokenizer_sha256 == tokenizer_sha256(tok)
    [info] = m.shards["train"]
    assert (info.file, info.tokens, info.docs) == ("train-00000.bin", 13, 3)
    assert info.sha256 == hashlib.sha256((d / "train-00000.bin").read_bytes()).hexdigest()
    assert m.shards["val"] == []
    on_disk = json.loads((d / "manifest.json").read_text())
    assert on_disk["splits"]["train"]["tokens"] == 13 and on_disk["format_version"] == 1
    assert read_manifest(d) == m
    assert m.to_stats() == {
        "vocab_size": 272.0,
        "shards": 1.0,
        "train_docs": 3.0,
        "train_unique_docs": 3.0,
        "train_tokens": 13.0,
        "val_docs": 0.0,
        "val_unique_docs": 0.0,
        "val_tokens": 0.0,
        "tokens_by_source/code": 3.0,
        "tokens_by_source/web": 10.0,
        "tokens_by_class/code": 3.0,
        "tokens_by_class/general": 10.0,
        "tokens_by_lang/en": 7.0,
        "tokens_by_lang/fr": 6.0,
        "mix/code": 3 / 13,
        "mix/general": 10 / 13,
    }
    assert open_shard(d / "train-00000.bin").tolist() == tokens.tolist()
    assert isinstance(open_shard(d / "train-00000.bin"), np.memmap)


def test_shard_cap_keeps_documents_whole(tok, tmp_path):
    cfg = ShardConfig(tokens_per_shard=9, val_fraction=0.0, add_bos=False)
    m = write_token_shards(three_docs(), tok, tmp_path, cfg)
    # Docs are 3, 5 and 2 tokens (no BOS): 3 + 5 <= 9 -> shard 0 = docs 0, 1; 8 + 2 > 9 -> shard 1 = doc 2.
    assert [(s.file, s.tokens, s.docs) for s in m.shards["train"]] == [
        ("train-00000.bin", 8, 2),
        ("train-00001.bin", 2, 1),
    ]
    assert open_shard(tmp_path / "train-00000.bin").tolist() == [97, 98, EOS, 99, 100, 0xC3, 0xA9, EOS]
    assert open_index(tmp_path / "train-00000.idx.npy").tolist() == [0, 3]
    assert open_shard(tmp_path / "train-00001.bin").tolist() == [102, EOS]
    assert open_index(tmp_path / "train-00001.idx.npy").tolist() == [0]
    assert m.bos_id is None


def test_oversized_document_gets_its_own_shard(tok, tmp_path):
    m = write_token_shards(three_docs(), tok, tmp_path, ShardConfig(tokens_per_shard=2, val_fraction=0.0))
    assert [s.tokens for s in m.shards["train"]] == [4, 6, 3]


def test_split_by_document_hash(tok, tmp_path):
    df = pd.DataFrame({"id": [f"doc{i}" for i in range(200)], "text": [f"x{i}" for i in range(200)]})
    is_val = heldout_mask(df, 0.25, seed=3)
    assert 20 < is_val.sum() < 80
    # A document keeps its split when the corpus changes around it.
    assert (heldout_mask(df.iloc[50:], 0.25, seed=3) == is_val[50:]).all()
    assert not (heldout_mask(df, 0.25, seed=4) == is_val).all()
    m = write_token_shards(df, tok, tmp_path, ShardConfig(val_fraction=0.25, seed=3))
    val_tokens = sum(len(t) + 2 for t in df["text"][is_val])
    assert m.splits["val"] == {
        "docs": int(is_val.sum()),
        "unique_docs": int(is_val.sum()),
        "tokens": val_tokens,
    }
    val = open_shard(tmp_path / "val-00000.bin")
    expected = np.concatenate([[BOS, *t.encode(), EOS] for t in df["text"][is_val]])
    assert val.tolist() == expected.tolist()


def test_the_split_follows_the_text_so_a_recrawl_splits_the_same_way(tok, tmp_path):
    """A re-crawl of the same pages gives new ids (sha1 of url + fetch time) and the same texts: the
    shards' validation split is the same documents. The key is xxh64 of the UTF-8 text, salted by the seed
    (``3:<hex digest>``, hand-computed here); ``split_key: id`` keeps the old rule."""
    import xxhash

    texts = [f"page {i} text" for i in range(60)]
    first = pd.DataFrame({"id": [f"crawl1-{i}" for i in range(60)], "text": texts})
    again = pd.DataFrame({"id": [f"crawl2-{i}" for i in range(60)], "text": texts})
    assert (heldout_mask(first, 0.25, seed=3) == heldout_mask(again, 0.25, seed=3)).all()
    assert split_keys(first)[0] == xxhash.xxh64_hexdigest(b"page 0 text")
    expected = [
        xxhash.xxh64_intdigest(f"3:{xxhash.xxh64_hexdigest(t.encode())}".encode()) / 2**64 < 0.25
        for t in texts
    ]
    assert heldout_mask(first, 0.25, seed=3).tolist() == expected
    by_id = heldout_mask(first, 0.25, seed=3, key="id")
    assert (by_id == assign_split(first["id"], 0.25, seed=3)).all()
    assert not (by_id == heldout_mask(again, 0.25, seed=3, key="id")).all()
    m1 = write_token_shards(first, tok, tmp_path / "1", ShardConfig(val_fraction=0.25, seed=3))
    m2 = write_token_shards(again, tok, tmp_path / "2", ShardConfig(val_fraction=0.25, seed=3))
    assert m1.splits == m2.splits and m1.config["split_key"] == "text"
    assert (
        open_shard(tmp_path / "1" / "val-00000.bin").tolist()
        == open_shard(tmp_path / "2" / "val-00000.bin").tolist()
    )


def test_a_manifest_without_split_key_reads_back_as_the_id_rule():
    df = pd.DataFrame({"id": [f"d{i}" for i in range(80)], "text": [f"t{i}" for i in range(80)]})
    old = {"val_fraction": 0.2, "seed": 1, "min_val_docs": 0}
    assert (val_mask(df, old) == assign_split(df["id"], 0.2, seed=1)).all()
    assert (
        written_config(old).split_key == "id" and written_config(ShardConfig().to_dict()).split_key == "text"
    )
    assert (val_mask(df, old | {"split_key": "text"}) == heldout_mask(df, 0.2, seed=1)).all()
    with pytest.raises(ValueError, match="split key 'url'"):
        heldout_mask(df, 0.2, seed=1, key="url")
    with pytest.raises(ValueError, match="ShardConfig.split_key='url'"):
        ShardConfig(split_key="url")


def test_val_never_empty_by_chance():
    ids = pd.Series(["a", "b", "c"])
    assert assign_split(ids, 1e-12, seed=0).sum() == 1
    with_copies = pd.Series(["a", "b", "c", "a", "b", "c"])
    picked = assign_split(with_copies, 1e-12, seed=0)
    assert picked.sum() == 2 and (picked[:3] == picked[3:]).all()
    assert assign_split(ids, 0.0, seed=0).sum() == 0
    assert assign_split(ids.iloc[:1], 1e-12, seed=0).sum() == 0


def test_min_val_docs_takes_the_smallest_hashes_and_leaves_training_docs():
    import xxhash

    ids = pd.Series([f"doc-{i}" for i in range(100)])
    by_hash = sorted(range(100), key=lambda i: xxhash.xxh64_intdigest(f"0:doc-{i}".encode()))
    plain = assign_split(ids, 0.05, seed=0)
    assert set(np.flatnonzero(plain)) <= set(by_hash[:10])  # the hash rule alone: u < 0.05
    at_least = assign_split(ids, 0.05, seed=0, min_docs=20)
    assert sorted(np.flatnonzero(at_least)) == sorted(by_hash[:20])
    assert (assign_split(ids, 0.05, seed=0, min_docs=1) == plain).all()  # already enough: unchanged
    assert assign_split(ids, 0.05, seed=0, min_docs=500).sum() == 50  # at most half goes to validation
    assert assign_split(ids, 0.0, seed=0, min_docs=20).sum() == 0  # no validation asked for


def test_upsampled_copies_and_weight_column(tok, tmp_path):
    # ml/curate/mix.py's output: copies are extra rows with the same id, `repeat` = copy index.
    df = three_docs()
    df = pd.concat([df.iloc[[0]], df.iloc[[0]], df.iloc[[2]]], ignore_index=True).assign(
        repeat=[0, 1, 0], weight=[0.5, 0.5, 2.0]
    )
    m = write_token_shards(df, tok, tmp_path, ShardConfig(val_fraction=0.0))
    # First copies in table order (d0, d2), then second copies (d0).
    d0, d2 = [BOS, 97, 98, EOS], [BOS, 102, EOS]
    assert open_shard(tmp_path / "train-00000.bin").tolist() == d0 + d2 + d0
    assert open_index(tmp_path / "train-00000.idx.npy").tolist() == [0, 4, 7]
    assert m.splits["train"] == {"docs": 3, "unique_docs": 2, "tokens": 11}
    assert m.tokens_per_class["train"] == {"code": 3, "general": 8}
    assert m.mix == {
        "realized": {"code": 3 / 11, "general": 8 / 11},
        "target_weights": {"code": 2.0, "general": 0.5},
    }


def test_repeated_rows_share_a_split(tok, tmp_path):
    # The mix up-samples by repeating rows; every copy of a document lands in the same split.
    df = pd.DataFrame(
        {"id": [f"doc{i % 50}" for i in range(150)], "text": [f"t{i % 50}" for i in range(150)]}
    )
    m = write_token_shards(df, tok, tmp_path, ShardConfig(val_fraction=0.3, seed=1))
    is_val = heldout_mask(df, 0.3, seed=1)
    n_val_ids = df["id"][is_val].nunique()
    val_texts = df["text"][is_val].unique()  # val keeps one copy of each document
    assert m.splits["val"] == {
        "docs": n_val_ids,
        "unique_docs": n_val_ids,
        "tokens": sum(len(t) + 2 for t in val_texts),
    }
    assert m.splits["train"] == {
        "docs": 3 * (50 - n_val_ids),
        "unique_docs": 50 - n_val_ids,
        "tokens": 3 * sum(len(t) + 2 for t in df["text"][~is_val].unique()),
    }
    assert open_shard(tmp_path / "val-00000.bin").tolist() == [
        tid for t in val_texts for tid in (BOS, *t.encode(), EOS)
    ]
    assert 0 < n_val_ids < 50


def test_bad_input_is_named(tok, tmp_path):
    with pytest.raises(KeyError, match="'text'"):
        write_token_shards(pd.DataFrame({"id": [1]}), tok, tmp_path, ShardConfig())
    with pytest.raises(ValueError, match="'repeat'"):
        write_token_shards(three_docs().assign(repeat=[0, -1, 0]), tok, tmp_path, ShardConfig())
    with pytest.raises(ValueError, match="dtype='uint16'"):
        ShardConfig(dtype="uint16")


@pytest.fixture()
def written(tok, tmp_path):
    write_token_shards(three_docs(), tok, tmp_path, ShardConfig(tokens_per_shard=6, val_fraction=0.0))
    return tmp_path


def test_tampered_shard_is_named(written):
    path = written / "train-00001.bin"
    data = bytearray(path.read_bytes())
    data[0] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=r"train-00001\.bin: sha256 .* does not match"):
        read_manifest(written)
    read_manifest(written, verify_sha256=False)  # same size: only the hash catches it


def test_truncated_shard_is_named(written):
    path = written / "train-00000.bin"
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(ShardError, match=r"train-00000\.bin: size 12 bytes, manifest says 4 tokens"):
        read_manifest(written, verify_sha256=False)


def test_missing_files_are_named(written):
    (written / "train-00002.idx.npy").unlink()
    with pytest.raises(ShardError, match=r"train-00002\.idx\.npy: listed in .*manifest.json but missing"):
        read_manifest(written)
    (written / "manifest.json").unlink()
    with pytest.raises(ShardError, match="manifest.json: token shard manifest does not exist"):
        read_manifest(written)


def test_presets():
    assert ShardConfig.from_preset("tiny").tokens_per_shard == 1 << 20
    assert ShardConfig.from_preset("8b").dtype == "uint32"
    small = ShardConfig.from_preset("small")
    assert ShardConfig.from_dict(small.to_dict()) == small
