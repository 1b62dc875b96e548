"""ml/model/loss.py: the chunked fused linear + cross-entropy against F.cross_entropy."""

import torch
import torch.nn.functional as F

from ml.model.loss import IGNORE_INDEX, linear_cross_entropy

torch.set_num_threads(1)


def test_linear_cross_entropy_no_grad_and_all_ignored():
    h, w = torch.randn(10, 8), torch.randn(30, 8)
    y = torch.randint(0, 30, (10,))
    with torch.no_grad():
        assert torch.allclose(
            linear_cross_entropy(h, w, y, chunk=3), F.cross_entropy(h @ w.t(), y), atol=1e-6
        )
    assert torch.isnan(linear_cross_entropy(h, w, torch.full((10,), -100), chunk=4))


def test_linear_cross_entropy_grads_equal_plain_cross_entropy():
    g = torch.Generator().manual_seed(0)
    h, w = (
        torch.randn(11, 8, generator=g, requires_grad=True),
        torch.randn(30, 8, generator=g, requires_grad=True),
    )
    y = torch.randint(0, 30, (11,), generator=g)
    y[:4] = IGNORE_INDEX
    loss = linear_cross_entropy(h, w, y, chunk=4)  # chunks of 4, 4, 3 rows
    gh, gw = torch.autograd.grad(2 * loss, (h, w))
    ref = F.cross_entropy(h @ w.t(), y, ignore_index=IGNORE_INDEX)
    rh, rw = torch.autograd.grad(2 * ref, (h, w))
    assert abs(loss.item() - ref.item()) <= 1e-6
    assert torch.allclose(gh, rh, atol=1e-6) and torch.allclose(gw, rw, atol=1e-6)
    assert gh[:4].abs().max().item() == 0.0  # ignored rows get no gradient


def test_ignored_rows_give_exactly_the_gradients_of_a_masked_softmax():
    """Zeroing ignored rows in the (c, D) operands gives the same bits as zeroing them in the (c, V) softmax."""
    g = torch.Generator().manual_seed(1)
    h, w = torch.randn(9, 8, generator=g), torch.randn(30, 8, generator=g)
    y = torch.randint(0, 30, (9,), generator=g)
    y[[0, 4, 8]] = IGNORE_INDEX
    hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_()
    gh, gw = torch.autograd.grad(linear_cross_entropy(hh, ww, y, chunk=9), (hh, ww))
    logits = h @ w.t()
    valid = y != IGNORE_INDEX
    soft = (logits - torch.logsumexp(logits, dim=-1, keepdim=True)).exp()
    soft.scatter_add_(1, torch.where(valid, y, 0)[:, None], torch.full((9, 1), -1.0))
    soft.masked_fill_(~valid[:, None], 0.0)
    n = valid.sum()
    assert torch.equal(gh, (soft @ w) * (1 / n)) and torch.equal(gw, (soft.t() @ h) * (1 / n))
    assert gh[[0, 4, 8]].abs().max().item() == 0.0
