"""TokenLoader: exact batches, doc ids at boundaries, resume, data-parallel sharding."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ml.tokens.shards import ShardConfig, open_shard, read_manifest, write_token_shards
from ml.tokens.tokenizer import byte_tokenizer
from ml.train.data import IGNORE_INDEX, TokenLoader, TokenStream

BOS, EOS = 256, 257  # byte_tokenizer(16)


def write(tmp_path, texts, tokens_per_shard=1000, val_fraction=0.0):
    df = pd.DataFrame({"id": [f"d{i}" for i in range(len(texts))], "text": texts})
    write_token_shards(
        df,
        byte_tokenizer(16),
        tmp_path,
        ShardConfig(tokens_per_shard=tokens_per_shard, val_fraction=val_fraction),
    )
    return tmp_path


# Stream of the 3-doc example (positions 0-11):
#   256 97 98 257 | 256 99 100 101 257 | 256 102 257
# seq_len 3 -> (12 - 1) // 3 = 3 windows: w0 = pos 0-3, w1 = pos 3-6, w2 = pos 6-9.
# seed 0: np.random.default_rng(0).permutation(3) == [2, 0, 1].
FIRST_INPUTS = [[100, 101, 257], [256, 97, 98], [257, 256, 99]]
FIRST_TARGETS = [[101, 257, 256], [97, 98, 257], [256, 99, 100]]
FIRST_DOC_IDS = [[0, 0, 0], [0, 0, 0], [0, 1, 1]]


# One shard, or one shard per doc (then windows straddle files).
@pytest.mark.parametrize("tokens_per_shard", [1000, 6])
def test_first_batch_exact(tmp_path, tokens_per_shard):
    d = write(tmp_path, ["ab", "cde", "f"], tokens_per_shard)
    assert len(read_manifest(d).shards["train"]) == (1 if tokens_per_shard == 1000 else 3)
    loader = TokenLoader(d, batch_size=3, seq_len=3, seed=0)
    assert (loader.num_windows, loader.batches_per_epoch) == (3, 1)
    batch = next(loader)
    assert batch.inputs.dtype == batch.targets.dtype == batch.doc_ids.dtype == torch.int64
    assert batch.inputs.tolist() == FIRST_INPUTS
    assert batch.targets.tolist() == FIRST_TARGETS
    assert batch.doc_ids.tolist() == FIRST_DOC_IDS
    # Epoch 1 reshuffles with default_rng(0 + 1).permutation(3) == [0, 1, 2].
    second = next(loader)
    assert (loader.epoch, loader.position) == (1, 1)
    assert second.inputs.tolist() == [[256, 97, 98], [257, 256, 99], [100, 101, 257]]


def test_mask_cross_doc_targets(tmp_path):
    d = write(tmp_path, ["ab", "cde", "f"])
    batch = next(TokenLoader(d, batch_size=3, seq_len=3, seed=0, mask_cross_doc_targets=True))
    assert batch.targets.tolist() == [[101, 257, IGNORE_INDEX], [97, 98, 257], [IGNORE_INDEX, 99, 100]]
    assert batch.inputs.tolist() == FIRST_INPUTS


def corpus(n=60, seed=0):
    rng = np.random.default_rng(seed)
    return ["".join(chr(97 + c) for c in rng.integers(0, 26, rng.integers(1, 15))) for _ in range(n)]


@pytest.fixture()
def big(tmp_path):
    return write(tmp_path, corpus(), tokens_per_shard=50)


def test_batches_are_stream_windows_with_doc_ids(big):
    full = np.concatenate([open_shard(p) for p in read_manifest(big).paths("train")]).astype(np.int64)
    loader = TokenLoader(big, batch_size=4, seq_len=8, seed=3)
    assert loader.num_windows == (len(full) - 1) // 8
    for step in range(loader.batches_per_epoch):
        windows = loader.epoch_windows(0)[step * 4 : (step + 1) * 4]
        batch = next(loader)
        for row, w in enumerate(windows):
            seq = full[w * 8 : w * 8 + 9]
            assert batch.inputs[row].tolist() == seq[:-1].tolist()
            assert batch.targets[row].tolist() == seq[1:].tolist()
        # Every document starts with BOS and BOS appears nowhere else: doc id steps exactly at BOS.
        steps = (batch.doc_ids[:, 1:] - batch.doc_ids[:, :-1]).tolist()
        assert steps == (batch.inputs[:, 1:] == BOS).long().tolist()
        assert batch.doc_ids[:, 0].tolist() == [0, 0, 0, 0]


def test_epoch_covers_every_window_once(big):
    loader = TokenLoader(big, batch_size=1, seq_len=8, seed=3)
    assert sorted(loader.epoch_windows(0).tolist()) == list(range(loader.num_windows))
    n = loader.num_windows
    assert loader.epoch_windows(0).tolist() == np.random.default_rng(3).permutation(n).tolist()
    assert loader.epoch_windows(1).tolist() == np.random.default_rng(4).permutation(n).tolist()


def take(loader, n):
    return [next(loader) for _ in range(n)]


def same(a, b):
    return all(torch.equal(x, y) for p, q in zip(a, b, strict=True) for x, y in zip(p, q, strict=True))


@pytest.mark.parametrize("k", [0, 1, 5, 6, 7, 13])
def test_resume_equals_uninterrupted(big, k):
    kwargs = dict(batch_size=12, seq_len=8, seed=11)
    reference = take(TokenLoader(big, **kwargs), 20)
    first = TokenLoader(big, **kwargs)
    before = take(first, k)
    state = first.state_dict()
    resumed = TokenLoader(big, **kwargs)
    resumed.load_state_dict(state)
    after = take(resumed, 20 - k)
    assert first.batches_per_epoch == 6  # so k = 6, 7, 13 cross epoch boundaries
    assert same(before + after, reference)


def test_state_dict_contents_and_mismatch(big):
    loader = TokenLoader(big, batch_size=12, seq_len=8, seed=11)
    take(loader, 7)
    state = loader.state_dict()
    assert state == {
        "epoch": 1,
        "windows_consumed": 12,  # 1 batch of 12 into epoch 1
        "seed": 11,
        "seq_len": 8,
        "global_batch_size": 12,
        "num_windows": loader.num_windows,
    }
    with pytest.raises(ValueError, match="seq_len=8 but this loader has seq_len=4"):
        TokenLoader(big, batch_size=12, seq_len=4, seed=11).load_state_dict(state)
    with pytest.raises(ValueError, match="seed=11"):
        TokenLoader(big, batch_size=12, seq_len=8, seed=12).load_state_dict(state)
    other_batch = TokenLoader(big, batch_size=3, seq_len=8, seed=11, world_size=2)
    with pytest.raises(
        ValueError, match=r"global_batch_size=12 but .* global_batch_size=6 \(batch_size=3 x world"
    ):
        other_batch.load_state_dict(state)
    with pytest.raises(ValueError, match="windows_consumed=13 is not a whole number of global batches of 12"):
        TokenLoader(big, batch_size=6, seq_len=8, seed=11, world_size=2).load_state_dict(
            {**state, "windows_consumed": 13}
        )
    with pytest.raises(ValueError, match="windows_consumed=84 .* within an epoch of 6 batches"):
        TokenLoader(big, batch_size=12, seq_len=8, seed=11).load_state_dict({**state, "windows_consumed": 84})
    with pytest.raises(KeyError, match="epoch"):
        TokenLoader(big, batch_size=12, seq_len=8, seed=11).load_state_dict(
            {k: state[k] for k in list(state)[1:]}
        )


def test_state_of_the_per_rank_format_still_loads(big):
    """States written before ``windows_consumed``: per-rank position, batch size and world size."""
    legacy = {"epoch": 1, "position": 1, "seed": 11, "seq_len": 8, "batch_size": 6, "world_size": 2}
    loader = TokenLoader(big, batch_size=12, seq_len=8, seed=11)
    loader.load_state_dict({**legacy, "num_windows": loader.num_windows})
    assert (loader.epoch, loader.position) == (1, 1)


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_together_serve_the_one_process_batch(big, world):
    """Rank r's p-th batch is rows r, r+W, ... of one process's p-th batch (global batch 6), across epochs."""
    single = TokenLoader(big, batch_size=6, seq_len=8, seed=5)
    ranks = [
        TokenLoader(big, batch_size=6 // world, seq_len=8, seed=5, rank=r, world_size=world)
        for r in range(world)
    ]
    assert [ld.batches_per_epoch for ld in ranks] == [single.batches_per_epoch] * world
    for _ in range(2 * single.batches_per_epoch + 1):
        batch = next(single)
        for r, ld in enumerate(ranks):
            got = next(ld)
            assert torch.equal(got.inputs, batch.inputs[r::world])
            assert torch.equal(got.doc_ids, batch.doc_ids[r::world])
    assert {str(ld.state_dict()) for ld in ranks} == {str(single.state_dict())}  # one state for all


@pytest.mark.parametrize(("saved_world", "resumed_world"), [(1, 2), (2, 1), (3, 2)])
@pytest.mark.parametrize("k", [3, 12, 13])  # 12 batches per epoch: at and past the boundary
def test_state_resumes_at_another_world_size(big, saved_world, resumed_world, k):
    reference = take(TokenLoader(big, batch_size=6, seq_len=8, seed=5), 20)

    def loaders(world):
        return [
            TokenLoader(big, batch_size=6 // world, seq_len=8, seed=5, rank=r, world_size=world)
            for r in range(world)
        ]

    saved = loaders(saved_world)
    assert saved[0].batches_per_epoch == 12
    for _ in range(k):
        for ld in saved:
            next(ld)
    state = saved[-1].state_dict()  # any rank's: all equal
    resumed = loaders(resumed_world)
    for ld in resumed:
        ld.load_state_dict(state)
    for step in range(k, 20):
        for r, ld in enumerate(resumed):
            assert torch.equal(next(ld).inputs, reference[step].inputs[r::resumed_world]), (step, r)


def test_two_ranks_disjoint_and_cover_epoch(big):
    loaders = [TokenLoader(big, batch_size=2, seq_len=8, seed=5, rank=r, world_size=2) for r in range(2)]
    n = loaders[0].num_windows
    per_rank = [set(ld.epoch_windows(0).tolist()) for ld in loaders]
    assert per_rank[0].isdisjoint(per_rank[1])
    assert len(per_rank[0]) == len(per_rank[1]) == n // 2
    perm = np.random.default_rng(5).permutation(n)
    assert per_rank[0] | per_rank[1] == set(perm[: 2 * (n // 2)].tolist())  # all windows when n is even
    assert loaders[0].epoch_windows(0).tolist() == perm[0 : 2 * (n // 2) : 2].tolist()
    # Served batches follow each rank's window order.
    single = TokenLoader(big, batch_size=2, seq_len=8, seed=5)
    for ld in loaders:
        windows = ld.epoch_windows(0)
        for step in range(ld.batches_per_epoch):
            assert torch.equal(next(ld).inputs, single.make_batch(windows[2 * step : 2 * step + 2]).inputs)


def test_val_batches_deterministic(big):
    loader = TokenLoader(big, batch_size=3, seq_len=8, seed=1)
    first, windows = loader.val_batches(2), loader.val_windows(2)
    n = loader.num_windows
    assert len(first) == 2 and len(windows) == 6 and windows[0] == 0 and windows[-1] == n - 1  # spread out
    assert (np.diff(windows) >= (n - 1) // 5).all()
    assert torch.equal(first[1].inputs, loader.make_batch(windows[3:6]).inputs)
    take(loader, 3)
    assert same(loader.val_batches(2), first)
    assert loader.state_dict()["windows_consumed"] == 9
    assert len(loader.val_batches(10_000)) == n // 3
    assert loader.val_windows(10_000).tolist() == list(range(n // 3 * 3))  # the whole split
    ranks = [TokenLoader(big, batch_size=3, seq_len=8, rank=r, world_size=2).val_windows(1) for r in (0, 1)]
    assert sorted(np.concatenate(ranks)) == loader.val_windows(2).tolist()  # any world size: the same windows


def test_val_windows_and_the_documents_they_cover(tmp_path):
    # stream 256 97 98 257 | 256 99 100 101 257 | 256 102 257; seq_len 3: windows 0-3, 3-6, 6-9 (+1 target)
    loader = TokenLoader(write(tmp_path, ["ab", "cde", "f"]), batch_size=1, seq_len=3)
    assert loader.val_windows(2).tolist() == [0, 2]  # first and last of 3
    assert [loader.docs_in(np.array([w])) for w in (0, 1, 2)] == [1, 2, 2]
    assert loader.docs_in(np.array([0, 2])) == 3 and loader.docs_in(np.array([], dtype=np.int64)) == 0


def test_val_split_loader(tmp_path):
    d = write(tmp_path, corpus(200), val_fraction=0.2)
    val = TokenLoader(d, "val", batch_size=2, seq_len=4)
    assert len(val.stream) == read_manifest(d).splits["val"]["tokens"]
    assert len(val.val_batches(3)) == 3


def test_bad_setup_is_named(tmp_path):
    d = write(tmp_path, ["ab", "cde", "f"])
    with pytest.raises(ValueError, match="split 'val' has no token shards"):
        TokenLoader(d, "val", batch_size=1, seq_len=3)
    with pytest.raises(ValueError, match="12 tokens = 3 windows"):
        TokenLoader(d, batch_size=4, seq_len=3)
    with pytest.raises(ValueError, match="rank 2"):
        TokenLoader(d, batch_size=1, seq_len=3, rank=2, world_size=2)


def test_stream_reads_across_shards(big):
    stream = TokenStream(big)
    full = np.concatenate([np.asarray(t) for t in stream.tokens]).astype(np.int64)
    assert len(stream.tokens) > 3
    edge = int(stream.offsets[2])
    assert stream.read(edge - 3, 60).tolist() == full[edge - 3 : edge + 57].tolist()
    assert stream.doc_starts(0, len(full)).tolist() == np.flatnonzero(full == BOS).tolist()
    with pytest.raises(IndexError, match="out of"):
        stream.read(len(full) - 2, 3)
