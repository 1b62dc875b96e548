"""Config layers: preset -> YAML -> run config, in that order of precedence; nested dataclass fields; and
the generated run config classes against the stage dataclasses they mirror."""

import dataclasses
import typing

import dagster as dg
import pytest

from dagster_project.configs import RUN_CONFIGS, dagster_config_for, describe_run_configs, resolve_config
from dagster_project.definitions import defs
from ml.config import StageConfig


@dataclasses.dataclass(frozen=True)
class Optim(StageConfig):  # a nested config is a StageConfig, as TrainConfig's optimizer/schedule/data are
    lr: float = 1e-3
    betas: tuple[float, ...] = (0.9, 0.95)


@dataclasses.dataclass(frozen=True)
class Layered(StageConfig):
    width: int = 8
    depth: int = 2
    name: str = "default"
    optim: Optim = Optim()

    PRESETS = {"tiny": {"width": 16, "depth": 3}, "small": {"width": 64, "depth": 4}}


LayeredRun = dagster_config_for(Layered)


def test_preset_then_yaml_then_run_config(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFECYCLE_PRESET", "tiny")
    assert resolve_config(Layered, LayeredRun()) == Layered(width=16, depth=3)
    assert resolve_config(Layered, LayeredRun(preset="small")) == Layered(width=64, depth=4)  # beats env
    yaml_file = tmp_path / "layer.yaml"
    yaml_file.write_text("depth: 7\nname: from-yaml\n")
    from_yaml = resolve_config(Layered, LayeredRun(preset="small", config_yaml=str(yaml_file)))
    assert from_yaml == Layered(width=64, depth=7, name="from-yaml")  # YAML over preset
    top = resolve_config(Layered, LayeredRun(preset="small", config_yaml=str(yaml_file), depth=9))
    assert top == Layered(width=64, depth=9, name="from-yaml")  # run config over YAML


def test_nested_dataclass_field_is_a_nested_optional_config(monkeypatch):
    monkeypatch.setenv("LIFECYCLE_PRESET", "tiny")
    schema = LayeredRun.to_config_schema().as_field().config_type.fields
    assert set(schema) == {"preset", "config_yaml", "width", "depth", "name", "optim"}
    nested = schema["optim"].config_type.inner_type.fields  # Noneable(optim fields)
    assert set(nested) == {"lr", "betas"} and not any(f.is_required for f in nested.values())
    cfg = resolve_config(Layered, LayeredRun(optim={"betas": [0.8, 0.99]}))
    assert cfg.optim == Optim(lr=1e-3, betas=(0.8, 0.99)) and cfg.width == 16  # merged field by field
    assert resolve_config(Layered, LayeredRun(optim={"lr": None})).optim == Optim()


def _config_class(assets_def) -> type:
    hints = typing.get_type_hints(assets_def.op.compute_fn.decorated_fn)
    return hints["config"]


def test_every_stage_field_is_in_the_launchpad_schema():
    """Each asset's run config is a generated class that mirrors its stage dataclass, field for field."""
    graph = defs.resolve_asset_graph()
    seen = {}
    for key in graph.get_all_asset_keys():
        assets_def = defs.resolve_assets_def(key)
        run_cls = _config_class(assets_def)
        stage_cls = run_cls.stage_config
        schema = set(assets_def.op.config_schema.config_type.fields)  # what the launchpad shows
        stage_fields = {f.name for f in dataclasses.fields(stage_cls)}
        assert stage_fields | {"preset", "config_yaml"} <= schema, key
        seen[key.to_user_string()] = (run_cls.__name__, stage_cls.__name__)
    assert seen["minhash_deduped"] == ("MinHashConfigRun", "MinHashConfig")
    assert seen["pretrain_initial"] == ("InitialConfigRun", "InitialConfig")
    assert seen["raw_crawl"] == ("CrawlConfigRun", "CrawlConfig")
    extra = set(defs.resolve_assets_def(dg.AssetKey("raw_crawl")).op.config_schema.config_type.fields)
    assert {"warc_paths", "local_web_preset", "local_web_yaml"} <= extra
    assert {cls for cls, _ in seen.values()} <= set(RUN_CONFIGS)
    listing = describe_run_configs()
    assert "MinHashConfigRun <- ml.curate.minhash.MinHashConfig" in listing
    assert "  num_perm: typing.Optional[int]" in listing


def test_unknown_yaml_key_names_the_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("widht: 3\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) Layered\.widht"):
        resolve_config(Layered, LayeredRun(config_yaml=str(bad)))
