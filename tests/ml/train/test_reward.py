"""Reward model: pairwise loss without margin on a fixed case, ranking edited > chosen > rejected, training."""

from __future__ import annotations

import math

import pytest
import torch
from posttrain_helpers import ONE, config, preference_records, tiny_hf_model, write_data

from ml.model.hf import load_hf
from ml.train.engine import Trainer
from ml.train.tasks.reward import RewardTask, ranked_pairs, reward_ranking_loss, sequence_rewards


def test_ranking_loss_fixed_case():
    rewards = torch.tensor([2.0, 1.0, 0.5, 0.0, 1.0])  # record 0: edited, chosen, rejected; record 1: 2
    group = torch.tensor([0, 0, 0, 1, 1])
    rank = torch.tensor([0, 1, 2, 0, 1])
    i, j = ranked_pairs(group, rank)
    assert list(zip(i.tolist(), j.tolist(), strict=True)) == [(0, 1), (0, 2), (1, 2), (3, 4)]
    loss, parts = reward_ranking_loss(rewards, group, rank)
    gaps = [1.0, 1.5, 0.5, -1.0]
    assert loss.item() == pytest.approx(sum(math.log1p(math.exp(-g)) for g in gaps) / 4, abs=1e-6)
    assert loss.item() == pytest.approx(0.5755034, abs=1e-6)
    assert parts["pair_accuracy"].item() == 0.75 and parts["reward_gap"].item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no ranked pair"):
        reward_ranking_loss(rewards[:1], group[:1], rank[:1])


def test_batch_rows_rank_and_last_token(tmp_path):
    data = write_data(tmp_path, preference_records(4), preference_records(2, prefix="v"))
    task = RewardTask(config(task="reward"), data, ONE)
    batch = task.collate("train", [0, 1])  # record 0 has an edited response, record 1 does not
    assert batch["group"].tolist() == [0, 0, 0, 1, 1] and batch["rank"].tolist() == [0, 1, 2, 0, 1]
    assert (batch["inputs"][torch.arange(5), batch["last"]] == 265).all()  # the reward is read at eot


def test_reward_model_trains_from_the_base_and_exports(tmp_path):
    torch.set_num_threads(1)
    _, base = tiny_hf_model(tmp_path / "base")
    data = write_data(tmp_path / "d", preference_records(12), preference_records(6, prefix="v"))
    cfg = config(
        task="reward", init_from=str(base), steps=30, optimizer=dict(lr=1e-2), data=dict(batch_size=4)
    )
    task = RewardTask(cfg, data, ONE)
    assert task.reward_id == 258  # <|reserved_special_token_0|>: the scalar head is its LM-head row
    trainer = Trainer(cfg, task, tmp_path / "out", ONE)
    trainer.build()
    trainer.init_from(cfg.init_from)
    before = trainer.evaluate()
    for _ in range(30):
        trainer.train_step()
    after = trainer.evaluate()
    assert after["val_loss"] < before["val_loss"] and after["pair_accuracy"] == 1.0, (before, after)
    exported = load_hf(trainer.export()).eval()  # an ordinary Llama checkpoint
    batch = task.collate("val", [0, 1])
    with torch.no_grad():
        rewards = sequence_rewards(exported, batch["inputs"], batch["last"], task.reward_id)
    loss, parts = reward_ranking_loss(rewards, batch["group"], batch["rank"])
    assert parts["pair_accuracy"].item() == 1.0
