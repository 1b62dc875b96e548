"""``lifecycle``'s Dagster instance settings: written once, merged into a dagster.yaml people edited."""

import yaml

from dagster_project.cli import instance_settings


def test_new_dagster_yaml_has_no_telemetry_and_no_community_popup(tmp_path):
    path = tmp_path / "dagster.yaml"
    instance_settings(path)
    assert yaml.safe_load(path.read_text()) == {"telemetry": {"enabled": False}, "nux": {"enabled": False}}


def test_settings_people_wrote_are_kept(tmp_path):
    path = tmp_path / "dagster.yaml"
    storage = {"postgres": {"postgres_url": "postgresql+psycopg2://u@127.0.0.1:5432/dagster"}}
    path.write_text(yaml.safe_dump({"storage": storage, "telemetry": {"enabled": True}}))
    instance_settings(path)
    assert yaml.safe_load(path.read_text()) == {
        "storage": storage,
        "telemetry": {"enabled": True},
        "nux": {"enabled": False},
    }
    before = path.stat().st_mtime_ns
    instance_settings(path)  # nothing missing: the file is not rewritten
    assert path.stat().st_mtime_ns == before
