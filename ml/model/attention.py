"""Causal self-attention within documents: the mask backends and the choice between them.

A (B, T) ``doc_ids`` row lets a token attend only to earlier tokens of the same document. Backends, picked by
``ModelConfig.attention`` ("auto" is flex for document masks on CUDA, else SDPA):

* no ``doc_ids``: SDPA's causal path;
* "sdpa": a dense boolean (B, 1, T, T) mask for SDPA (CPU, and the reference on GPU);
* "flex": a FlexAttention block mask, built from each block's document-id range (``doc_block_mask``), with
  the tile settings of ``ml.model.flex_tuning``;
* "varlen" (CUDA): documents packed as B*T tokens for torch's varlen FlashAttention (``packed_docs``).

``attention_mask`` builds the mask once per batch; ``attend`` runs attention with it in every layer.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from ml.model.compiled import compiled
from ml.model.flex_tuning import FlexConfigOffer, flex_settings, split_flex_settings

try:  # FlexAttention: CUDA document masking; optional so the CPU path never needs it
    from torch.nn.attention.flex_attention import (
        BlockMask,
        _create_sparse_block_from_block_mask,
        create_block_mask,
        flex_attention,
    )
except ImportError:  # pragma: no cover - torch < 2.5
    BlockMask = create_block_mask = flex_attention = _create_sparse_block_from_block_mask = None

BACKENDS = ("auto", "sdpa", "flex", "varlen")


def doc_mask_dense(doc_ids: torch.Tensor) -> torch.Tensor:
    """Boolean SDPA mask (B, 1, T, T): True where query t may attend key s (s <= t, same document)."""
    T = doc_ids.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=doc_ids.device).tril()
    same_doc = doc_ids[:, :, None] == doc_ids[:, None, :]  # (B, T, T)
    return (same_doc & causal)[:, None]


# ---------------------------------------------------------------------------------------------------------
# Packed documents for varlen FlashAttention


@dataclasses.dataclass(frozen=True)
class PackedDocs:
    """Document boundaries of a (B, T) batch flattened to B*T tokens, for varlen FlashAttention.

    ``cu_seqlens`` (N+1,) int32: start offset of each document (a row start is always a start) then B*T;
    ``max_len``: an upper bound on document length (T), constant so compiled graphs are not re-traced.
    """

    cu_seqlens: torch.Tensor
    max_len: int


def packed_docs(doc_ids: torch.Tensor) -> PackedDocs:
    B, T = doc_ids.shape
    starts = torch.ones_like(doc_ids, dtype=torch.bool)
    starts[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    offsets = starts.flatten().nonzero().flatten()  # (N,) document starts in the flat B*T stream
    end = torch.tensor([B * T], device=doc_ids.device, dtype=offsets.dtype)
    return PackedDocs(torch.cat([offsets, end]).to(torch.int32), T)


def _varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, docs: PackedDocs) -> torch.Tensor:
    """Causal attention within documents on (B*T, H|K, Hd) tensors via torch's varlen FlashAttention."""
    from torch.nn.attention.varlen import varlen_attn

    cu, n = docs.cu_seqlens, docs.max_len
    if k.shape[1] != q.shape[1]:  # GQA: share each KV head across its group of query heads
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    return varlen_attn(q, k, v, cu, cu, n, n, window_size=(-1, 0))  # (B*T, H, Hd), (-1, 0) = causal


# ---------------------------------------------------------------------------------------------------------
# FlexAttention block masks


def doc_block_mask(doc_ids: torch.Tensor, block_size: int = 128) -> BlockMask:
    """FlexAttention block mask for causal attention within documents; built once per batch.

    ``block_size`` is the mask's tile (query and key tokens per block; torch's default 128). When T is a
    multiple of it, the block structure comes from each block's smallest and largest document id
    (``doc_range_blocks``: O(B (T/block)^2) work) instead of evaluating the mask at all T^2 token pairs as
    ``create_block_mask`` does; the token-level mask inside partial blocks is the same ``mask_mod``.
    """
    if create_block_mask is None:
        raise RuntimeError("FlexAttention needs torch >= 2.5 (torch.nn.attention.flex_attention)")
    T = doc_ids.shape[1]
    if T % block_size:  # a ragged last block: let torch evaluate the mask token by token
        return doc_block_mask_evaluated(doc_ids, block_size)
    # on CUDA compiled (0.07 ms at B16 x T2048 on an H100; eager launches ~30 small kernels, 2.2 ms)
    build = compiled(_doc_range_block_mask) if doc_ids.is_cuda else _doc_range_block_mask
    return build(doc_ids, block_size)


def _doc_range_block_mask(doc_ids: torch.Tensor, block_size: int) -> BlockMask:
    T = doc_ids.shape[1]
    partial, full = doc_range_blocks(doc_ids, block_size)
    return _create_sparse_block_from_block_mask(
        (partial, full), _doc_mask_mod(doc_ids), (T, T), block_size, block_size
    )


def _doc_mask_mod(doc_ids: torch.Tensor):
    """FlexAttention mask_mod: query q may attend key kv of row b when kv <= q in the same document."""

    def mask_mod(b, h, q, kv):
        return (q >= kv) & (doc_ids[b, q] == doc_ids[b, kv])

    return mask_mod


def doc_range_blocks(doc_ids: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(partial, full) block masks (B, 1, T/block, T/block), bool, of the causal document mask.

    With lo/hi each block's smallest/largest document id, query block i and key block j <= i are
    * full when both blocks hold one and the same document and j < i (every pair is allowed);
    * partial (mask_mod decides per token) otherwise when the id ranges overlap: the diagonal always,
      and for packed rows (ids non-decreasing) exactly the blocks holding a pair of the same document.
    For ids in any order, overlap is necessary for a shared document, so no allowed pair is ever skipped.
    """
    B, T = doc_ids.shape
    n = T // block_size
    blocks = doc_ids.view(B, n, block_size)
    lo, hi = blocks.amin(dim=-1), blocks.amax(dim=-1)  # (B, n)
    idx = torch.arange(n, device=doc_ids.device)
    causal = idx[:, None] >= idx[None, :]  # (n, n): query block i, key block j
    before = idx[:, None] > idx[None, :]
    overlap = (hi[:, None, :] >= lo[:, :, None]) & (lo[:, None, :] <= hi[:, :, None])  # (B, n, n)
    one_doc = lo == hi
    full = before & one_doc[:, :, None] & one_doc[:, None, :] & (lo[:, :, None] == lo[:, None, :])
    partial = causal & overlap & ~full
    return partial[:, None], full[:, None]


def doc_block_mask_evaluated(doc_ids: torch.Tensor, block_size: int = 128) -> BlockMask:
    """The same block mask built by torch's ``create_block_mask`` (the mask evaluated at every token pair)."""
    B, T = doc_ids.shape
    build = compiled(create_block_mask) if doc_ids.is_cuda else create_block_mask
    return build(_doc_mask_mod(doc_ids), B, None, T, T, device=doc_ids.device, BLOCK_SIZE=block_size)


# The eager path's compiled flex_attention lives as long as the process and may compile its backward at any
# later call, so it holds the backward-config offer for as long (opened at its first small-mask call).
_EAGER_FLEX_OFFER = FlexConfigOffer()


def _flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: BlockMask) -> torch.Tensor:
    """FlexAttention on (B, H|K, T, Hd) with the tuned kernel options; compiled (only fast that way)."""
    _, options = split_flex_settings(flex_settings(q.device, q.shape[-1], q.dtype))
    if not torch.compiler.is_compiling() and block_mask.BLOCK_SIZE[0] < 128:
        _EAGER_FLEX_OFFER.open()  # inside a compiled caller, its compile holds the offer
    return compiled(flex_attention, dynamic=False)(
        q, k, v, block_mask=block_mask, enable_gqa=True, kernel_options=options or None
    )


# ---------------------------------------------------------------------------------------------------------
# Backend selection and the attention call


def attention_mask(
    doc_ids: torch.Tensor | None, backend: str, head_dim: int, param_dtype: torch.dtype
) -> torch.Tensor | BlockMask | PackedDocs | None:
    """The mask object of ``backend`` for a (B, T) batch of document ids; None (plain causal) without ids."""
    if doc_ids is None:
        return None
    if backend == "varlen" and doc_ids.is_cuda:
        return packed_docs(doc_ids)
    if not (backend == "flex" or (backend == "auto" and doc_ids.is_cuda)):
        return doc_mask_dense(doc_ids)
    dev = doc_ids.device.type
    dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else param_dtype
    block, _ = split_flex_settings(flex_settings(doc_ids.device, head_dim, dtype))
    return doc_block_mask(doc_ids, block)


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | BlockMask | PackedDocs | None
) -> torch.Tensor:
    """Causal attention of q (B, T, H, Hd) over k, v (B, T, K, Hd), K dividing H -> (B, T, H, Hd)."""
    B, T, H, Hd = q.shape
    if isinstance(mask, PackedDocs):
        y = _varlen(q.flatten(0, 1), k.flatten(0, 1), v.reshape(B * T, -1, Hd), mask)  # (B*T, H, Hd)
        return y.view(B, T, H, Hd)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H|K, T, Hd)
    if BlockMask is not None and isinstance(mask, BlockMask):
        y = _flex(q, k, v, mask)
    elif mask is None:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    else:  # dense boolean document mask (B, 1, T, T)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    return y.transpose(1, 2)  # (B, T, H, Hd)
