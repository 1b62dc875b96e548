"""TrainConfig: nested model/optimizer/schedule/data configs, presets, YAML, replace_model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ml.config import ConfigError
from ml.model.llama import ModelConfig
from ml.train.config import TrainConfig


def test_model_from_a_preset_name_or_fields_over_the_preset(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("model: small\ndata:\n  seq_len: 256\noptimizer:\n  lr: 0.01\n")
    cfg = TrainConfig.from_yaml(path)
    assert cfg.model == ModelConfig.from_preset("small")
    assert (cfg.data.seq_len, cfg.data.batch_size, cfg.optimizer.lr) == (256, 8, 0.01)
    path.write_text("model:\n  vocab_size: 300\n")
    assert TrainConfig.from_yaml(path, preset="small").model == ModelConfig.from_preset(
        "small", vocab_size=300
    )
    assert TrainConfig.from_yaml(path).model == ModelConfig.from_preset("tiny", vocab_size=300)


def test_unknown_nested_key_names_the_path():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) TrainConfig\.model\.xyz"):
        TrainConfig.from_dict({"model": {"xyz": 1}})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) TrainConfig\.data\.batch"):
        TrainConfig.from_preset("tiny", data={"batch": 1})
    with pytest.raises(
        ConfigError, match=re.escape("task must be pretrain | sft | reward | dpo, got 'rlhf'")
    ):
        TrainConfig.from_dict({"task": "rlhf"})


def test_replace_model_changes_only_the_model():
    cfg = TrainConfig.from_preset("small")
    bigger = cfg.replace_model(vocab_size=50_000)
    assert bigger.model == ModelConfig.from_preset("small", vocab_size=50_000)
    assert bigger.replace(model=cfg.model) == cfg
    with pytest.raises(ConfigError, match="ModelConfig.dim=100 is not divisible by n_heads=12"):
        cfg.replace_model(dim=100)


def test_405b_preset_is_the_paper_recipe():
    cfg = TrainConfig.from_preset("405b")
    assert (cfg.optimizer.lr, cfg.schedule.warmup_steps, cfg.schedule.min_lr_ratio) == (8e-5, 8000, 0.01)
    assert (cfg.schedule.decay_steps, cfg.steps, cfg.model.dim, cfg.model.n_layers) == (
        1_200_000,
        1_200_000,
        16384,
        126,
    )
    assert cfg.schedule.batch_ramp[1] == (252_000_000, 8 * 2**20, 8192)
    assert cfg.to_flat_dict()["schedule.batch_ramp"][0] == [0, 4 * 2**20, 4096]


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).resolve().parents[3] / "configs").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_shipped_gpu_config_loads_over_the_small_preset(path):
    """The YAML files the GPU commands in benchmarks/NOTES.md pass to ``ml.train.run --preset small``."""
    cfg = TrainConfig.from_yaml(path, preset="small")
    assert cfg.precision == "bf16" and cfg.compile and cfg.data.doc_mask
