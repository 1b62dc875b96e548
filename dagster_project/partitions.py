"""One partition scheme per domain, and the mappings an asset declares to read another scheme.

* ``SNAPSHOTS`` (dynamic): crawl snapshots for data, tokens and pre-training — a date (``2026-11-23``) or
  a name (``local-web``, ``CC-MAIN-2024-10``).
* ``SWEEP`` (multi-dimensional): crawl snapshot × sweep cell. A cell is one (compute budget, model size)
  pair of the IsoFLOP grid (Llama 3 paper §3.2.1), keyed ``<budget>_<size>`` (``3e11_s16``); the cells
  are *dynamic*, registered from the sweep config's plan (``ml.scaling.plan.plan_sweep``) by whoever
  launches them (``lifecycle run``, or ``register_sweep_cells``), so a preset's grid, an added budget or
  a rerun cell are partitions of the one asset, and a backfill runs cells in parallel. The sweep reads its
  snapshot's token shards, and the fit (partitioned by snapshot) reads its snapshot's cells, through
  ``SNAPSHOT_OF_CELL`` (the ``snapshot`` dimension).
* ``DATA_VALUE`` (multi-dimensional): crawl snapshot × candidate class (dimension ``value_candidate``: the
  curated corpus's domain classes, ``ml.curate.domain.DOMAINS``), one data-value annealing run per class
  (Llama 3 paper §3.4.3), keyed ``<snapshot>|<class>`` (dimensions sort by name) and stored under
  ``<snapshot>/<class>``; it reads its snapshot's assets through ``SNAPSHOT_OF_CANDIDATE``.
* ``ROUNDS`` (static): post-training rounds (Llama 3 paper §4.1: six rounds of reward model, rejection
  sampling, SFT and DPO); round k reads round k-1 through ``previous_round()``.
"""

import warnings
from collections.abc import Callable

import dagster as dg

SNAPSHOTS = dg.DynamicPartitionsDefinition(name="crawl_snapshot")
DEFAULT_SNAPSHOT = "local-web"

SWEEP_CELLS = dg.DynamicPartitionsDefinition(name="sweep_cell")
SWEEP = dg.MultiPartitionsDefinition({"snapshot": SNAPSHOTS, "sweep_cell": SWEEP_CELLS})
# a cell <-> its snapshot: the sweep reads the snapshot's tokens, the fit reads every cell of its snapshot
with warnings.catch_warnings():  # a Dagster "beta" class; the sweep relies on it, so say it once here
    warnings.simplefilter("ignore", dg.BetaWarning)
    SNAPSHOT_OF_CELL = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="snapshot")


def sweep_partition(snapshot: str, cell: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"snapshot": snapshot, "sweep_cell": cell})


def register_sweep_cells(
    instance: dg.DagsterInstance, cells: list[str], has_artifact: Callable[[str], bool] = lambda cell: True
) -> list[str]:
    """Add the plan's cells to the ``sweep_cell`` dimension. A registered cell outside the plan stays while
    ``has_artifact(cell)`` (it was trained for some snapshot); one never trained is removed, so a fit does not
    wait for cells of an abandoned plan. Returns the removed cells."""
    new = [c for c in cells if not instance.has_dynamic_partition(SWEEP_CELLS.name, c)]
    if new:
        instance.add_dynamic_partitions(SWEEP_CELLS.name, new)
    stale = [
        c for c in instance.get_dynamic_partitions(SWEEP_CELLS.name) if c not in cells and not has_artifact(c)
    ]
    for cell in stale:
        instance.delete_dynamic_partition(SWEEP_CELLS.name, cell)
    return stale


# the domain classes of ml/curate/domain.py (DOMAINS; a test keeps them equal), written out so that every
# asset's code version (all import this module) does not depend on the domain classifier's source
CANDIDATES = dg.StaticPartitionsDefinition(["general", "code", "math_reasoning", "multilingual"])
DATA_VALUE = dg.MultiPartitionsDefinition({"snapshot": SNAPSHOTS, "value_candidate": CANDIDATES})
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)
    SNAPSHOT_OF_CANDIDATE = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="snapshot")


def data_value_partition(snapshot: str, candidate: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"snapshot": snapshot, "value_candidate": candidate})


NUM_ROUNDS = 6
ROUNDS = dg.StaticPartitionsDefinition([f"round-{k}" for k in range(1, NUM_ROUNDS + 1)])


def previous_round(rounds: dg.StaticPartitionsDefinition = ROUNDS) -> dg.StaticPartitionMapping:
    """Upstream round k-1 -> downstream round k (the first round has no upstream partition)."""
    keys = rounds.get_partition_keys()
    return dg.StaticPartitionMapping(dict(zip(keys[:-1], keys[1:], strict=True)))
