"""A process-based Dask ``LocalCluster`` on loopback, for per-shard curation steps on one machine."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def local_cluster(
    n_workers: int = 2, threads_per_worker: int = 1, memory_limit: str = "auto"
) -> Iterator[Any]:
    """A ``distributed.Client`` on a process-based ``LocalCluster`` (dashboard off); closed on exit."""
    from distributed import Client, LocalCluster

    with warnings.catch_warnings():  # its health-check HTTP server moves off a busy :8787 by itself
        warnings.filterwarnings("ignore", message="Port .* is already in use", category=UserWarning)
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            memory_limit=memory_limit,
            silence_logs=logging.ERROR,
        )
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()
