"""Scale configuration for real: Dagster's storage (runs, event log, schedules) on PostgreSQL through
dagster-postgres, and an MLflow tracking server whose backend store is PostgreSQL. A cluster is started
for the test (Debian's ``postgresql``, installed by scripts/install-system-deps.sh); an asset materialized
through Dagster lands its run and events in one database and its MLflow runs in the other."""

import io
import json
import sys

import dagster as dg
import pytest
from services import create_databases, free_port, postgres_bindir, postgres_server, query, service

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ops")]

TEXTS = [
    "PostgreSQL keeps the run history of every materialization in one database for all the processes.",
    "The tracking server writes parameters, metrics and tags of each run to its own database.",
    "A third document, so the ingested snapshot holds more than two records for the count below.",
]


def write_wet(path, texts: list[str]) -> None:
    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=True)
        for i, text in enumerate(texts):
            rec = writer.create_warc_record(
                f"http://pg.test/{i}",
                "conversion",
                payload=io.BytesIO(text.encode()),
                warc_content_type="text/plain",
            )
            writer.write_record(rec)


def sqlalchemy_url(base_url: str) -> str:
    """SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3; the driver installed is psycopg2."""
    return base_url.replace("postgresql://", "postgresql+psycopg2://", 1)


@pytest.fixture
def postgres():
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) are not installed: scripts/install-system-deps.sh")
    with postgres_server(bindir) as url:
        create_databases(url, "dagster", "mlflow")
        yield url


def test_dagster_and_mlflow_on_postgres(postgres, tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / ".dagster").mkdir(parents=True)
    (home / ".dagster" / "dagster.yaml").write_text(
        f"storage:\n  postgres:\n    postgres_url: {sqlalchemy_url(postgres)}/dagster\ntelemetry:\n  enabled: false\n"
    )
    port = free_port()
    mlflow_cmd = [
        sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
        f"{sqlalchemy_url(postgres)}/mlflow",
        "--artifacts-destination", (tmp_path / "mlartifacts").as_uri(),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    env = {k: v for k, v in __import__("os").environ.items() if k != "MLFLOW_TRACKING_URI"}
    with service(mlflow_cmd, tmp_path / "mlflow.log", f"http://127.0.0.1:{port}/health", env):
        for k, v in {
            "LIFECYCLE_HOME": str(home),
            "DAGSTER_HOME": str(home / ".dagster"),
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}",
            "LIFECYCLE_DVC": "off",
        }.items():
            monkeypatch.setenv(k, v)
        wet = tmp_path / "pg.wet.gz"
        write_wet(wet, TEXTS)
        from dagster_project.cli import _instance, materialize_lifecycle

        runs = materialize_lifecycle(
            ["raw_crawl"], "pg-snap", ops={"raw_crawl": {"config": {"warc_paths": [str(wet)]}}}
        )
        assert [r["success"] for r in runs] == [True]
        run_id = runs[0]["run_id"]
        instance = _instance()
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        meta = instance.get_latest_materialization_event(
            dg.AssetKey("raw_crawl")
        ).asset_materialization.metadata

        # Dagster: the run, its materialization and the snapshot partition are rows in Postgres
        dagster_db = f"{postgres}/dagster"
        assert query(dagster_db, "SELECT status FROM runs WHERE run_id = %s", run_id) == [("SUCCESS",)]
        events = query(
            dagster_db,
            "SELECT asset_key FROM event_logs WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'",
            run_id,
        )
        assert [json.loads(k) for (k,) in events] == [["raw_crawl"]]
        assert ("pg-snap",) in query(dagster_db, "SELECT partition FROM dynamic_partitions")
        assert not list((home / ".dagster").rglob("*.db"))  # no SQLite storage beside it

        # MLflow: the asset's run (params, metrics, tags) and its parent, ended, in the server's Postgres
        mlflow_db, mlflow_run = f"{postgres}/mlflow", meta["mlflow_run_id"].value
        assert query(mlflow_db, "SELECT status FROM runs WHERE run_uuid = %s", mlflow_run) == [("FINISHED",)]
        tags = dict(query(mlflow_db, "SELECT key, value FROM tags WHERE run_uuid = %s", mlflow_run))
        assert tags["dagster.run_id"] == run_id and tags["dagster.asset_key"] == "raw_crawl"
        assert tags["dvc_md5"] == meta["dvc_md5"].value
        assert query(
            mlflow_db, "SELECT value FROM metrics WHERE run_uuid = %s AND key = 'num_records'", mlflow_run
        ) == [(float(len(TEXTS)),)]
        parent = tags["mlflow.parentRunId"]
        assert query(mlflow_db, "SELECT status FROM runs WHERE run_uuid = %s", parent) == [("FINISHED",)]
        assert (
            "config_class",
            "CrawlConfig",
        ) in query(mlflow_db, "SELECT key, value FROM params WHERE run_uuid = %s", mlflow_run)
