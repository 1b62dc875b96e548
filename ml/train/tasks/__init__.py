"""Training objectives of the one engine (ml/train/engine.py); the interface is in ``base``."""

from __future__ import annotations

from pathlib import Path

from ml.train.config import TrainConfig
from ml.train.dist import DistInfo
from ml.train.tasks.base import Task


def build_task(cfg: TrainConfig, data_dir: Path, info: DistInfo) -> Task:
    """The task named by ``cfg.task`` over the data in ``data_dir``."""
    if cfg.task == "pretrain":
        from ml.train.tasks.pretrain import PretrainTask

        return PretrainTask(cfg, data_dir, info)
    if cfg.task == "sft":
        from ml.train.tasks.sft import SFTTask

        return SFTTask(cfg, data_dir, info)
    if cfg.task == "reward":
        from ml.train.tasks.reward import RewardTask

        return RewardTask(cfg, data_dir, info)
    if cfg.task == "dpo":
        from ml.train.tasks.dpo import DPOTask

        return DPOTask(cfg, data_dir, info)
    raise ValueError(f"unknown task {cfg.task!r}")
