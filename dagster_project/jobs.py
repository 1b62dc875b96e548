"""Jobs built from the discovered stages: ``lifecycle`` (every asset for one crawl snapshot, in
dependency order) and one ``<domain>_pipeline`` job per domain group."""

from __future__ import annotations

import dagster as dg

from dagster_project.discovery import ASSETS
from dagster_project.partitions import SNAPSHOTS


def _groups() -> dict[str, list[dg.AssetsDefinition]]:
    groups: dict[str, list[dg.AssetsDefinition]] = {}
    for a in ASSETS:
        for group in sorted(set(a.group_names_by_key.values())):
            groups.setdefault(group, []).append(a)
    return groups


def _domain_job(group: str, assets: list[dg.AssetsDefinition]) -> dg.UnresolvedAssetJobDefinition:
    schemes = {a.partitions_def for a in assets}
    return dg.define_asset_job(
        f"{group}_pipeline",
        selection=dg.AssetSelection.groups(group),
        partitions_def=schemes.pop() if len(schemes) == 1 else None,
        description=f"The {group} stages: " + ", ".join(k.to_user_string() for a in assets for k in a.keys),
    )


lifecycle_job = dg.define_asset_job(
    "lifecycle",
    selection=dg.AssetSelection.all(),
    partitions_def=SNAPSHOTS,
    description="Every lifecycle asset for one crawl snapshot, in dependency order.",
)
DOMAIN_JOBS = {group: _domain_job(group, assets) for group, assets in _groups().items()}
JOBS = [lifecycle_job, *DOMAIN_JOBS.values()]
