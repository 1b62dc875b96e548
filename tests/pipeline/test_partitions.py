"""Partition schemes and the mappings between them, shown on throwaway assets that read typed handles
through the project's IO manager: a snapshot's sweep cells -> its fit; round k-1 -> round k; a missing
upstream artifact fails with its name."""

import dagster as dg
import pytest

from dagster_project.artifacts import Artifact, ArtifactIOManager
from dagster_project.home import artifact_dir
from dagster_project.partitions import (
    CANDIDATES,
    DATA_VALUE,
    NUM_ROUNDS,
    ROUNDS,
    SNAPSHOT_OF_CANDIDATE,
    SNAPSHOT_OF_CELL,
    SNAPSHOTS,
    SWEEP,
    SWEEP_CELLS,
    data_value_partition,
    previous_round,
    register_sweep_cells,
    sweep_partition,
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


@dg.asset(partitions_def=SWEEP)
def sweep_cell(context: dg.AssetExecutionContext) -> dg.Output[Loss]:
    budget, size = context.partition_key.keys_by_dimension["sweep_cell"].split("_")
    return _write(context, str(float(budget) / 1e11 + {"a": 0.5, "b": 0.25}[size]))


@dg.asset(partitions_def=SNAPSHOTS, ins={"sweep_cell": dg.AssetIn(partition_mapping=SNAPSHOT_OF_CELL)})
def scaling_fit(context: dg.AssetExecutionContext, sweep_cell: dict[str, Loss]) -> dg.Output[Loss]:
    return _write(context, ",".join(f"{k}={h.value()}" for k, h in sorted(sweep_cell.items())))


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
    assert SNAPSHOTS.name == "crawl_snapshot" and SWEEP_CELLS.name == "sweep_cell"
    assert [d.name for d in SWEEP.partitions_defs] == ["snapshot", "sweep_cell"]
    assert str(sweep_partition("local-web", "3e11_s16")) == "local-web|3e11_s16"
    assert ROUNDS.get_partition_keys() == [f"round-{k}" for k in range(1, NUM_ROUNDS + 1)]
    mapping = previous_round()
    down = mapping.get_downstream_partitions_for_partitions(
        ROUNDS.subset_with_partition_keys(["round-3"]), ROUNDS, ROUNDS
    )
    assert set(down.get_partition_keys()) == {"round-4"}


def test_data_value_candidates_are_the_domain_classes():
    from ml.curate.domain import DOMAINS

    assert CANDIDATES.get_partition_keys() == list(DOMAINS)
    assert [d.name for d in DATA_VALUE.partitions_defs] == ["snapshot", "value_candidate"]
    assert str(data_value_partition("local-web", "code")) == "local-web|code"  # stored in local-web/code
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(SNAPSHOTS.name, ["s1", "s2"])
    up = SNAPSHOT_OF_CANDIDATE.get_upstream_mapped_partitions_result_for_partitions(
        DATA_VALUE.subset_with_partition_keys([data_value_partition("s2", "math_reasoning")]),
        DATA_VALUE,
        SNAPSHOTS,
        dynamic_partitions_store=instance,
    )
    assert set(up.partitions_subset.get_partition_keys()) == {"s2"}


def _sweep_instance() -> dg.DagsterInstance:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(SNAPSHOTS.name, ["s1", "s2"])
    register_sweep_cells(instance, ["1e11_a", "1e11_b"])
    register_sweep_cells(instance, ["1e11_a", "2e11_a"])  # adding a cell keeps the others (trained ones)
    assert instance.get_dynamic_partitions(SWEEP_CELLS.name) == ["1e11_a", "1e11_b", "2e11_a"]
    # a cell outside the plan that was never trained is removed; the rest stay
    assert register_sweep_cells(instance, ["1e11_a", "2e11_a"], lambda cell: cell != "1e11_b") == ["1e11_b"]
    register_sweep_cells(instance, ["1e11_a", "1e11_b", "2e11_a"])
    return instance


def test_a_snapshots_cells_feed_its_fit(home):
    instance = _sweep_instance()
    for snapshot, cell in [("s1", "1e11_a"), ("s1", "1e11_b"), ("s1", "2e11_a"), ("s2", "1e11_a")]:
        assert _materialize([sweep_cell], [sweep_cell], instance, sweep_partition(snapshot, cell)).success
    result = _materialize([sweep_cell, scaling_fit], [scaling_fit], instance, "s1")
    assert result.success
    assert (home / "data" / "scaling_fit" / "s1" / "loss").read_text() == (
        "s1|1e11_a=1.5,s1|1e11_b=1.25,s1|2e11_a=2.5"  # s2's cell is not read
    )
    # one directory per snapshot, a directory per cell in it
    assert sorted(p.name for p in (home / "data" / "sweep_cell").iterdir()) == ["s1", "s2"]
    assert sorted(p.name for p in (home / "data" / "sweep_cell" / "s1").iterdir()) == [
        "1e11_a",
        "1e11_b",
        "2e11_a",
    ]
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
    instance = _sweep_instance()
    assert _materialize([sweep_cell], [sweep_cell], instance, sweep_partition("s2", "1e11_a")).success
    with pytest.raises(
        dg.Failure, match="sweep_cell is missing for partition\\(s\\) s2\\|1e11_b, s2\\|2e11_a:"
    ):
        _materialize([sweep_cell, scaling_fit], [scaling_fit], instance, "s2")
