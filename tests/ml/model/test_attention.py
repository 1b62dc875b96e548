"""ml/model/attention.py: dense and block document masks, backend selection, the attention call."""

import pytest
import torch
import torch.nn.functional as F

from ml.model import attention, flex_tuning
from ml.model.attention import (
    PackedDocs,
    attend,
    attention_mask,
    doc_block_mask,
    doc_block_mask_evaluated,
    doc_mask_dense,
    doc_range_blocks,
    packed_docs,
)
from ml.model.compiled import _COMPILED, compiled
from ml.model.flex_tuning import set_flex_settings

torch.set_num_threads(1)


def test_dense_mask_is_causal_within_documents():
    doc = torch.tensor([[0, 0, 0, 1, 1, 2]])
    m = doc_mask_dense(doc)[0, 0].int().tolist()
    assert m[4] == [0, 0, 0, 1, 1, 0]  # token 4 sees doc 1 tokens 3..4 only
    assert m[5] == [0, 0, 0, 0, 0, 1]
    assert m[2] == [1, 1, 1, 0, 0, 0]


def test_packed_docs_offsets():
    docs = packed_docs(torch.tensor([[0, 0, 1, 1, 1], [4, 5, 5, 5, 5]]))
    assert docs.cu_seqlens.tolist() == [0, 2, 5, 6, 10] and docs.cu_seqlens.dtype == torch.int32
    assert docs.max_len == 5


def test_backend_selection_on_cpu():
    doc = torch.tensor([[0] * 100 + [1] * 156])
    assert attention_mask(None, "flex", 64, torch.float32) is None  # plain causal
    for backend in ("auto", "sdpa", "varlen"):  # varlen is CUDA only; auto picks flex on CUDA only
        mask = attention_mask(doc, backend, 64, torch.float32)
        assert isinstance(mask, torch.Tensor) and mask.shape == (1, 1, 256, 256)
    assert attention_mask(doc, "flex", 64, torch.float32).BLOCK_SIZE == (128, 128)
    set_flex_settings({"mask_block_size": 64})
    try:
        assert attention_mask(doc, "flex", 64, torch.float32).BLOCK_SIZE == (64, 64)
    finally:
        set_flex_settings(None)


def test_attend_equals_sdpa_on_heads_first_layout():
    """attend takes (B, T, n, Hd) and shares each KV head across H/K query heads, causal or masked."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(2, 10, 4, 8, generator=g),
        torch.randn(2, 10, 2, 8, generator=g),
        torch.randn(2, 10, 2, 8, generator=g),
    )
    qh, kh, vh = (
        q.transpose(1, 2),
        k.repeat_interleave(2, 2).transpose(1, 2),
        v.repeat_interleave(2, 2).transpose(1, 2),
    )
    want = F.scaled_dot_product_attention(qh, kh, vh, is_causal=True).transpose(1, 2)
    assert torch.allclose(attend(q, k, v, None), want, atol=1e-6)
    doc = torch.tensor([[0] * 4 + [1] * 6, [0] * 10])
    masked = attend(q, k, v, doc_mask_dense(doc))
    assert torch.allclose(masked[1], want[1], atol=1e-6)  # one document: plain causal
    alone = attend(q[:1, 4:], k[:1, 4:], v[:1, 4:], None)
    assert torch.allclose(masked[:1, 4:], alone, atol=1e-6)  # doc 1 sees only itself
    assert not isinstance(doc_mask_dense(doc), PackedDocs)


def test_eager_flex_with_a_small_mask_holds_the_offer(monkeypatch):
    """Eager callers get flex_attention compiled by this module; with a mask tile under 128 its backward
    needs the offered configs, so the first such call opens the module's offer (a 128 mask does not)."""
    monkeypatch.setattr(attention, "compiled", lambda fn, **kw: lambda *a, **k: "ran")
    q = k = v = torch.zeros(1, 1, 256, 8)
    doc = torch.zeros(1, 256, dtype=torch.long)
    try:
        assert attention._flex(q, k, v, doc_block_mask(doc, 128)) == "ran"
        assert not attention._EAGER_FLEX_OFFER.is_open and flex_tuning._open_offers == 0
        assert attention._flex(q, k, v, doc_block_mask(doc, 64)) == "ran"
        assert attention._EAGER_FLEX_OFFER.is_open and flex_tuning._open_offers == 1
    finally:
        attention._EAGER_FLEX_OFFER.release()
    assert flex_tuning._open_offers == 0


def test_doc_block_mask_block_size():
    doc_ids = torch.tensor([[0] * 100 + [1] * 156])
    assert doc_block_mask(doc_ids).BLOCK_SIZE == (128, 128)
    small = doc_block_mask(doc_ids, 64)
    assert small.BLOCK_SIZE == (64, 64)
    assert small.kv_num_blocks.shape == (1, 1, 4)


_BLOCK_MASK_FIELDS = (
    "kv_num_blocks",
    "kv_indices",
    "full_kv_num_blocks",
    "full_kv_indices",
    "q_num_blocks",
    "q_indices",
    "full_q_num_blocks",
    "full_q_indices",
)


def _packed_doc_ids(lengths_per_row: list[list[int]]) -> torch.Tensor:
    return torch.tensor([[d for d, n in enumerate(row) for _ in range(n)] for row in lengths_per_row])


@pytest.mark.parametrize("block", [128, 64, 16])
def test_doc_block_mask_from_document_ranges_equals_torch_evaluating_every_pair(block):
    """Packed rows: the per-block id-range construction gives torch's create_block_mask exactly."""
    gen = torch.Generator().manual_seed(0)
    rows = [[256], [1] * 256, [200, 56], [128, 128], [127, 2, 127]]  # one doc, all 1-token docs, edges
    for _ in range(3):
        lengths = (torch.rand(40, generator=gen) * 30).long().clamp(min=1).tolist()
        rows.append(lengths)
    rows = [r if sum(r) >= 256 else r + [256 - sum(r)] for r in rows]
    doc_ids = torch.stack([_packed_doc_ids([r])[0, :256] for r in rows])
    ours, torchs = doc_block_mask(doc_ids, block), doc_block_mask_evaluated(doc_ids, block)
    for field in _BLOCK_MASK_FIELDS:
        assert torch.equal(getattr(ours, field), getattr(torchs, field)), field
    # rows [128, 128] at block 128: query block 1 sees key block 0 not at all, itself partially
    if block == 128:
        assert ours.kv_num_blocks[3, 0].tolist() == [1, 1] and ours.full_kv_num_blocks[3, 0].tolist() == [
            0,
            0,
        ]
        assert ours.full_kv_num_blocks[0, 0].tolist() == [0, 1]  # one doc: block (1, 0) is full


def test_doc_block_mask_never_skips_an_allowed_pair_for_unsorted_ids():
    """Ids out of order (not packed rows): full blocks are truly full, every allowed pair is visited."""
    doc_ids = torch.tensor([[0, 1] * 64 + [2] * 64 + [1] * 64, [3] * 96 + [0] * 32 + [3] * 128])
    block = 32
    partial, full = doc_range_blocks(doc_ids, block)
    allowed = doc_mask_dense(doc_ids)[:, 0]  # (B, T, T)
    n = doc_ids.shape[1] // block
    tiles = allowed.view(2, n, block, n, block).transpose(2, 3)  # (B, n, n, block, block)
    truly_full, non_empty = tiles.all(-1).all(-1), tiles.any(-1).any(-1)
    assert not (full[:, 0] & ~truly_full).any()
    assert not (non_empty & ~(partial[:, 0] | full[:, 0])).any()
    assert full[1, 0, 7, 4] and not full[1, 0, 4, 3]  # doc 3 both sides vs a block holding doc 0


def test_compiled_wrappers_are_made_outside_traces_only():
    """A compile wrapper asked for while dynamo traces is the plain function, and is not kept for eager calls."""

    def plus_one(x):
        return x + 1

    @torch.compile(backend="eager", fullgraph=True)
    def outer(x):
        return compiled(plus_one)(x) * (2 if compiled(plus_one) is plus_one else 3)

    assert outer(torch.ones(2)).tolist() == [4.0, 4.0]
    assert plus_one not in _COMPILED
    eager = compiled(plus_one)
    assert eager is not plus_one and compiled(plus_one) is eager
    _COMPILED.pop(plus_one)
