from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from ml.config import ConfigError, StageConfig, preset_from_env


@dataclass(frozen=True)
class DemoConfig(StageConfig):
    width: int = 8
    lr: float = 1e-3
    langs: tuple[str, ...] = ("en",)
    out: Path = Path("x")
    PRESETS: ClassVar[dict] = {"tiny": {"width": 4}, "small": {"width": 64, "lr": 3e-4}}


def test_preset_then_override():
    cfg = DemoConfig.from_preset("small", lr=1)
    assert (cfg.width, cfg.lr, type(cfg.lr)) == (64, 1.0, float)


def test_unknown_key_names_it():
    with pytest.raises(ConfigError, match="unknown key.*widht.*valid keys are langs, lr, out, width"):
        DemoConfig.from_dict({"widht": 3})


def test_wrong_type_names_field():
    with pytest.raises(ConfigError, match=r"DemoConfig.width: expected int, got str 'wide'"):
        DemoConfig.from_dict({"width": "wide"})


def test_yaml_round_trip(tmp_path):
    cfg = DemoConfig.from_preset("tiny", langs=["de", "fr"])
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert DemoConfig.from_yaml(path) == cfg
    assert cfg.langs == ("de", "fr")


def test_yaml_not_a_mapping(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        DemoConfig.from_yaml(path)


def test_preset_env(monkeypatch):
    monkeypatch.setenv("LIFECYCLE_PRESET", "small")
    assert preset_from_env() == "small"
    assert DemoConfig.from_preset().width == 64
    monkeypatch.setenv("LIFECYCLE_PRESET", "huge")
    with pytest.raises(ConfigError, match="LIFECYCLE_PRESET='huge' is not a preset"):
        preset_from_env()


@dataclass(frozen=True)
class InnerConfig(StageConfig):
    dim: int = 1
    heads: int = 1
    PRESETS: ClassVar[dict] = {"tiny": {"dim": 8, "heads": 2}, "small": {"dim": 64, "heads": 4}}


@dataclass(frozen=True)
class OuterConfig(StageConfig):
    steps: int = 10
    inner: InnerConfig = InnerConfig(dim=2)
    PRESETS: ClassVar[dict] = {
        "tiny": {"inner": "tiny"},
        "small": {"steps": 99, "inner": {"preset": "small"}},
    }


def test_nested_field_from_preset_name_mapping_or_instance():
    assert OuterConfig.from_dict({"inner": "small"}).inner == InnerConfig(dim=64, heads=4)
    assert OuterConfig.from_dict({"inner": {"heads": 3}}).inner == InnerConfig(dim=2, heads=3)  # over default
    assert OuterConfig.from_dict({"inner": {"preset": "tiny", "heads": 5}}).inner == InnerConfig(
        dim=8, heads=5
    )
    assert OuterConfig.from_dict({"inner": InnerConfig(dim=7)}).inner == InnerConfig(dim=7)
    assert OuterConfig.from_dict({}).inner == InnerConfig(dim=2)


def test_nested_errors_name_the_path():
    with pytest.raises(
        ConfigError, match=r"unknown key\(s\) OuterConfig\.inner\.xyz; valid keys are dim, heads"
    ):
        OuterConfig.from_dict({"inner": {"xyz": 1}})
    with pytest.raises(ConfigError, match=r"OuterConfig\.inner\.dim: expected int, got str 'wide'"):
        OuterConfig.from_dict({"inner": {"dim": "wide"}})
    with pytest.raises(ConfigError, match=r"OuterConfig\.inner: InnerConfig: unknown preset 'huge'"):
        OuterConfig.from_dict({"inner": "huge"})
    with pytest.raises(
        ConfigError, match=r"OuterConfig\.inner: expected a preset name or a mapping, got int"
    ):
        OuterConfig.from_dict({"inner": 3})


def test_precedence_preset_then_yaml_then_overrides(tmp_path):
    """Each layer replaces plain fields and merges a nested mapping key by key over the layer below."""
    path = tmp_path / "c.yaml"
    path.write_text("inner:\n  heads: 7\n")
    from_yaml = OuterConfig.from_yaml(path, preset="small")
    assert (from_yaml.steps, from_yaml.inner) == (99, InnerConfig(dim=64, heads=7))
    final = from_yaml.override({"steps": 5, "inner": {"dim": 32}})
    assert (final.steps, final.inner) == (5, InnerConfig(dim=32, heads=7))
    assert from_yaml.override({"inner": "tiny"}).inner == InnerConfig(dim=8, heads=2)  # a name replaces
    assert OuterConfig.from_preset("tiny", inner={"heads": 9}).inner == InnerConfig(dim=8, heads=9)


def test_nested_round_trip_and_flat_dict(tmp_path):
    cfg = OuterConfig.from_preset("small", inner={"heads": 3})
    assert cfg.to_dict() == {"steps": 99, "inner": {"dim": 64, "heads": 3}}
    assert cfg.to_flat_dict() == {"steps": 99, "inner.dim": 64, "inner.heads": 3}
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert OuterConfig.from_yaml(path) == cfg
