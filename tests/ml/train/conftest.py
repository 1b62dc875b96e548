"""Fixtures for the training-engine tests; shared constants and helpers live in train_helpers.py
(a uniquely named module: ``from conftest import`` would clash with other conftest.py files)."""

from pathlib import Path

import pytest
import torch
from train_helpers import write_synthetic_shards


@pytest.fixture(scope="session")
def token_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_shards(tmp_path_factory.mktemp("shards"))


@pytest.fixture
def _one_thread():
    """torch on one thread for the test; the thread count restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
