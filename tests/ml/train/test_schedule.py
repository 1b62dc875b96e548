"""LR schedule and batch ramp: exact values at chosen steps, hand-computed."""

import math

import pytest

from ml.train.config import TrainConfig
from ml.train.schedule import PAPER_405B_RAMP, LRSchedule, batch_schedule, lr_at

COS = LRSchedule(peak_lr=1e-3, warmup_steps=10, total_steps=110, min_lr_ratio=0.1, decay="cosine")


def test_warmup_is_linear_and_reaches_peak_on_last_warmup_step():
    assert lr_at(0, COS) == pytest.approx(1e-4, rel=1e-12)  # 1e-3 * 1/10
    assert lr_at(4, COS) == pytest.approx(5e-4, rel=1e-12)  # 1e-3 * 5/10
    assert lr_at(9, COS) == pytest.approx(1e-3, rel=1e-12)


def test_cosine_start_middle_end():
    assert lr_at(10, COS) == pytest.approx(1e-3, rel=1e-12)  # p = 0
    # p = 0.5: min + (peak - min) / 2 = 1e-4 + 4.5e-4
    assert lr_at(60, COS) == pytest.approx(5.5e-4, rel=1e-12)
    # p = 0.25: 1e-4 + 9e-4 * (1 + cos(pi/4)) / 2
    assert lr_at(35, COS) == pytest.approx(1e-4 + 9e-4 * (1 + math.sqrt(0.5)) / 2, rel=1e-12)
    assert lr_at(110, COS) == pytest.approx(1e-4, rel=1e-12)
    assert lr_at(5000, COS) == pytest.approx(1e-4, rel=1e-12)  # stays at min_lr


def test_linear_decay_to_zero_for_annealing():
    lin = LRSchedule(peak_lr=2e-4, warmup_steps=0, total_steps=100, min_lr_ratio=0.0, decay="linear")
    assert lr_at(0, lin) == pytest.approx(2e-4, rel=1e-12)
    assert lr_at(25, lin) == pytest.approx(1.5e-4, rel=1e-12)
    assert lr_at(50, lin) == pytest.approx(1e-4, rel=1e-12)
    assert lr_at(100, lin) == 0.0


def test_constant_after_warmup():
    const = LRSchedule(peak_lr=3e-4, warmup_steps=4, total_steps=10, decay="constant")
    assert [lr_at(s, const) for s in range(6)] == pytest.approx([7.5e-5, 1.5e-4, 2.25e-4, 3e-4, 3e-4, 3e-4])


def test_paper_405b_recipe():
    sched = TrainConfig.from_preset("405b").lr_schedule
    assert (sched.peak_lr, sched.warmup_steps, sched.total_steps) == (8e-5, 8000, 1_200_000)
    assert lr_at(0, sched) == pytest.approx(1e-8, rel=1e-12)  # 8e-5 / 8000
    assert lr_at(7999, sched) == pytest.approx(8e-5, rel=1e-12)
    assert lr_at(604_000, sched) == pytest.approx((8e-5 + 8e-7) / 2, rel=1e-12)  # halfway through decay
    assert lr_at(1_200_000, sched) == pytest.approx(8e-7, rel=1e-12)


def test_bad_schedule_is_refused():
    with pytest.raises(ValueError, match="decay"):
        LRSchedule(peak_lr=1e-3, warmup_steps=0, total_steps=10, decay="step")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="warmup_steps"):
        LRSchedule(peak_lr=1e-3, warmup_steps=20, total_steps=10)
    with pytest.raises(ValueError, match="step must be >= 0"):
        lr_at(-1, COS)


def test_batch_ramp_at_paper_boundaries():
    four_m, eight_m, sixteen_m = 4 * 2**20, 8 * 2**20, 16 * 2**20
    assert batch_schedule(0) == (four_m, 4096)
    assert batch_schedule(251_999_999) == (four_m, 4096)
    assert batch_schedule(252_000_000) == (eight_m, 8192)
    assert batch_schedule(2_869_999_999_999) == (eight_m, 8192)
    assert batch_schedule(2_870_000_000_000) == (sixteen_m, 8192)
    assert batch_schedule(15_000_000_000_000, PAPER_405B_RAMP) == (sixteen_m, 8192)
    # 4M tokens at 4,096 is 1,024 sequences; 16M at 8,192 is 2,048
    assert four_m // 4096 == 1024 and sixteen_m // 8192 == 2048


def test_batch_ramp_validation():
    with pytest.raises(ValueError, match="start at 0"):
        batch_schedule(0, ((10, 1, 1),))
    with pytest.raises(ValueError, match="increase"):
        batch_schedule(0, ((0, 1, 1), (5, 2, 2), (5, 4, 4)))
