"""Jobs built from the discovered stages. A Dagster job has one partition scheme, so:

* ``lifecycle``: every asset partitioned by crawl snapshot, for one snapshot, in dependency order;
* ``sweep_cells``: the scaling sweep (snapshot × sweep cell), one cell per run — a backfill runs cells in
  parallel;
* ``posttrain_round``: the post-training assets (snapshot × round), one round per run; round k needs round
  k-1's chat model, so rounds run one after another;
* ``data_value_candidates``: the data-value annealing experiment (snapshot × candidate class), one class
  per run;
* ``lifecycle run`` (dagster_project/cli.py) runs them in order: the snapshot assets up to the sweep, the
  sweep's cells, the snapshot assets after it, the rounds, the snapshot assets after the rounds, every
  candidate class;
* one ``<domain>_pipeline`` job per domain group (its snapshot-partitioned assets).
"""

from __future__ import annotations

import dagster as dg

from dagster_project.discovery import ASSETS
from dagster_project.partitions import DATA_VALUE, ROUNDS, SNAPSHOTS, SWEEP

SWEEP_JOB = "sweep_cells"
ROUNDS_JOB = "posttrain_round"
DATA_VALUE_JOB = "data_value_candidates"


def _keys(assets: list[dg.AssetsDefinition]) -> list[dg.AssetKey]:
    return [k for a in assets for k in a.keys]


def on_scheme(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    return [a for a in ASSETS if a.partitions_def == partitions_def]


def _groups() -> dict[str, list[dg.AssetsDefinition]]:
    groups: dict[str, list[dg.AssetsDefinition]] = {}
    for a in on_scheme(SNAPSHOTS):
        for group in sorted(set(a.group_names_by_key.values())):
            groups.setdefault(group, []).append(a)
    return groups


def _domain_job(group: str, assets: list[dg.AssetsDefinition]) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        f"{group}_pipeline",
        selection=dg.AssetSelection.assets(*_keys(assets)),
        partitions_def=SNAPSHOTS,
        description=f"The {group} stages: " + ", ".join(k.to_user_string() for k in _keys(assets)),
    )


lifecycle_job = dg.define_asset_job(
    "lifecycle",
    selection=dg.AssetSelection.assets(*_keys(on_scheme(SNAPSHOTS))),
    partitions_def=SNAPSHOTS,
    description="Every snapshot-partitioned lifecycle asset for one crawl snapshot, in dependency order "
    "(the sweep's cells run in `sweep_cells`; `lifecycle run` runs both).",
)
sweep_job = dg.define_asset_job(
    SWEEP_JOB,
    selection=dg.AssetSelection.assets(*_keys(on_scheme(SWEEP))),
    partitions_def=SWEEP,
    description="One IsoFLOP sweep cell of one snapshot per run; backfill the grid to run cells in parallel.",
)
data_value_job = dg.define_asset_job(
    DATA_VALUE_JOB,
    selection=dg.AssetSelection.assets(*_keys(on_scheme(DATA_VALUE))),
    partitions_def=DATA_VALUE,
    description="One candidate class of the data-value annealing experiment of one snapshot per run.",
)
rounds_job = dg.define_asset_job(
    ROUNDS_JOB,
    selection=dg.AssetSelection.assets(*_keys(on_scheme(ROUNDS))),
    partitions_def=ROUNDS,
    description="One post-training round of one snapshot per run: reward model, rejection samples, SFT, DPO, "
    "chat model (round k starts from round k-1's chat model, so rounds run in order).",
)
DOMAIN_JOBS = {group: _domain_job(group, assets) for group, assets in _groups().items()}
JOBS = [lifecycle_job, sweep_job, rounds_job, data_value_job, *DOMAIN_JOBS.values()]
