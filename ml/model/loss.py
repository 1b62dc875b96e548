"""Fused linear + cross-entropy: the (N, V) logits exist one chunk of rows at a time, forward and backward.

The loss is the mean over targets != IGNORE_INDEX. The forward computes each chunk's loss and its gradients
at once, so nothing of size (N, V) is kept for the backward, which only scales the stored gradients.
"""

from __future__ import annotations

import torch

from ml.model.compiled import compiled

IGNORE_INDEX = -100


def chunk_loss(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor):
    """(logits (c, V) fp32, logsumexp (c,), valid rows (c,), targets with ignored rows at 0 (c,), loss sum)."""
    logits = (h @ w.t()).float()  # (c, V)
    lse = torch.logsumexp(logits, dim=-1)  # (c,)
    valid = y != IGNORE_INDEX  # (c,)
    y0 = torch.where(valid, y, torch.zeros_like(y))
    target = logits.gather(1, y0[:, None]).squeeze(1)  # (c,)
    return logits, lse, valid, y0, torch.where(valid, lse - target, torch.zeros_like(lse)).sum()


def softmax_minus_onehot_(logits: torch.Tensor, lse: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
    """softmax - onehot, in place in the logits' buffer: no second (c, V) tensor, no (c, V) one-hot."""
    g = logits.sub_(lse[:, None]).exp_()  # softmax (c, V)
    return g.scatter_add_(1, y0[:, None], torch.full_like(lse[:, None], -1.0))


def _ce_chunk(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor, with_grad: bool):
    """Loss sum of one chunk and, if asked, d(loss sum)/dh and /dw. h (c, D), w (V, D), y (c,)."""
    logits, lse, valid, y0, loss_sum = chunk_loss(h, w, y)
    if not with_grad:
        return loss_sum, None, None
    g = softmax_minus_onehot_(logits, lse, y0).to(h.dtype)  # (c, V)
    # ignored rows get no gradient: zeroed in the (c, D) operand and result, not in the (c, V) softmax
    # (a (c, V) masked_fill costs ~3% of a tiny CPU run; the values are the same: those terms are exact zeros)
    keep = valid[:, None].to(h.dtype)  # (c, 1)
    return loss_sum, (g @ w) * keep, (g.t() @ (h * keep)).float()  # (), (c, D), (V, D) fp32


def _ce_chunk_fn(device: torch.device):
    return compiled(_ce_chunk, dynamic=False) if device.type == "cuda" else _ce_chunk


class LinearCrossEntropy(torch.autograd.Function):
    """mean CE(h @ w.T, y) over non-ignored rows; gradients computed chunk by chunk in forward."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, w: torch.Tensor, y: torch.Tensor, chunk: int) -> torch.Tensor:
        fn = _ce_chunk_fn(h.device)
        with_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        n_valid = (y != IGNORE_INDEX).sum()
        loss = torch.zeros((), dtype=torch.float32, device=h.device)
        grad_h = torch.empty_like(h) if with_grad else None
        grad_w = torch.zeros(w.shape, dtype=torch.float32, device=w.device) if with_grad else None
        for s in range(0, h.shape[0], chunk):
            loss_c, gh, gw = fn(h[s : s + chunk], w, y[s : s + chunk], with_grad)
            loss = loss + loss_c
            if with_grad:
                grad_h[s : s + chunk] = gh
                grad_w += gw
        mean = loss / n_valid  # 0 valid targets -> nan, as F.cross_entropy
        if with_grad:
            ctx.save_for_backward(grad_h, grad_w.to(w.dtype), n_valid)
        return mean

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_h, grad_w, n_valid = ctx.saved_tensors
        scale = grad_out / n_valid
        return (grad_h * scale.to(grad_h.dtype), grad_w * scale.to(grad_w.dtype), None, None)


def linear_cross_entropy(
    h: torch.Tensor, w: torch.Tensor, labels: torch.Tensor, chunk: int = 8192
) -> torch.Tensor:
    """Mean cross-entropy of logits h @ w.T (N, V) against labels (N,), ignoring -100, in row chunks.

    Under autocast both operands are cast to the autocast dtype first, as nn.Linear would be.
    """
    dev = h.device.type
    if torch.is_autocast_enabled(dev):
        dtype = torch.get_autocast_dtype(dev)
        h, w = h.to(dtype), w.to(dtype)
    with torch.autocast(dev, enabled=False):
        return LinearCrossEntropy.apply(h, w, labels, chunk)
