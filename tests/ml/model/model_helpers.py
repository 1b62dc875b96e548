"""Helpers shared by the model tests (a uniquely named module, as tests/ml/train/train_helpers.py)."""

import pytest
import torch

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def random_docs(B: int, T: int, seed: int) -> torch.Tensor:
    """(B, T) document ids: each row packs documents of random lengths in [1, T/2)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(B):
        ids, d = [], 0
        while len(ids) < T:
            ids += [d] * int(torch.randint(1, T // 2, (1,), generator=g))
            d += 1
        rows.append(ids[:T])
    return torch.tensor(rows)
