"""``lifecycle`` command: materialize assets into the persistent Dagster instance, regenerate dvc.yaml.

lifecycle run [--partition local-web] [--preset P] [--select ASSET ...]   # what `make run` calls
lifecycle materialize ASSET --partition P --preset P                      # what each dvc.yaml stage runs

``run`` materializes in dependency order: the snapshot assets before the scaling sweep (job ``lifecycle``), the
sweep's planned cells (job ``sweep_cells``, one run per cell, side by side in a process pool when the sweep
config runs cells on fewer threads than there are cores), then the snapshot assets after the sweep, the
post-training rounds of the rounds config (job ``posttrain_round``, one run per round, in order, stopping
after a failed round), then the snapshot assets after the rounds (the rounds table).
``materialize scaling_sweep`` runs every planned cell of the snapshot.
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
from typing import Any

from dagster_project.home import REPO_ROOT, lifecycle_home


def _instance():
    import dagster as dg

    dagster_home = Path(os.environ.setdefault("DAGSTER_HOME", str(lifecycle_home() / ".dagster")))
    dagster_home.mkdir(parents=True, exist_ok=True)
    instance_settings(dagster_home / "dagster.yaml")
    return dg.DagsterInstance.get()


# offline machines: no telemetry, and no first-visit community popup in the UI (its form is an iframe from the
# internet; it would cover the page); storage stays what dagster.yaml says (default: SQLite under DAGSTER_HOME)
INSTANCE_SETTINGS = {"telemetry": {"enabled": False}, "nux": {"enabled": False}}


def instance_settings(path: Path) -> None:
    """Add each of ``INSTANCE_SETTINGS`` that ``path`` (a dagster.yaml, created if missing) does not set."""
    import yaml

    current = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    missing = {k: v for k, v in INSTANCE_SETTINGS.items() if k not in current}
    if missing:
        path.write_text(yaml.safe_dump({**current, **missing}, sort_keys=False))


def run_config(selection: list[str], preset: str | None, ops: dict | None = None) -> dict:
    """Console log level, and for every selected asset ``preset`` (when given) and its fields in ``ops``."""
    level = os.environ.get("LIFECYCLE_LOG_LEVEL", "INFO")
    config: dict = {"loggers": {"console": {"config": {"log_level": level}}}}
    op_config = {
        name: {**({"preset": preset} if preset else {}), **(ops or {}).get(name, {}).get("config", {})}
        for name in selection
    }
    if any(op_config.values()):
        config["ops"] = {name: {"config": c} for name, c in op_config.items() if c}
    return config


def _descendants(graph, names: set[str]) -> set[str]:
    out: set[str] = set()
    todo = [child for name in names for child in graph.get(_key(name)).child_keys]
    while todo:
        key = todo.pop()
        if key.to_user_string() not in out:
            out.add(key.to_user_string())
            todo.extend(graph.get(key).child_keys)
    return out


def phases(selection: list[str]) -> list[tuple[str, list[str]]]:
    """``(job, assets)`` in dependency order (a Dagster job has one partition scheme): the snapshot assets
    neither the sweep nor the rounds feed, the sweep's cells, the snapshot assets downstream of the sweep,
    the post-training rounds, the snapshot assets downstream of the rounds, the data-value experiment's
    candidate classes (leaves: every class, last)."""
    from dagster_project.definitions import defs
    from dagster_project.jobs import DATA_VALUE_JOB, ROUNDS_JOB, SWEEP_JOB, on_scheme
    from dagster_project.partitions import DATA_VALUE, ROUNDS, SWEEP

    graph = defs.resolve_asset_graph()
    scheme = lambda p: {k.to_user_string() for a in on_scheme(p) for k in a.keys}  # noqa: E731
    sweep, rounds, candidates = scheme(SWEEP), scheme(ROUNDS), scheme(DATA_VALUE)
    after_rounds = _descendants(graph, rounds) - rounds - candidates
    after_sweep = _descendants(graph, sweep) - rounds - after_rounds - candidates
    late = sweep | rounds | after_sweep | after_rounds | candidates
    out = [
        ("lifecycle", [n for n in selection if n not in late]),
        (SWEEP_JOB, [n for n in selection if n in sweep]),
        ("lifecycle", [n for n in selection if n in after_sweep]),
        (ROUNDS_JOB, [n for n in selection if n in rounds]),
        ("lifecycle", [n for n in selection if n in after_rounds]),
        (DATA_VALUE_JOB, [n for n in selection if n in candidates]),
    ]
    return [(job, names) for job, names in out if names]


def _key(name: str):
    import dagster as dg

    return dg.AssetKey.from_user_string(name)


def run_stage_config(
    config_cls: type, run_cls: type, asset: str, preset: str | None, ops: dict | None
) -> Any:
    """``asset``'s stage config as this run resolves it (preset, YAML and the asset's run-config fields)."""
    from dagster_project.configs import resolve_config

    fields = {
        **({"preset": preset} if preset else {}),
        **(ops or {}).get(asset, {}).get("config", {}),
    }
    return resolve_config(config_cls, run_cls(**fields))


def sweep_cells(preset: str | None, ops: dict | None) -> tuple[list[str], Any]:
    """The cell keys of the sweep config this run resolves (preset, YAML and run-config fields)."""
    from assets.scaling.sweep import SweepRun
    from ml.scaling.plan import SweepConfig, cell_key, grid

    cfg = run_stage_config(SweepConfig, SweepRun, "scaling_sweep", preset, ops)
    return [cell_key(b, s.name) for b, s in grid(cfg)], cfg


def _execute(job_name: str, partition, names: list[str], preset: str | None, ops: dict | None) -> dict:
    """One Dagster run of ``names`` in ``job_name`` for ``partition``; a summary of it."""
    import dagster as dg

    from dagster_project.definitions import defs
    from dagster_project.resources import MlflowResource

    instance = _instance()
    result = defs.resolve_job_def(job_name).execute_in_process(
        run_config=run_config(names, preset, ops),
        instance=instance,
        partition_key=partition,
        asset_selection=[dg.AssetKey.from_user_string(n) for n in names],
        raise_on_error=False,
    )
    # in process, no daemon sees the run end: close its MLflow parent run here (sensors.py does it otherwise)
    MlflowResource().end_parent_run(result.run_id, "FINISHED" if result.success else "FAILED")
    return {"job": job_name, "partition": str(partition), "run_id": result.run_id, "success": result.success}


def rounds_config(preset: str | None, ops: dict | None) -> Any:
    """The rounds config this run resolves (preset, YAML and the ``posttrain_rounds`` run-config fields)."""
    from assets.posttrain.rounds_table import RoundsRun
    from ml.posttrain.stages import RoundsConfig

    return run_stage_config(RoundsConfig, RoundsRun, "posttrain_rounds", preset, ops)


def _run_rounds(snapshot: str, names: list[str], preset: str | None, ops: dict | None) -> list[dict]:
    """Rounds 1..n of ``snapshot`` one after another (round k starts from round k-1's chat model); stops
    after a failed round."""
    from dagster_project.jobs import ROUNDS_JOB
    from dagster_project.partitions import register_rounds, round_partition

    n = rounds_config(preset, ops).rounds
    root = lifecycle_home() / "data" / names[0]
    removed = register_rounds(_instance(), n, lambda key: any(root.glob(f"*/{key}")))
    if removed:
        print(f"removed post-training rounds beyond the config that were never trained: {', '.join(removed)}")
    runs: list[dict] = []
    for k in range(1, n + 1):
        runs.append(_execute(ROUNDS_JOB, round_partition(snapshot, k), names, preset, ops))
        if not runs[-1]["success"]:
            break
    return runs


def _execute_cell(args: tuple) -> dict:
    """A worker process's call: one sweep cell (``lifecycle run`` runs cells side by side in a process pool)."""
    snapshot, cell, names, preset, ops = args
    from dagster_project.partitions import sweep_partition

    return _execute("sweep_cells", sweep_partition(snapshot, cell), names, preset, ops)


def _run_cells(snapshot: str, names: list[str], preset: str | None, ops: dict | None) -> list[dict]:
    """Every planned cell of ``snapshot``, ``cpu_count // torch_threads`` at a time (one when threads is 0)."""
    from dagster_project.partitions import register_sweep_cells

    cells, cfg = sweep_cells(preset, ops)
    root = lifecycle_home() / "data" / names[0]
    removed = register_sweep_cells(_instance(), cells, lambda cell: any(root.glob(f"*/{cell}/cell.json")))
    if removed:
        print(f"removed sweep cells that are in no plan and were never trained: {', '.join(removed)}")
    jobs = [(snapshot, c, names, preset, ops) for c in reversed(cells)]  # largest budgets first
    return _side_by_side(_execute_cell, jobs, cfg.torch_threads)


def _threads_per_worker(n: int) -> None:
    """A side-by-side worker's training launches get its share of the cores (``LIFECYCLE_TRAIN_THREADS``)."""
    os.environ["LIFECYCLE_TRAIN_THREADS"] = str(n)


def _side_by_side(fn, jobs: list[tuple], torch_threads: int) -> list[dict]:
    """``fn`` over ``jobs``, ``cpu_count // torch_threads`` at a time in spawned processes (one at a time,
    in this process, when threads is 0 = torch's default or only one fits)."""
    import multiprocessing as mp

    workers = max(1, min(len(jobs), (os.cpu_count() or 1) // torch_threads if torch_threads else 1))
    if workers == 1:
        return [fn(j) for j in jobs]
    pool = mp.get_context("spawn").Pool(workers, initializer=_threads_per_worker, initargs=(torch_threads,))
    try:
        return list(pool.imap_unordered(fn, jobs))
    finally:
        pool.close()  # let the workers exit on their own (terminate() interrupts their atexit hooks)
        pool.join()


def _execute_candidate(args: tuple) -> dict:
    """A worker process's call: one candidate class of the data-value experiment."""
    snapshot, candidate, names, preset, ops = args
    from dagster_project.jobs import DATA_VALUE_JOB
    from dagster_project.partitions import data_value_partition

    return _execute(DATA_VALUE_JOB, data_value_partition(snapshot, candidate), names, preset, ops)


def _run_candidates(snapshot: str, names: list[str], preset: str | None, ops: dict | None) -> list[dict]:
    """Every candidate class of the data-value experiment for ``snapshot``, one run each, side by side as
    the config's evaluation threads allow (each anneal trains on one thread under torchrun)."""
    from dagster_project.partitions import CANDIDATES

    present = _classes_with_tokens(snapshot)
    absent = [c for c in CANDIDATES.get_partition_keys() if c not in present]
    if absent:
        print(f"data_value: snapshot {snapshot} holds no training tokens of {', '.join(absent)}: not valued")
    jobs = [(snapshot, c, names, preset, ops) for c in CANDIDATES.get_partition_keys() if c in present]
    return _side_by_side(_execute_candidate, jobs, data_value_config(preset, ops).torch_threads)


def data_value_config(preset: str | None, ops: dict | None) -> Any:
    """The data-value config this run resolves (preset, YAML and the ``data_value`` run-config fields)."""
    from assets.pretrain.data_value import DataValueRun
    from ml.train.stages import DataValueConfig

    return run_stage_config(DataValueConfig, DataValueRun, "data_value", preset, ops)


def _classes_with_tokens(snapshot: str) -> set[str]:
    """The classes the snapshot's current token shards hold training tokens of (a class absent from a
    small crawl has nothing to value; ``materialize data_value`` for it still fails with that reason)."""
    import json

    from dagster_project.home import partition_dirname

    manifest = lifecycle_home() / "data" / "token_shards" / partition_dirname(snapshot) / "manifest.json"
    per_class = json.loads(manifest.read_text()).get("tokens_per_class", {}).get("train", {})
    return {c for c, n in per_class.items() if n}


def materialize_lifecycle(
    selection: list[str] | None, partition: str, preset: str | None = None, ops: dict | None = None
) -> list[dict]:
    """Every selected asset for snapshot ``partition`` in dependency order; one summary per Dagster run.
    ``ops`` holds run-config fields per asset (``{"tokenizer": {"config": {...}}}``)."""
    from dagster_project.definitions import stage_names
    from dagster_project.partitions import SNAPSHOTS
    from dagster_project.resources import DvcResource

    instance = _instance()
    if not instance.has_dynamic_partition(SNAPSHOTS.name, partition):
        instance.add_dynamic_partitions(SNAPSHOTS.name, [partition])
    # DVC pushes once, at the end, rather than after each materialization (the sweep's workers inherit it)
    deferred = "LIFECYCLE_DVC_PUSH" not in os.environ
    if deferred:
        os.environ["LIFECYCLE_DVC_PUSH"] = "deferred"
    try:
        return _run_phases(selection or stage_names(), partition, preset, ops)
    finally:
        if deferred:
            del os.environ["LIFECYCLE_DVC_PUSH"]
            DvcResource().push_all()


def _run_phases(selection: list[str], partition: str, preset: str | None, ops: dict | None) -> list[dict]:
    from dagster_project.jobs import DATA_VALUE_JOB, ROUNDS_JOB

    runs: list[dict] = []
    for job, names in phases(selection):
        if job == "lifecycle":
            runs.append(_execute(job, partition, names, preset, ops))
        elif job == DATA_VALUE_JOB:
            runs.extend(_run_candidates(partition, names, preset, ops))
        elif job == ROUNDS_JOB:
            runs.extend(_run_rounds(partition, names, preset, ops))
        else:
            runs.extend(_run_cells(partition, names, preset, ops))
        if not all(r["success"] for r in runs):
            break  # later phases read what this one should have written
    return runs


def _report(runs: list[dict]) -> None:
    instance = _instance()
    for run in runs:
        print(
            f"  run {run['run_id']} ({run['job']} {run['partition']}): {'OK' if run['success'] else 'FAILED'}"
        )
        for entry in instance.all_logs(run["run_id"]):
            event = entry.dagster_event
            if event is None:
                continue
            if event.is_step_materialization:
                mat = event.step_materialization_data.materialization
                n = mat.metadata.get("num_records")
                print(
                    f"    {mat.asset_key.to_user_string():24s} records={getattr(n, 'value', n)} "
                    f"dvc_md5={getattr(mat.metadata.get('dvc_md5'), 'value', '')}"
                )
            elif event.is_step_failure:
                print(
                    f"    step failed: {event.step_key}: {event.step_failure_data.error.message.strip()[:2000]}"
                )


def materialize(selection: list[str] | None, partition: str, preset: str | None = None) -> bool:
    t0 = time.time()
    runs = materialize_lifecycle(selection, partition, preset)
    ok = bool(runs) and all(r["success"] for r in runs)
    print(
        f"\n{'OK' if ok else 'FAILED'}: {len(runs)} run(s) in {time.time() - t0:.0f}s "
        f"(DAGSTER_HOME={os.environ['DAGSTER_HOME']})"
    )
    _report(runs)
    return ok


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
