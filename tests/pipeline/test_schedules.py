"""Schedules, automation and code versions (dagster_project/schedules.py, stage_asset's defaults)."""

import datetime

import dagster as dg
from pipeline_helpers import ROUND_ASSETS

from dagster_project.definitions import defs, stage_names
from dagster_project.partitions import ROUND_KEYS, SNAPSHOTS
from dagster_project.schedules import next_round_request, nightly_evals, weekly_crawl
from dagster_project.stage import code_version


def test_schedules_and_sensors_and_their_default_status():
    schedules = {s.name: (s.cron_schedule, s.default_status) for s in defs.schedules}
    assert schedules == {
        "weekly_crawl": ("0 3 * * 1", dg.DefaultScheduleStatus.RUNNING),
        "weekly_data_refresh": ("0 3 * * 1", dg.DefaultScheduleStatus.STOPPED),
        "nightly_evals": ("0 2 * * *", dg.DefaultScheduleStatus.RUNNING),
    }
    sensors = {s.name: s.default_status for s in defs.sensors}
    assert sensors == {
        "lifecycle_automation": dg.DefaultSensorStatus.RUNNING,
        "mlflow_parent_on_success": dg.DefaultSensorStatus.RUNNING,
        "mlflow_parent_on_failure": dg.DefaultSensorStatus.RUNNING,
        "mlflow_parent_on_canceled": dg.DefaultSensorStatus.RUNNING,
        "next_post_training_round": dg.DefaultSensorStatus.RUNNING,
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


def test_nightly_evals_evaluate_the_newest_base_model():
    when = datetime.datetime(2026, 12, 8, 2, 0, tzinfo=datetime.UTC)
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=when)
        assert isinstance(nightly_evals(context), dg.SkipReason)  # no base model yet
        instance.add_dynamic_partitions(SNAPSHOTS.name, ["local-web", "2026-12-07"])
        for snapshot in ("2026-12-07", "local-web"):  # local-web's base model is the newer one
            instance.report_runless_asset_event(dg.AssetMaterialization("base_model", partition=snapshot))
        request = nightly_evals(context)
        assert (request.partition_key, request.run_key) == ("local-web", "evals-2026-12-08-local-web")
    job = defs.resolve_job_def(nightly_evals.job_name)
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == {
        "base_model_evals",
        "safety_evals",
    }


def test_next_round_starts_only_after_a_current_chat_promotion_and_only_while_planned():
    with dg.instance_for_test() as instance:
        skip = next_round_request(instance, "local-web|round-1", "failed", planned=2)
        assert isinstance(skip, dg.SkipReason) and "not current" in skip.skip_message
        request = next_round_request(instance, "local-web|round-1", "current", planned=2)
        assert request.partition_key == "local-web|round-2" and request.run_key == "local-web|round-2"
        assert instance.get_dynamic_partitions(ROUND_KEYS.name) == ["round-2"]
        done = next_round_request(instance, "local-web|round-2", "current", planned=2)
        assert isinstance(done, dg.SkipReason) and "complete" in done.skip_message


def test_every_stage_has_a_code_version_and_follows_its_upstream():
    """Eager everywhere but in the post-training rounds, which run in order (round k needs round k-1's chat
    model, an edge the automation cannot see)."""
    graph = defs.resolve_asset_graph()
    rounds = set(ROUND_ASSETS)
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
