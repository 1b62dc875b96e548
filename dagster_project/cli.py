"""``lifecycle`` command: materialize assets into the persistent Dagster instance, regenerate dvc.yaml.

lifecycle run [--partition local-web] [--preset P] [--select ASSET ...]   # what `make run` calls
lifecycle materialize ASSET --partition P --preset P                      # what each dvc.yaml stage runs
lifecycle dvc-yaml [--check]                                              # dvc.yaml from the asset graph
lifecycle configs                                                         # the generated run configs
lifecycle lineage ASSET [--partition P] [--version V]                      # what a version was built from
lifecycle versions [ASSET]                                                # every artifact version and its status
lifecycle gc [--keep N] [--failed-older-than-days D] [--dry-run]          # delete old and failed versions

``--preset`` goes into each selected asset's run config (``preset``), the top of the config layers
(see dagster_project/configs.py); without it the run config leaves the preset to ``LIFECYCLE_PRESET``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from dagster_project.home import REPO_ROOT, lifecycle_home


def _instance():
    import dagster as dg

    dagster_home = Path(os.environ.setdefault("DAGSTER_HOME", str(lifecycle_home() / ".dagster")))
    dagster_home.mkdir(parents=True, exist_ok=True)
    settings = dagster_home / "dagster.yaml"
    # offline machines: no telemetry; sqlite storage under DAGSTER_HOME (the default)
    if not settings.exists():
        settings.write_text("telemetry:\n  enabled: false\n")
    return dg.DagsterInstance.get()


def run_config(selection: list[str], preset: str | None) -> dict:
    """Console log level, and ``preset`` for every selected asset when one is given."""
    level = os.environ.get("LIFECYCLE_LOG_LEVEL", "INFO")
    config: dict = {"loggers": {"console": {"config": {"log_level": level}}}}
    if preset:
        config["ops"] = {name: {"config": {"preset": preset}} for name in selection}
    return config


def materialize(selection: list[str] | None, partition: str, preset: str | None = None) -> bool:
    import dagster as dg

    from dagster_project.definitions import defs, stage_names
    from dagster_project.partitions import SNAPSHOTS

    instance = _instance()
    if not instance.has_dynamic_partition(SNAPSHOTS.name, partition):
        instance.add_dynamic_partitions(SNAPSHOTS.name, [partition])
    job = defs.resolve_job_def("lifecycle")
    asset_selection = None
    if selection:
        asset_selection = [dg.AssetKey.from_user_string(s) for s in selection]
    t0 = time.time()
    result = job.execute_in_process(
        run_config=run_config(selection or stage_names(), preset),
        instance=instance,
        partition_key=partition,
        asset_selection=asset_selection,
        raise_on_error=False,
    )
    from dagster_project.resources import MlflowResource

    # in process, no daemon sees the run end: close its MLflow parent run here (sensors.py does it otherwise)
    MlflowResource().end_parent_run(result.run_id, "FINISHED" if result.success else "FAILED")
    print(
        f"\n{'OK' if result.success else 'FAILED'}: run {result.run_id} in {time.time() - t0:.0f}s "
        f"(DAGSTER_HOME={os.environ['DAGSTER_HOME']})"
    )
    for event in result.get_asset_materialization_events():
        mat = event.step_materialization_data.materialization
        meta = mat.metadata
        n = meta.get("num_records")
        print(
            f"  {mat.asset_key.to_user_string():24s} records={getattr(n, 'value', n)} "
            f"dvc_md5={getattr(meta.get('dvc_md5'), 'value', '')}"
        )
    for event in result.all_events:
        if event.is_step_failure:
            print(f"  step failed: {event.step_key}: {event.step_failure_data.error.message.strip()[:2000]}")
    return result.success


def _versions(args: argparse.Namespace) -> int:
    """``versions``: one line per version; ``gc``: remove what the policy says, never a current version."""
    from dagster_project.versions import stores

    if args.cmd == "gc" and (args.keep < 0 or args.failed_older_than_days < 0):
        print("lifecycle gc: --keep and --failed-older-than-days must be >= 0", file=sys.stderr)
        return 2
    for store in stores():
        if args.cmd == "versions":
            if args.asset in (None, store.asset):
                for r in store.records():
                    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.get("created", 0)))
                    print(
                        f"{store.asset:22s} {store.partition or 'all':14s} {r['version']:40s} "
                        f"{r['status']:10s} {when}  {r.get('reason', '')}"
                    )
            continue
        removed = store.gc(args.keep, args.failed_older_than_days * 86400, dry_run=args.dry_run)
        for vid in removed:
            print(
                f"{'would remove' if args.dry_run else 'removed'} {store.asset}/{store.partition or 'all'}/{vid}"
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lifecycle", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="materialize the whole lifecycle (or --select assets) for one snapshot")
    run.add_argument("--partition", default="local-web")
    run.add_argument("--select", nargs="*", default=None)
    run.add_argument("--preset", default=None, help="tiny | small | 8b | 70b | 405b")
    mat = sub.add_parser("materialize", help="materialize one asset (used by dvc.yaml stages)")
    mat.add_argument("asset")
    mat.add_argument("--partition", default="local-web")
    mat.add_argument("--preset", default=None, help="tiny | small | 8b | 70b | 405b")
    dy = sub.add_parser("dvc-yaml", help="write dvc.yaml from the asset graph")
    dy.add_argument("--check", action="store_true", help="exit 1 if dvc.yaml is out of date")
    sub.add_parser("configs", help="list each asset's run config class and the dataclass it mirrors")
    ver = sub.add_parser("versions", help="list artifact versions (current, superseded, failed, pending)")
    ver.add_argument("asset", nargs="?", default=None)
    gc = sub.add_parser(
        "gc", help="delete superseded versions beyond --keep and failed ones older than D days"
    )
    gc.add_argument("--keep", type=int, default=1, help="superseded versions kept per partition (default 1)")
    gc.add_argument("--failed-older-than-days", type=float, default=7.0)
    gc.add_argument("--dry-run", action="store_true")
    lin = sub.add_parser(
        "lineage", help="the upstream versions, runs, configs and code an artifact came from"
    )
    lin.add_argument("asset")
    lin.add_argument("--partition", default="local-web", help="'' for an unpartitioned asset")
    lin.add_argument("--version", default=None, help="an artifact version (default: the newest)")
    args = parser.parse_args(argv)
    if args.cmd in ("versions", "gc"):
        return _versions(args)
    if args.cmd == "lineage":
        from dagster_project.lineage import lineage

        try:
            node = lineage(_instance(), args.asset, args.partition or None, args.version)
        except LookupError as exc:
            print(f"lifecycle lineage: {exc}", file=sys.stderr)
            return 1
        print("\n".join(node.lines()))
        return 0

    if args.cmd == "run":
        return 0 if materialize(args.select, args.partition, args.preset) else 1
    if args.cmd == "materialize":
        return 0 if materialize([args.asset], args.partition, args.preset) else 1
    if args.cmd == "configs":
        import dagster_project.definitions  # noqa: F401 (discovering the assets generates their configs)
        from dagster_project.configs import describe_run_configs

        print(describe_run_configs())
        return 0
    from dagster_project.dvc_yaml import render_dvc_yaml

    text = render_dvc_yaml()
    path = REPO_ROOT / "dvc.yaml"
    if args.check:
        ok = path.exists() and path.read_text() == text
        print("dvc.yaml is up to date" if ok else "dvc.yaml is out of date: run `lifecycle dvc-yaml`")
        return 0 if ok else 1
    path.write_text(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
