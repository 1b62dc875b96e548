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
* ``ROUNDS`` (multi-dimensional): crawl snapshot × post-training round (Llama 3 paper §4.1: six rounds of
  reward model, rejection sampling, SFT and DPO), keyed ``round-<k>``. Rounds are *dynamic* like sweep
  cells: ``lifecycle run`` registers rounds 1..n of the rounds config (``register_rounds``; tiny 2). A round
  reads its snapshot's base model and synthetic data, and the rounds table (partitioned by snapshot) reads
  every round of its snapshot, through ``SNAPSHOT_OF_ROUND``. Round k starts from round k-1's chat model:
  that edge runs from the last asset of a round to the first of the next, a cycle in the asset graph
  Dagster cannot declare, so a round reads it by partition key (``previous_round_partition``) and records
  it among its inputs; ``lifecycle run`` runs the rounds one after another.
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


ROUND_KEYS = dg.DynamicPartitionsDefinition(name="posttrain_round")
# the dimension names sort "snapshot" first, so a key reads "local-web|round-1" (a directory per snapshot)
ROUNDS = dg.MultiPartitionsDefinition({"snapshot": SNAPSHOTS, "training_round": ROUND_KEYS})
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)
    SNAPSHOT_OF_ROUND = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="snapshot")


def round_key(k: int) -> str:
    if k < 1:
        raise ValueError(f"post-training rounds count from 1, got {k}")
    return f"round-{k}"


def round_number(key: str) -> int:
    """``round-3`` -> 3; a ValueError naming a key that is not a round."""
    number = key.removeprefix("round-")
    if not key.startswith("round-") or not number.isdigit() or int(number) < 1:
        raise ValueError(f"{key!r} is not a post-training round key (round-<k>, k >= 1)")
    return int(number)


def round_partition(snapshot: str, k: int) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"snapshot": snapshot, "training_round": round_key(k)})


def previous_round_partition(key: dg.MultiPartitionKey) -> dg.MultiPartitionKey | None:
    """Round k-1 of the same snapshot (None for round 1, which starts from the base model)."""
    dims = key.keys_by_dimension
    k = round_number(dims["training_round"])
    return round_partition(dims["snapshot"], k - 1) if k > 1 else None


def register_rounds(
    instance: dg.DagsterInstance, n: int, has_artifact: Callable[[str], bool] = lambda key: True
) -> list[str]:
    """Register rounds 1..n; a registered round beyond n stays while ``has_artifact(key)`` (it was trained
    for some snapshot), one never trained is removed. Returns the removed keys."""
    keys = [round_key(k) for k in range(1, n + 1)]
    new = [k for k in keys if not instance.has_dynamic_partition(ROUND_KEYS.name, k)]
    if new:
        instance.add_dynamic_partitions(ROUND_KEYS.name, new)
    stale = [
        k for k in instance.get_dynamic_partitions(ROUND_KEYS.name) if k not in keys and not has_artifact(k)
    ]
    for key in stale:
        instance.delete_dynamic_partition(ROUND_KEYS.name, key)
    return stale
