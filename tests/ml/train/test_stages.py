"""ml/train/stages.py: the stage configs' ramp, annealing LR, checkpoint picks and training configs."""

import numpy as np
import pytest
import torch
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


def _word_tokenizer():
    """Whole words as tokens: ``g`` (general), ``c`` (code), BOS = 0, EOS = 1."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from ml.tokens.tokenizer import BOS, EOS

    tok = Tokenizer(models.WordLevel({BOS: 0, EOS: 1, "g": 2, "c": 3}, unk_token="g"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([BOS, EOS])
    return tok


def test_the_candidate_class_holds_its_share_of_the_tokens_in_the_sampled_batches(tmp_path):
    """Seven general documents and one code document of 10 words (12 tokens with BOS/EOS) in training, one
    general document held out: 30% code needs 3 copies of the code document (0.3 / 0.7 * 84 / 12), which
    the mix writes; one epoch of the engine's loader then holds 30 ``c`` tokens of 100."""
    import pandas as pd

    from ml.tokens.shards import ShardConfig, heldout_mask, write_token_shards
    from ml.train.data import TokenLoader
    from ml.train.stages import candidate_mix, default_mix_sample

    shards = ShardConfig(val_fraction=0.1, seed=0)
    # distinct texts (the split hashes the text), each word an unknown one: token ``g``
    pool = pd.DataFrame({"id": [f"g{i}" for i in range(40)], "text": [f"g{i} " * 10 for i in range(40)]})
    val = heldout_mask(pool, shards.val_fraction, shards.seed)
    general = pd.concat([pool[~val].iloc[:7], pool[val].iloc[:1]], ignore_index=True)
    df = pd.DataFrame(
        {
            "id": [*general["id"], "code-doc"],
            "text": [*general["text"], "c " * 10],
            "domain": ["general"] * 8 + ["code"],
        }
    )
    assert not heldout_mask(df.iloc[8:], shards.val_fraction, shards.seed)[0]
    tok = _word_tokenizer()
    main = write_token_shards(df, tok, tmp_path / "main", shards)
    assert main.tokens_per_class["train"] == {"code": 12, "general": 84}
    mix = candidate_mix(df, tok, tmp_path / "mix", shards, "code", 0.3, main.tokens_per_class["train"])
    assert mix["token_shares"] == {"code": 0.3, "general": 0.7}
    assert mix["docs"] == 11  # 8 general + 3 copies of the code document
    # 120 training tokens: 7 windows of 17 (+1) tokens cover tokens 0..118, all but the last EOS
    loader = TokenLoader(tmp_path / "mix", batch_size=1, seq_len=17)
    assert (loader.num_windows, loader.batches_per_epoch) == (7, 7)
    seen = torch.cat([next(loader).inputs.flatten() for _ in range(loader.batches_per_epoch)])
    assert (int((seen == 3).sum()), int((seen == 2).sum())) == (30, 70)
    # a sample of ~40 training tokens: 12 code (one document), 28 general -> two 12-token documents (a third
    # would overshoot by more than it falls short); the held-out document is kept
    small = candidate_mix(
        df, tok, tmp_path / "small", shards, "code", 0.3, main.tokens_per_class["train"], 40
    )
    assert small["token_shares"] == {"code": 12 / 36, "general": 24 / 36} and small["docs"] == 4
    # the control's sample of the unchanged mix: 5 code tokens are nearer 0 than one 12-token document
    control = default_mix_sample(df, tok, tmp_path / "control", shards, main.tokens_per_class["train"], 40)
    assert control["token_shares"] == {"general": 1.0} and control["docs"] == 4  # 3 general + held out
    # the held-out document stays the one general document, once
    assert TokenLoader(tmp_path / "mix", "val", batch_size=1, seq_len=11).stream.read(0, 12).tolist() == [
        0,
        *[2] * 10,
        1,
    ]


def test_mix_targets_split_a_token_budget_by_the_default_proportions():
    from ml.train.stages import mix_targets

    tokens = {"code": 100, "general": 500, "multilingual": 200, "math_reasoning": 0}
    assert mix_targets(tokens, 1000, "code", 0.3) == {"code": 300, "general": 500, "multilingual": 200}
    assert mix_targets(tokens, 1000) == {"code": 125, "general": 625, "multilingual": 250}


def test_data_value_config_compares_everything_but_the_share():
    from ml.train.stages import DataValueConfig

    cfg = DataValueConfig.from_preset("tiny")
    assert cfg.share == 0.3 and cfg.anneal.train.steps == 16 and cfg.mc_items == 200
    assert cfg.same_anneal(cfg.replace(share=0.5))
    assert not cfg.same_anneal(cfg.replace(mc_items=100))
    with pytest.raises(ConfigError, match="share must lie in"):
        DataValueConfig.from_preset("tiny", share=1.0)
