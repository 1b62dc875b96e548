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
