"""One partition scheme per domain, and the mappings an asset declares to read another scheme.

* ``SNAPSHOTS`` (dynamic): crawl snapshots for data, tokens and pre-training — a date (``2026-11-23``) or
  a name (``local-web``, ``CC-MAIN-2024-10``).
* ``SWEEP_GRID`` (multi-dimensional, static): the scaling sweep's compute budget × model size cells
  (Llama 3 paper §3.2.1: budgets 6e18 to 1e22 FLOPs, models 40M to 16B parameters); a fit reads every
  cell through ``ALL_CELLS``.
* ``ROUNDS`` (static): post-training rounds (Llama 3 paper §4.1: six rounds of reward model, rejection
  sampling, SFT and DPO); round k reads round k-1 through ``previous_round()``.
"""

import dagster as dg

SNAPSHOTS = dg.DynamicPartitionsDefinition(name="crawl_snapshot")
DEFAULT_SNAPSHOT = "local-web"

SWEEP_BUDGETS = ("6e18", "1e19", "3e19", "6e19", "1e20", "3e20", "6e20", "1e21", "3e21", "1e22")
SWEEP_SIZES = ("40M", "125M", "350M", "760M", "1.3B", "2.7B", "6.7B", "16B")
SWEEP_GRID = dg.MultiPartitionsDefinition(
    {
        "budget": dg.StaticPartitionsDefinition(list(SWEEP_BUDGETS)),
        "size": dg.StaticPartitionsDefinition(list(SWEEP_SIZES)),
    }
)
# every sweep cell -> the one (unpartitioned) fit
ALL_CELLS = dg.AllPartitionMapping()

NUM_ROUNDS = 6
ROUNDS = dg.StaticPartitionsDefinition([f"round-{k}" for k in range(1, NUM_ROUNDS + 1)])


def previous_round(rounds: dg.StaticPartitionsDefinition = ROUNDS) -> dg.StaticPartitionMapping:
    """Upstream round k-1 -> downstream round k (the first round has no upstream partition)."""
    keys = rounds.get_partition_keys()
    return dg.StaticPartitionMapping(dict(zip(keys[:-1], keys[1:], strict=True)))
