"""``lifecycle`` command: materialize assets into the persistent Dagster instance, regenerate dvc.yaml.

lifecycle run [--partition local-web] [--select ASSET ...]   # what `make run` calls
lifecycle materialize ASSET --partition P                    # what each dvc.yaml stage runs
lifecycle dvc-yaml [--check]                                 # dvc.yaml from the asset graph
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


def materialize(selection: list[str] | None, partition: str) -> bool:
    import dagster as dg

    from dagster_project.definitions import defs
    from dagster_project.partitions import SNAPSHOTS

    instance = _instance()
    if not instance.has_dynamic_partition(SNAPSHOTS.name, partition):
        instance.add_dynamic_partitions(SNAPSHOTS.name, [partition])
    job = defs.resolve_job_def("lifecycle")
    asset_selection = None
    if selection:
        asset_selection = [dg.AssetKey.from_user_string(s) for s in selection]
    t0 = time.time()
    quiet = {"loggers": {"console": {"config": {"log_level": os.environ.get("LIFECYCLE_LOG_LEVEL", "INFO")}}}}
    result = job.execute_in_process(
        run_config=quiet,
        instance=instance,
        partition_key=partition,
        asset_selection=asset_selection,
        raise_on_error=False,
    )
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lifecycle", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="materialize the whole lifecycle (or --select assets) for one snapshot")
    run.add_argument("--partition", default="local-web")
    run.add_argument("--select", nargs="*", default=None)
    mat = sub.add_parser("materialize", help="materialize one asset (used by dvc.yaml stages)")
    mat.add_argument("asset")
    mat.add_argument("--partition", default="local-web")
    dy = sub.add_parser("dvc-yaml", help="write dvc.yaml from the asset graph")
    dy.add_argument("--check", action="store_true", help="exit 1 if dvc.yaml is out of date")
    args = parser.parse_args(argv)

    if args.cmd == "run":
        return 0 if materialize(args.select, args.partition) else 1
    if args.cmd == "materialize":
        return 0 if materialize([args.asset], args.partition) else 1
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
