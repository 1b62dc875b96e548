"""The unigram baseline equals its hand-computed value on a four-token vocabulary."""

import json
import math

import numpy as np
import pytest

from ml.eval.unigram import unigram_baseline
from ml.tokens.shards import MANIFEST, ShardInfo, ShardManifest


def write_shards(directory, splits: dict[str, list[int]], vocab: int = 4):
    shards = {}
    for split, tokens in splits.items():
        name = f"{split}-00000"
        np.asarray(tokens, dtype="<u4").tofile(directory / f"{name}.bin")
        np.save(directory / f"{name}.idx.npy", np.asarray([0], dtype="<i8"), allow_pickle=False)
        shards[split] = [ShardInfo(f"{name}.bin", f"{name}.idx.npy", len(tokens), 1, "", "")]
    manifest = ShardManifest(
        directory, vocab, "uint32", None, None, "test", shards, {}, {}, {}, {}, {}, "domain", {}
    )
    (directory / MANIFEST).write_text(json.dumps(manifest.to_dict()))
    return directory


def test_unigram_cross_entropy_by_hand(tmp_path):
    # train counts [3, 1, 0, 0] -> add-one p = [4, 2, 1, 1] / 8; val = [0, 1, 3]
    shards = write_shards(tmp_path, {"train": [0, 0, 0, 1], "val": [0, 1, 3]})
    got = unigram_baseline(shards)
    expected = -(math.log(4 / 8) + math.log(2 / 8) + math.log(1 / 8)) / 3
    assert got["unigram_nats"] == pytest.approx(expected, rel=1e-12)
    assert (got["train_tokens"], got["val_tokens"]) == (4, 3)


def test_out_of_vocabulary_ids_are_named(tmp_path):
    write_shards(tmp_path, {"train": [0, 9], "val": [0]})
    with pytest.raises(ValueError, match=r"train-00000.bin: token id 9 >= vocab_size 4"):
        unigram_baseline(tmp_path)


def test_no_validation_split_is_an_error(tmp_path):
    write_shards(tmp_path, {"train": [0, 1]})
    with pytest.raises(ValueError, match="no validation shards"):
        unigram_baseline(tmp_path)
