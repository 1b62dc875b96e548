"""Schedules, automation and code versions (dagster_project/schedules.py, stage_asset's defaults)."""

import datetime

import dagster as dg

from dagster_project.definitions import defs, stage_names
from dagster_project.partitions import SNAPSHOTS
from dagster_project.schedules import weekly_crawl
from dagster_project.stage import code_version


def test_schedules_and_sensors_and_their_default_status():
    schedules = {s.name: (s.cron_schedule, s.default_status) for s in defs.schedules}
    assert schedules == {
        "weekly_crawl": ("0 3 * * 1", dg.DefaultScheduleStatus.RUNNING),
        "weekly_data_refresh": ("0 3 * * 1", dg.DefaultScheduleStatus.STOPPED),
    }
    sensors = {s.name: s.default_status for s in defs.sensors}
    assert sensors == {
        "lifecycle_automation": dg.DefaultSensorStatus.RUNNING,
        "mlflow_parent_on_success": dg.DefaultSensorStatus.RUNNING,
        "mlflow_parent_on_failure": dg.DefaultSensorStatus.RUNNING,
        "mlflow_parent_on_canceled": dg.DefaultSensorStatus.RUNNING,
    }


def test_weekly_crawl_adds_a_dated_snapshot_and_requests_its_crawl():
    when = datetime.datetime(2026, 12, 7, 3, 0, tzinfo=datetime.UTC)
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=when)
        request = weekly_crawl(context)
        assert (request.partition_key, request.run_key) == ("2026-12-07", "crawl-2026-12-07")
        assert instance.get_dynamic_partitions(SNAPSHOTS.name) == ["2026-12-07"]
        weekly_crawl(context)  # evaluated again: the partition is not added twice
        assert instance.get_dynamic_partitions(SNAPSHOTS.name) == ["2026-12-07"]


def test_every_stage_has_a_code_version_and_follows_its_upstream():
    """Eager everywhere but in the post-training rounds, which run in order (round k needs round k-1's chat
    model, an edge the automation cannot see)."""
    graph = defs.resolve_asset_graph()
    rounds = {"reward_model", "rejection_samples", "sft_model", "dpo_model", "chat_model"}
    for name in stage_names():
        key = dg.AssetKey(name)
        node = graph.get(key)
        assert len(node.code_version) == 16, name
        if name in rounds:
            assert node.automation_condition is None, name
        else:
            assert node.automation_condition.get_label() == "eager", name


def test_code_version_changes_with_exactly_the_files_on_the_import_graph(tmp_path):
    (tmp_path / "ml").mkdir()
    (tmp_path / "assets").mkdir()
    for pkg in ("ml", "assets"):
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "ml" / "used.py").write_text("X = 1\n")
    (tmp_path / "ml" / "unused.py").write_text("Y = 1\n")
    (tmp_path / "assets" / "stage.py").write_text("from ml.used import X\n")
    before = code_version("assets.stage", root=tmp_path)
    (tmp_path / "ml" / "unused.py").write_text("Y = 2\n")
    code_version.cache_clear()
    assert code_version("assets.stage", root=tmp_path) == before
    (tmp_path / "ml" / "used.py").write_text("X = 2\n")
    code_version.cache_clear()
    assert code_version("assets.stage", root=tmp_path) != before
