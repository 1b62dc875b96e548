"""Resources: the only place with side effects (MLflow, DVC, the local web, Redis, Dask, torchrun).

Each is a ``dg.ConfigurableResource`` so it shows up, with its settings, in the Dagster UI.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import dagster as dg
import yaml

from dagster_project.home import lifecycle_home
from ml.io import atomic_write_text, md5_file


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = json.dumps(value) if isinstance(value, list | tuple) else str(value)


EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


class MlflowResource(dg.ConfigurableResource):
    """MLflow tracking: one parent run per Dagster run, one nested run per asset materialization.

    ``tracking_uri`` defaults to ``sqlite:///<home>/mlflow.db``; ``MLFLOW_TRACKING_URI`` overrides both.
    """

    tracking_uri: str = ""
    experiment: str = "llama-lifecycle"
    ui_url: str = "http://127.0.0.1:5000"
    dagster_ui_url: str = "http://127.0.0.1:3000"  # links from each MLflow run back to its Dagster run

    def resolved_uri(self) -> str:
        return (
            os.environ.get("MLFLOW_TRACKING_URI")
            or self.tracking_uri
            or f"sqlite:///{lifecycle_home()}/mlflow.db"
        )

    def client(self):
        import mlflow

        mlflow.set_tracking_uri(self.resolved_uri())
        return mlflow.MlflowClient(self.resolved_uri())

    def _experiment_id(self, client) -> str:
        exp = client.get_experiment_by_name(self.experiment)
        if exp is None:
            artifact_root = (
                (lifecycle_home() / "mlartifacts").as_uri()
                if self.resolved_uri().startswith("sqlite")
                else None
            )
            try:
                exp_id = client.create_experiment(self.experiment, artifact_location=artifact_root)
            except Exception:  # created concurrently by another step process
                exp_id = client.get_experiment_by_name(self.experiment).experiment_id
            exp = client.get_experiment(exp_id)
        if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            # MLflow 3 opens an experiment without a kind on its GenAI "Traces" view, hiding the runs
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp.experiment_id

    def end_parent_run(self, dagster_run_id: str, status: str) -> str | None:
        """End the parent run of Dagster run ``dagster_run_id`` with ``status`` (FINISHED | FAILED | KILLED).

        Returns its MLflow run id, or None when the Dagster run logged nothing to MLflow."""
        if status not in ("FINISHED", "FAILED", "KILLED"):
            raise ValueError(f"end_parent_run: status must be FINISHED | FAILED | KILLED, got {status!r}")
        client = self.client()
        exp = client.get_experiment_by_name(self.experiment)
        parent = self._find_parent(client, exp.experiment_id, dagster_run_id) if exp is not None else None
        if parent is not None:
            client.set_terminated(parent, status=status)
        return parent

    @staticmethod
    def _find_parent(client, exp_id: str, dagster_run_id: str) -> str | None:
        found = client.search_runs(
            [exp_id],
            filter_string=f"tags.`dagster.run_id` = '{dagster_run_id}' and tags.`dagster.role` = 'parent'",
        )
        return found[0].info.run_id if found else None

    def _parent_run(self, client, exp_id: str, dagster_run_id: str, job_name: str) -> str:
        found = self._find_parent(client, exp_id, dagster_run_id)
        if found is not None:
            return found
        run = client.create_run(
            exp_id,
            run_name=f"dagster-{job_name}-{dagster_run_id[:8]}",
            tags={"dagster.run_id": dagster_run_id, "dagster.role": "parent", "dagster.job": job_name},
        )
        return run.info.run_id

    def run_url(self, run_id: str, experiment_id: str) -> str:
        return f"{self.ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    def start_asset_run(
        self,
        *,
        dagster_run_id: str,
        job_name: str,
        asset: str,
        partition: str | None,
        params: dict,
        tags: dict,
    ) -> AssetRunLog:
        client = self.client()
        exp_id = self._experiment_id(client)
        parent = self._parent_run(client, exp_id, dagster_run_id, job_name)
        dagster = self.dagster_ui_url.rstrip("/")
        run_link, asset_link = f"{dagster}/runs/{dagster_run_id}", f"{dagster}/assets/{asset}"
        run = client.create_run(
            exp_id,
            run_name=f"{asset}[{partition}]" if partition else asset,
            tags={
                "mlflow.parentRunId": parent,
                "dagster.run_id": dagster_run_id,
                "dagster.run_url": run_link,
                "dagster.asset_key": asset,
                "dagster.asset_url": asset_link,
                "dagster.partition": partition or "",
                # the run page's description (markdown): the way back to Dagster is a click
                "mlflow.note.content": f"Materialization of [{asset}]({asset_link})"
                + (f" partition `{partition}`" if partition else "")
                + f" in Dagster run [{dagster_run_id[:8]}]({run_link}).",
                **tags,
            },
        )
        log = AssetRunLog(client=client, run_id=run.info.run_id, url=self.run_url(run.info.run_id, exp_id))
        log.log_params(params)
        return log


class AssetRunLog:
    """A handle on one asset's MLflow run: params, metrics, inputs, artifacts, tags."""

    def __init__(self, client, run_id: str, url: str):
        self.client, self.run_id, self.url = client, run_id, url

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        flat: dict[str, str] = {}
        _flatten("", params, flat)
        items = [Param(k, v[:6000]) for k, v in sorted(flat.items())]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        self.log_metric_series([(step, metrics)])

    def log_metric_series(self, series: list[tuple[int, Mapping[str, float]]]) -> None:
        """Every step's numeric metrics, in batches of 1,000 (MLflow's limit; one transaction per batch)."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(mlflow_key(k), float(v), now, step)
            for step, metrics in series
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        ]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def log_input(self, name: str, path: Path, md5: str, context: str = "upstream") -> None:
        """Link an upstream artifact as an MLflow dataset input (source = path, digest = DVC md5)."""
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.data.sources import LocalArtifactDatasetSource
        from mlflow.entities import DatasetInput, InputTag

        ds = MetaDataset(source=LocalArtifactDatasetSource(str(path)), name=name, digest=(md5 or "none")[:36])
        self.client.log_inputs(
            self.run_id,
            datasets=[DatasetInput(ds._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])],
        )

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, text, name)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)


def _load_yaml(text: str):
    """YAML through libyaml when PyYAML has it: dvc.lock grows to ~16K lines in a lifecycle home, and the pure
    Python loader took ~1.3 s per read of it, at every materialization."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _read_lock(lock_file: Path) -> dict:
    """dvc.lock as plain data ({} when there is none yet)."""
    return (_load_yaml(lock_file.read_text()) or {}) if lock_file.exists() else {}


def _write_lock(lock_file: Path, lock: dict) -> None:
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    atomic_write_text(lock_file, yaml.dump(lock, Dumper=dumper, sort_keys=False, allow_unicode=True))


def _commit_stage(repo, name: str, lock_file: Path) -> None:
    """``dvc commit --force <name>``: DVC saves the stage and moves its outputs into the cache; its entry, DVC's
    own serialization, goes into ``lock_file`` through libyaml. DVC's own rewrite of dvc.lock is a pure-Python
    round trip (ruamel) that took ~5 s per materialization on a lifecycle home's ~16K-line lock."""
    from dvc.repo import lock_repo
    from dvc.stage.serialize import to_lockfile

    with lock_repo(repo):
        infos = list(repo.stage.collect_granular(name))
        for info in infos:
            info.stage.save()
            info.stage.commit(filter_info=info.filter_info, relink=True)
        lock = _read_lock(lock_file) or {"schema": "2.0"}
        stages = lock.setdefault("stages", {})
        for info in infos:
            stages.update(json.loads(json.dumps(to_lockfile(info.stage))))  # plain dicts and lists
        _write_lock(lock_file, lock)


def mlflow_key(name: str) -> str:
    """MLflow names allow letters, digits, ``_ - . : /`` and spaces: ``cluster_size/101+`` → ``cluster_size/101plus``."""
    return re.sub(r"[^\w\-. :/]", "_", name.replace("+", "plus"))


class DvcResource(dg.ConfigurableResource):
    """DVC versioning of every artifact under the home.

    Initializes DVC in the home when missing (``--no-scm`` outside a git repo) with a local remote at
    ``<home>/dvc-remote`` unless ``remote_url`` names another. An artifact that is the ``outs`` of a stage
    in ``<home>/dvc.yaml`` is committed to that stage (``dvc.lock``); any other is ``dvc add``-ed.
    Set ``LIFECYCLE_DVC=off`` (``dvc repro`` stage commands do) to leave versioning to the caller.
    """

    remote_url: str = ""
    push: bool = True  # after each commit; ``LIFECYCLE_DVC_PUSH=deferred`` leaves it to ``push_all``

    def _push_now(self) -> bool:
        return self.push and os.environ.get("LIFECYCLE_DVC_PUSH", "each") != "deferred"

    def push_all(self) -> None:
        """Push every committed artifact to the remote (``lifecycle run`` does it once, at its end: a push per
        materialization re-indexed the whole home, 2-4 s each)."""
        if not self._enabled() or not self.push:
            return
        home = lifecycle_home()
        with _DVC_LOCK, _home_lock(home), contextlib.chdir(home):
            repo = self._repo()
            try:
                repo.push()
            finally:
                repo.close()

    def _enabled(self) -> bool:
        return os.environ.get("LIFECYCLE_DVC", "on").lower() not in ("off", "0", "false")

    def _repo(self):
        from dvc.repo import Repo

        home = lifecycle_home()
        if not (home / ".dvc").is_dir():
            scm = (home / ".git").exists()
            Repo.init(str(home), no_scm=not scm, force=True)
            remote = self.remote_url or str(home / "dvc-remote")
            subprocess.run(
                [sys.executable, "-m", "dvc", "remote", "add", "-f", "-d", "local", remote],
                cwd=home,
                check=True,
                capture_output=True,
            )
        return Repo(str(home))

    def _stage_for(self, home: Path, rel: str, enclosing: bool = False) -> str | None:
        """The dvc.yaml stage whose output is ``rel`` (or, with ``enclosing``, holds it: a sweep cell's
        directory is inside its snapshot's stage output)."""
        dvc_yaml = home / "dvc.yaml"
        if not dvc_yaml.exists():
            return None
        stages = (_load_yaml(dvc_yaml.read_text()) or {}).get("stages", {})
        params = {}
        if (home / "params.yaml").exists():
            params = _load_yaml((home / "params.yaml").read_text()) or {}
        for name, stage in stages.items():
            for out in stage.get("outs", []):
                out_path = out if isinstance(out, str) else next(iter(out))
                for k, v in params.items():
                    out_path = out_path.replace("${" + k + "}", str(v))
                out_path = out_path.rstrip("/")
                if out_path == rel or (enclosing and rel.startswith(out_path + "/")):
                    return name
        return None

    def track(self, path: Path) -> str:
        """Version ``path`` (a directory or file under the home); returns its DVC md5."""
        if not self._enabled():
            return directory_md5(path)
        home = lifecycle_home()
        path = Path(path).resolve()
        rel = path.relative_to(home).as_posix()
        # DVC resolves targets against the working directory: run it from the home. One writer at a time, also
        # across processes (sweep cells run side by side).
        with _DVC_LOCK, _home_lock(home), contextlib.chdir(home):
            repo = self._repo()
            try:
                stage = self._stage_for(home, rel, enclosing=True)
                if stage:
                    _commit_stage(repo, stage, home / "dvc.lock")
                else:
                    repo.add([rel])
                if self._push_now():
                    repo.push()
            finally:
                repo.close()
        if stage and self._stage_for(home, rel) is None:  # committed with the stage that holds it
            return directory_md5(path)
        return dvc_md5(home, rel, stage)

    def snapshot(self, path: Path) -> dict[str, Any] | None:
        """DVC's record of ``path`` now (its dvc.lock stage entry or its ``.dvc`` file), for ``restore``."""
        if not self._enabled():
            return None
        home = lifecycle_home()
        rel = Path(path).resolve().relative_to(home).as_posix()
        stage = self._stage_for(home, rel)
        if stage:
            lock = _read_lock(home / "dvc.lock")
            return {"stage": stage, "entry": lock.get("stages", {}).get(stage)}
        dvc_file = home / f"{rel}.dvc"
        return {"dvc_file": str(dvc_file), "text": dvc_file.read_text() if dvc_file.exists() else None}

    def restore(self, path: Path, snap: dict[str, Any] | None) -> None:
        """Put back the record ``snapshot`` took (after a failed or interrupted promotion)."""
        if not snap:
            return
        home = lifecycle_home()
        with _DVC_LOCK:
            if "stage" in snap:
                lock_file = home / "dvc.lock"
                lock = _read_lock(lock_file)
                stages = lock.setdefault("stages", {})
                if snap["entry"] is None:
                    stages.pop(snap["stage"], None)
                else:
                    stages[snap["stage"]] = snap["entry"]
                _write_lock(lock_file, lock)
                return
            dvc_file = Path(snap["dvc_file"])
            if snap["text"] is None:
                dvc_file.unlink(missing_ok=True)
            else:
                atomic_write_text(dvc_file, snap["text"])


_DVC_LOCK = threading.Lock()


@contextlib.contextmanager
def _home_lock(home: Path):
    """An exclusive ``flock`` per home, in the temp dir (not in the home, so neither git nor DVC sees it)."""
    name = hashlib.md5(str(home).encode()).hexdigest()[:12]
    with open(Path(tempfile.gettempdir()) / f"lifecycle-dvc-{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def dvc_md5(home: Path, rel: str, stage: str | None) -> str:
    """Read the md5 DVC recorded for ``rel`` (from dvc.lock or ``<rel>.dvc``)."""
    if stage:
        lock = _load_yaml((home / "dvc.lock").read_text()) or {}
        for out in lock.get("stages", {}).get(stage, {}).get("outs", []):
            if out["path"].rstrip("/") == rel:
                return out["md5"]
    dvc_file = home / f"{rel}.dvc"
    if dvc_file.exists():
        return (_load_yaml(dvc_file.read_text()) or {})["outs"][0]["md5"]
    raise RuntimeError(f"DVC recorded no md5 for {rel} (stage={stage})")


def directory_md5(path: Path) -> str:
    """DVC's md5 of a file or directory, computed without DVC (when versioning is off, and for a version
    before DVC records it), so the md5 Dagster and MLflow show is DVC's own: a file's is the md5 of its bytes;
    a directory's is the md5 of the JSON list ``[{"md5": <file md5>, "relpath": <posix path>}, ...]``
    sorted by path (``json.dumps(..., sort_keys=True)``), plus ``.dir`` (dvc-data's ``Tree.digest``)."""
    path = Path(path)
    if path.is_file():
        return md5_file(path)
    entries = [
        {"md5": md5_file(f), "relpath": f.relative_to(path).as_posix()}
        for f in sorted(p for p in path.rglob("*") if p.is_file())
    ]
    entries.sort(key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


class LocalWebResource(dg.ConfigurableResource):
    """Builds the offline local web (man pages, package docs, READMEs, copyright files) and serves it on
    loopback for the duration of a crawl. The crawler only ever sees a URL."""

    host: str = "127.0.0.1"
    port: int = 0

    @contextlib.contextmanager
    def serving(self, site_dir: Path, config) -> Iterator[tuple[str, Any]]:
        from dagster_project.services.local_web_server import serve_site
        from ml.sources.localweb import build_site

        manifest = build_site(site_dir, config)
        with serve_site(site_dir, host=self.host, port=self.port) as base_url:
            yield base_url, manifest


class RedisResource(dg.ConfigurableResource):
    """Redis for the shared MinHash LSH index. ``mode``: ``local`` starts a real redis-server on loopback,
    ``external`` connects to ``host``/``port``, ``off`` keeps the index in memory."""

    mode: str = "off"
    host: str = "127.0.0.1"
    port: int = 6379

    @contextlib.contextmanager
    def connection(self) -> Iterator[tuple[str, int] | None]:
        if self.mode == "off":
            yield None
        elif self.mode == "external":
            yield (self.host, self.port)
        elif self.mode == "local":
            from dagster_project.services.redis_server import redis_server

            with redis_server() as hp:
                yield hp
        else:
            raise ValueError(f"RedisResource.mode={self.mode!r}: choose off, local or external")


class DaskResource(dg.ConfigurableResource):
    """Dask for per-shard curation steps: ``scheduler_address`` joins a cluster; else a LocalCluster with
    ``n_workers`` processes; ``n_workers=0`` runs in process."""

    scheduler_address: str = ""
    n_workers: int = 2
    threads_per_worker: int = 1

    @contextlib.contextmanager
    def client(self) -> Iterator[Any]:
        if self.scheduler_address:
            from dask.distributed import Client

            with Client(self.scheduler_address) as c:
                yield c
        elif self.n_workers <= 0:
            yield None
        else:
            from dagster_project.services.dask_cluster import local_cluster

            with local_cluster(self.n_workers, self.threads_per_worker) as c:
                yield c


class TorchrunResource(dg.ConfigurableResource):
    """Launches the training entry under ``torchrun`` through Dagster Pipes (``PipesSubprocessClient``).

    ``nproc_per_node`` processes (gloo on CPU, NCCL on GPU); rank 0 alone reports metrics back.
    """

    # the module each rank runs (dvc.yaml counts its imports as the stage's code)
    launches: ClassVar[tuple[str, ...]] = ("dagster_project.train_entry",)

    nproc_per_node: int = 1
    extra_env: dict[str, str] = {}
    # intra-op threads per rank; 0: ``LIFECYCLE_TRAIN_THREADS`` (``make run`` sets 2), else 1. Two threads
    # train tiny 1.8x faster on two idle cores, but stall 5-15x when another process takes a core (the
    # test suite's workers, side-by-side runs): runs side by side get 1 (dagster_project/cli.py)
    threads: int = 0

    def resolved_threads(self) -> int:
        raw = self.threads or os.environ.get("LIFECYCLE_TRAIN_THREADS", "1")
        try:
            n = int(raw)
        except ValueError:
            n = 0
        if n < 1:
            raise dg.Failure(
                f"LIFECYCLE_TRAIN_THREADS / TorchrunResource.threads must be a positive integer, got {raw!r}"
            )
        return n

    def command(self, args: list[str]) -> list[str]:
        entry = ["-m", self.launches[0], *args]
        if self.nproc_per_node <= 1:
            return [sys.executable, *entry]
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={self.nproc_per_node}",
            *entry,
        ]

    def launch(self, context, args: list[str], extras: dict | None = None):
        client = dg.PipesSubprocessClient()
        threads = str(self.resolved_threads())
        env = {**os.environ, **self.extra_env, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": threads}
        return client.run(context=context, command=self.command(args), env=env, extras=extras or {})
