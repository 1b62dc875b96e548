"""Partition schemes and the mappings between them, shown on throwaway assets that read typed handles
through the project's IO manager: all sweep cells -> one fit; round k-1 -> round k; a missing upstream
artifact fails with its name."""

import dagster as dg
import pytest

from dagster_project.artifacts import Artifact, ArtifactIOManager
from dagster_project.home import artifact_dir
from dagster_project.partitions import (
    ALL_CELLS,
    NUM_ROUNDS,
    ROUNDS,
    SNAPSHOTS,
    SWEEP_BUDGETS,
    SWEEP_GRID,
    SWEEP_SIZES,
    previous_round,
)

GRID = dg.MultiPartitionsDefinition(  # two budgets x two sizes, the sweep's dimensions
    {
        "budget": dg.StaticPartitionsDefinition(["6e18", "1e19"]),
        "size": dg.StaticPartitionsDefinition(["40M", "125M"]),
    }
)


class Loss(Artifact):
    def value(self) -> float:
        return float((self.path / "loss").read_text())


def _write(context, text: str) -> dg.Output[Loss]:
    key = context.partition_key if context.has_partition_key else None
    out = artifact_dir(context.asset_key.to_user_string(), key)
    out.mkdir(parents=True)
    (out / "loss").write_text(text)
    return dg.Output(Loss.at(context.asset_key.to_user_string(), key), metadata={"dagster/row_count": 1})


@dg.asset(partitions_def=GRID)
def sweep_cell(context: dg.AssetExecutionContext) -> dg.Output[Loss]:
    budget, size = (
        context.partition_key.keys_by_dimension["budget"],
        context.partition_key.keys_by_dimension["size"],
    )
    return _write(context, str(float(budget) / 1e18 + {"40M": 0.5, "125M": 0.25}[size]))


@dg.asset(ins={"sweep_cell": dg.AssetIn(partition_mapping=ALL_CELLS)})
def scaling_fit(context: dg.AssetExecutionContext, sweep_cell: dict[str, Loss]) -> dg.Output[Loss]:
    return _write(context, str(sum(h.value() for h in sweep_cell.values())))


@dg.asset(partitions_def=ROUNDS)
def reward_model(context: dg.AssetExecutionContext) -> dg.Output[Loss]:
    return _write(context, context.partition_key.removeprefix("round-"))


@dg.asset(partitions_def=ROUNDS, ins={"reward_model": dg.AssetIn(partition_mapping=previous_round())})
def policy(context: dg.AssetExecutionContext, reward_model: dict[str, Loss]) -> dg.Output[Loss]:
    """Round k is trained against round k-1's reward model (round 1 against none)."""
    return _write(context, ",".join(f"{k}={h.value()}" for k, h in reward_model.items()))


def _materialize(assets, selection, instance, partition=None):
    return dg.materialize(
        assets,
        selection=selection,
        partition_key=partition,
        instance=instance,
        resources={"io_manager": ArtifactIOManager()},
    )


def test_scheme_per_domain():
    assert SNAPSHOTS.name == "crawl_snapshot"
    assert SWEEP_GRID.partitions_defs[0].name == "budget" and SWEEP_GRID.partitions_defs[1].name == "size"
    assert len(SWEEP_GRID.get_partition_keys()) == len(SWEEP_BUDGETS) * len(SWEEP_SIZES) == 80
    assert ROUNDS.get_partition_keys() == [f"round-{k}" for k in range(1, NUM_ROUNDS + 1)]
    mapping = previous_round()
    down = mapping.get_downstream_partitions_for_partitions(
        ROUNDS.subset_with_partition_keys(["round-3"]), ROUNDS, ROUNDS
    )
    assert set(down.get_partition_keys()) == {"round-4"}


def test_all_sweep_cells_feed_one_fit(home):
    instance = dg.DagsterInstance.ephemeral()
    for key in GRID.get_partition_keys():
        assert _materialize([sweep_cell], [sweep_cell], instance, key).success
    result = _materialize([sweep_cell, scaling_fit], [scaling_fit], instance)
    assert result.success
    # (6 + 10) * 2 sizes + (0.5 + 0.25) * 2 budgets
    assert (home / "data" / "scaling_fit" / "all" / "loss").read_text() == "33.5"
    assert sorted(p.name for p in (home / "data" / "sweep_cell").iterdir()) == sorted(
        ["1e19_125M", "1e19_40M", "6e18_125M", "6e18_40M"]
    )
    assert not any(p.suffix == ".pkl" or p.name == "storage" for p in home.rglob("*"))  # nothing pickled
    mat = result.asset_materializations_for_node("scaling_fit")[0]
    assert mat.metadata["dagster/row_count"].value == 1


def test_round_k_reads_round_k_minus_1(home):
    instance = dg.DagsterInstance.ephemeral()
    for k in (1, 2, 3):
        assert _materialize([reward_model], [reward_model], instance, f"round-{k}").success
    for k in (1, 2, 3):
        assert _materialize([reward_model, policy], [policy], instance, f"round-{k}").success
    read = [(home / "data" / "policy" / f"round-{k}" / "loss").read_text() for k in (1, 2, 3)]
    assert read == ["", "round-1=1.0", "round-2=2.0"]


def test_missing_upstream_is_a_failure_naming_it(home):
    instance = dg.DagsterInstance.ephemeral()
    assert _materialize([sweep_cell], [sweep_cell], instance, "6e18|40M").success
    with pytest.raises(
        dg.Failure, match="sweep_cell is missing for partition\\(s\\) 1e19\\|125M, 1e19\\|40M, 6e18\\|125M:"
    ):
        _materialize([sweep_cell, scaling_fit], [scaling_fit], instance)
