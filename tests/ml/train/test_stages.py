"""ml/train/stages.py: the stage configs' ramp, annealing LR, checkpoint picks and training configs."""

import numpy as np
import pytest
from train_helpers import tiny_config

from ml.config import ConfigError
from ml.train.config import TrainConfig
from ml.train.dist import DistInfo
from ml.train.schedule import batch_schedule, lr_at
from ml.train.stages import TINY_RAMP, AnnealConfig, AverageConfig, InitialConfig, LongContextConfig
from ml.train.tasks.pretrain import PretrainTask


def test_tiny_ramp_gives_the_configured_batch_and_sequence_at_chosen_token_counts():
    ramp = InitialConfig.from_preset("tiny").train.schedule.batch_ramp
    assert ramp == TINY_RAMP
    assert batch_schedule(0, ramp) == (1024, 128)
    assert batch_schedule(262_143, ramp) == (1024, 128)
    assert batch_schedule(262_144, ramp) == (2048, 256)
    assert batch_schedule(917_503, ramp) == (2048, 256)
    assert batch_schedule(917_504, ramp) == (4096, 256)
    # 256 steps of 1,024 + 320 of 2,048 + 32 of 4,096 tokens = the preset's 608 steps and 2^20 tokens
    assert 256 * 1024 + 320 * 2048 + 32 * 4096 == 2**20
    assert InitialConfig.from_preset("tiny").train.steps == 256 + 320 + 32


def test_the_task_follows_the_ramp(token_shards):
    ramp = ((0, 512, 32), (1024, 1024, 64), (4096, 2048, 64))
    cfg = TrainConfig.from_dict(
        tiny_config(schedule=dict(warmup_steps=1, batch_ramp=ramp), data=dict(batch_size=8))
    )
    task = PretrainTask(
        cfg,
        token_shards,
        DistInfo(rank=0, world_size=1, local_rank=0, device=__import__("torch").device("cpu")),
    )
    assert (task.micro_batches(0), task.seq_len, task.next_batch()["inputs"].shape) == (2, 32, (8, 32))
    assert (task.micro_batches(1024), task.seq_len, task.next_batch()["inputs"].shape) == (2, 64, (8, 64))
    assert (task.micro_batches(4096), task.seq_len) == (4, 64)


def test_annealing_lr_goes_linearly_to_exactly_zero_at_the_last_step():
    cfg = AnnealConfig.from_preset("tiny")
    train = cfg.anneal_train("/weights")
    steps, peak = train.steps, train.optimizer.lr
    assert (steps, train.init_from, train.schedule.warmup_steps) == (80, "/weights", 0)
    assert lr_at(0, train.lr_schedule) == peak
    assert lr_at(steps - 1, train.lr_schedule) == 0.0  # the update logged as the last step
    assert lr_at(40, train.lr_schedule) == pytest.approx(peak * (1 - 40 / 79), rel=1e-12)


def test_average_picks_the_newest_checkpoints_spacing_apart():
    steps = [16, 32, 48, 64, 80]
    assert AverageConfig(count=4).pick(steps) == [32, 48, 64, 80]
    assert AverageConfig(count=3, spacing=2).pick(steps) == [16, 48, 80]
    with pytest.raises(ValueError, match="need 7, annealing kept 5"):
        AverageConfig(count=4, spacing=2).pick(steps)


def test_long_context_stage_config_keeps_tokens_per_step_and_sets_rope_theta():
    cfg = LongContextConfig.from_preset("tiny")
    assert cfg.seq_lens == (512, 1024) and cfg.train.model.max_seq_len == 1024
    for seq_len, batch in ((512, 4), (1024, 2)):
        stage = cfg.stage_train(seq_len, "/prev")
        assert (stage.data.seq_len, stage.data.batch_size, stage.init_from) == (seq_len, batch, "/prev")
        assert stage.model.rope_theta == cfg.rope_theta and stage.schedule.batch_ramp == ()
    with pytest.raises(ConfigError, match="seq_lens ends at 2048"):
        LongContextConfig.from_preset("tiny", seq_lens=(512, 2048))


@pytest.mark.parametrize("preset", ["tiny", "small", "8b", "70b", "405b"])
def test_every_stage_config_has_every_preset(preset):
    from ml.train.stages import BaseEvalConfig, DataValueConfig

    for cls in (
        InitialConfig,
        LongContextConfig,
        AnnealConfig,
        AverageConfig,
        DataValueConfig,
        BaseEvalConfig,
    ):
        assert cls.from_preset(preset).to_dict() == cls.from_dict(cls.from_preset(preset).to_dict()).to_dict()
    assert np.isfinite(LongContextConfig.from_preset(preset).rope_theta)
