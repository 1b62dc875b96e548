"""Both UIs in a real browser: the Dagster webserver and ``mlflow ui`` on loopback, driven by Playwright in
Debian's headless Chromium (``executable_path``: no browser is downloaded). The asset graph lists every
stage; a materialization launched from the UI completes and its asset page shows its plot; the MLflow run
page of that materialization shows its metrics. Screenshots go to the test's artifact directory."""

import os
import shutil
import sys
import time

import dagster as dg
import pytest
from services import ROOT, free_port, service, wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ops")]

SNAPSHOT = "ui-snap"
LAUNCHED = "safety_classifier"  # trains in seconds on the shipped safety data and logs plots
POPUP = "Join the Dagster community"


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def ui_home(tmp_path, monkeypatch):
    """A home whose instance the webserver serves: the project's dagster.yaml, plus run launching without
    the daemon (runs start from the webserver), and the snapshot partition the launch targets."""
    if chromium() is None:
        pytest.skip("Chromium is not installed: scripts/install-system-deps.sh")
    home = tmp_path / "home"
    env = {"LIFECYCLE_HOME": str(home), "DAGSTER_HOME": str(home / ".dagster"), "LIFECYCLE_DVC": "off"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from dagster_project.cli import _instance
    from dagster_project.partitions import SNAPSHOTS

    _instance().add_dynamic_partitions(SNAPSHOTS.name, [SNAPSHOT])
    with open(home / ".dagster" / "dagster.yaml", "a") as fh:
        fh.write(
            "run_coordinator:\n  module: dagster._core.run_coordinator\n  class: DefaultRunCoordinator\n"
        )
    return home


STARTED = [time.monotonic()]  # reset by the test: each screenshot's line tells when it was taken


def shot(page, artifacts, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=False)
    print(f"  {name}.png at {time.monotonic() - STARTED[0]:.0f}s")


def wait_for_run(home, timeout: float = 600) -> dg.DagsterRun:
    instance = dg.DagsterInstance.from_config(str(home / ".dagster"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = instance.get_runs()
        if runs and runs[0].is_finished:
            return runs[0]
        time.sleep(1)
    raise AssertionError(f"no launched run finished in {timeout}s: {[r.status for r in instance.get_runs()]}")


def check_asset_graph(page, base: str, artifacts) -> None:
    """The lineage page lists every stage (its groups expanded); the community popup never shows."""
    from dagster_project.definitions import stage_names

    page.goto(f"{base}/asset-groups")
    page.get_by_text("tokens", exact=True).first.wait_for(timeout=180_000)
    collapsed = page.locator("button:has([aria-label='arrow_drop_down'][style*='rotate(-90deg)'])")
    for _ in range(20):  # one group at a time: the list re-renders after each
        if collapsed.count() == 0:
            break
        collapsed.first.click()
    page.get_by_text(stage_names()[-1], exact=True).first.wait_for(timeout=10_000)
    assert not page.get_by_text(POPUP).is_visible()
    shot(page, artifacts, "dagster_asset_graph")
    missing = [n for n in stage_names() if page.get_by_text(n, exact=True).count() == 0]
    assert missing == [], f"stages not in the asset graph: {missing}"


def launch_from_ui(page, base: str, home, artifacts) -> dg.DagsterRun:
    """Materialize the snapshot partition of ``LAUNCHED`` from its asset page; the run it started."""
    page.goto(f"{base}/assets/{LAUNCHED}")
    materialize = page.locator("button", has_text="Materialize").first
    materialize.wait_for(timeout=60_000)
    materialize.click()
    page.get_by_text("Select a partition or create one").click()
    page.get_by_text(SNAPSHOT, exact=True).filter(visible=True).click()
    page.get_by_text(f"Launch runs to materialize {LAUNCHED}").click()  # closes the partition list
    shot(page, artifacts, "dagster_launch_dialog")
    page.locator("button", has_text="Launch 1 run").click()
    run = wait_for_run(home)
    page.goto(f"{base}/runs/{run.run_id}")
    page.get_by_text("RUN_SUCCESS").first.wait_for(timeout=30_000)
    shot(page, artifacts, "dagster_run_succeeded")
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert run.tags["dagster/partition"] == SNAPSHOT
    return run


def check_asset_plot(page, base: str, artifacts) -> None:
    page.goto(f"{base}/assets/{LAUNCHED}?partition={SNAPSHOT}")
    row = page.locator("tr", has_text="_plot").first
    row.wait_for(timeout=60_000)
    row.get_by_text("[Show Markdown]").click()
    plot = page.locator("img[src^='data:image/png']").first
    plot.wait_for(timeout=10_000)
    assert plot.evaluate("img => img.naturalWidth") > 300
    page.wait_for_timeout(1000)  # the dialog fades in
    shot(page, artifacts, "dagster_asset_plot")


def check_mlflow_run_page(page, base: str, run_id: str, artifacts) -> None:
    """The run page of the materialization's MLflow run shows each of its metrics and its value."""
    from dagster_project.resources import MlflowResource

    run = MlflowResource().client().get_run(run_id)
    page.goto(f"{base}/#/experiments/{run.info.experiment_id}/runs/{run_id}")
    page.get_by_text(f"{LAUNCHED}[{SNAPSHOT}]").first.wait_for(timeout=60_000)
    assert len(run.data.metrics) > 10
    page.get_by_text(f"Metrics ({len(run.data.metrics)})").first.wait_for(timeout=30_000)
    shown = page.inner_text("body")  # the metrics table: each name, then its value
    for key, value in run.data.metrics.items():
        assert f"{key}\n{int(value) if value == int(value) else value}\n" in shown, f"metric {key} not shown"
    heading = page.get_by_text(f"Metrics ({len(run.data.metrics)})").first
    heading.hover()
    page.mouse.wheel(0, 700)  # the metrics table into view
    page.wait_for_timeout(500)
    shot(page, artifacts, "mlflow_run_metrics")


def test_dagster_and_mlflow_uis_in_chromium(ui_home, test_artifacts, tmp_path):
    from playwright.sync_api import sync_playwright

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["PYTHONPATH"] = str(ROOT)
    dagster_port, mlflow_port = free_port(), free_port()
    webserver = [
        sys.executable, "-m", "dagster_webserver", "-w", str(ROOT / "workspace.yaml"),
        "-h", "127.0.0.1", "-p", str(dagster_port),
    ]  # fmt: skip
    mlflow_ui = [
        sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", f"sqlite:///{ui_home}/mlflow.db",
        "-h", "127.0.0.1", "-p", str(mlflow_port), "--workers", "1",
    ]  # fmt: skip
    dagster_base, mlflow_base = f"http://127.0.0.1:{dagster_port}", f"http://127.0.0.1:{mlflow_port}"
    print(f"\nscreenshots: {test_artifacts}")
    STARTED[0] = time.monotonic()
    with (
        service(mlflow_ui, tmp_path / "mlflow.log", None, env) as mlflow_proc,  # starts beside the webserver
        service(webserver, tmp_path / "dagster.log", f"{dagster_base}/server_info", env),
        sync_playwright() as pw,
    ):
        print(f"  webserver ready at {time.monotonic() - STARTED[0]:.0f}s")
        browser = pw.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        # tall: the asset list is virtualized, and every stage's row must be rendered to be found
        page = browser.new_page(viewport={"width": 1600, "height": 3000})
        check_asset_graph(page, dagster_base, test_artifacts)
        run = launch_from_ui(page, dagster_base, ui_home, test_artifacts)
        check_asset_plot(page, dagster_base, test_artifacts)
        instance = dg.DagsterInstance.from_config(str(ui_home / ".dagster"))
        event = instance.get_latest_materialization_event(dg.AssetKey(LAUNCHED))
        assert event.run_id == run.run_id
        wait_ready(mlflow_proc, f"{mlflow_base}/health", tmp_path / "mlflow.log")
        check_mlflow_run_page(
            page, mlflow_base, event.asset_materialization.metadata["mlflow_run_id"].value, test_artifacts
        )
        browser.close()
    assert sorted(p.name for p in test_artifacts.iterdir()) == [
        "dagster_asset_graph.png",
        "dagster_asset_plot.png",
        "dagster_launch_dialog.png",
        "dagster_run_succeeded.png",
        "mlflow_run_metrics.png",
    ]
