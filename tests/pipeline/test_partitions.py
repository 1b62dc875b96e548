"""Partition schemes and the mappings between them, shown on throwaway assets that read typed handles
through the project's IO manager: a snapshot's sweep cells -> its fit; a snapshot's rounds -> its rounds
table; round k-1 -> round k; a missing upstream artifact fails with its name."""

import dagster as dg
import pytest

from assets.posttrain.rounds import previous_chat_model
from dagster_project.artifacts import Artifact, ArtifactIOManager
from dagster_project.home import artifact_dir
from dagster_project.partitions import (
    CANDIDATES,
    DATA_VALUE,
    ROUND_KEYS,
    ROUNDS,
    SNAPSHOT_OF_CANDIDATE,
    SNAPSHOT_OF_CELL,
    SNAPSHOT_OF_ROUND,
    SNAPSHOTS,
    SWEEP,
    SWEEP_CELLS,
    data_value_partition,
    previous_round_partition,
    register_rounds,
    register_sweep_cells,
    round_number,
    round_partition,
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
def chat_model(context: dg.AssetExecutionContext) -> dg.Output[Loss]:
    """Round k starts from round k-1's chat model (read by partition key): its value is the previous + 1."""
    prev = previous_chat_model(context)
    return _write(context, str(1 + (float((prev.path / "loss").read_text()) if prev else 0.0)))


@dg.asset(partitions_def=SNAPSHOTS, ins={"chat_model": dg.AssetIn(partition_mapping=SNAPSHOT_OF_ROUND)})
def rounds_table(context: dg.AssetExecutionContext, chat_model: dict[str, Loss]) -> dg.Output[Loss]:
    return _write(context, ",".join(f"{k}={h.value()}" for k, h in sorted(chat_model.items())))


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
    assert [d.name for d in ROUNDS.partitions_defs] == ["snapshot", "training_round"]
    assert ROUND_KEYS.name == "posttrain_round"
    assert str(round_partition("local-web", 2)) == "local-web|round-2"
    assert previous_round_partition(round_partition("s1", 3)) == round_partition("s1", 2)
    assert previous_round_partition(round_partition("s1", 1)) is None
    assert round_number("round-12") == 12
    for bad in ("round-0", "round-x", "cell-1"):
        with pytest.raises(ValueError, match=f"'{bad}' is not a post-training round key"):
            round_number(bad)


def test_register_rounds_keeps_trained_rounds():
    instance = dg.DagsterInstance.ephemeral()
    assert register_rounds(instance, 3) == []
    assert instance.get_dynamic_partitions(ROUND_KEYS.name) == ["round-1", "round-2", "round-3"]
    # fewer rounds in the config: a round never trained goes, a trained one stays
    assert register_rounds(instance, 1, lambda key: key == "round-2") == ["round-3"]
    assert instance.get_dynamic_partitions(ROUND_KEYS.name) == ["round-1", "round-2"]


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


def test_round_k_reads_round_k_minus_1_and_the_table_reads_its_snapshots_rounds(home):
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(SNAPSHOTS.name, ["s1", "s2"])
    register_rounds(instance, 3)
    with pytest.raises(dg.Failure, match="chat_model \\(partition s1\\|round-1\\) is missing"):
        _materialize([chat_model], [chat_model], instance, round_partition("s1", 2))
    for k in (1, 2, 3):
        assert _materialize([chat_model], [chat_model], instance, round_partition("s1", k)).success
    assert _materialize([chat_model], [chat_model], instance, round_partition("s2", 1)).success
    read = [(home / "data" / "chat_model" / "s1" / f"round-{k}" / "loss").read_text() for k in (1, 2, 3)]
    assert read == ["1.0", "2.0", "3.0"]
    assert _materialize([chat_model, rounds_table], [rounds_table], instance, "s1").success
    assert (home / "data" / "rounds_table" / "s1" / "loss").read_text() == (
        "s1|round-1=1.0,s1|round-2=2.0,s1|round-3=3.0"  # s2's round is not read
    )


def test_missing_upstream_is_a_failure_naming_it(home):
    instance = _sweep_instance()
    assert _materialize([sweep_cell], [sweep_cell], instance, sweep_partition("s2", "1e11_a")).success
    with pytest.raises(
        dg.Failure, match="sweep_cell is missing for partition\\(s\\) s2\\|1e11_b, s2\\|2e11_a:"
    ):
        _materialize([sweep_cell, scaling_fit], [scaling_fit], instance, "s2")
