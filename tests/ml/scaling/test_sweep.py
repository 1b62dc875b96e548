"""A sweep cell becomes the engine config of the paper's recipe shape, trained for exactly its planned steps."""

from ml.scaling.plan import SweepConfig, plan_sweep
from ml.scaling.sweep import cell_train_config
from ml.train.schedule import lr_at


def test_cell_config_is_the_recipe_at_the_cells_size_and_steps():
    cfg = SweepConfig.from_preset("tiny")
    cell = next(c for c in plan_sweep(cfg, vocab_size=4096) if c.key == "3e11_s24")
    train = cell_train_config(cfg, cell)
    assert (cell.steps, cell.tokens) == (1713, 438_528)  # benchmarks/NOTES.md
    assert (train.model.dim, train.model.n_layers, train.model.vocab_size, train.model.max_seq_len) == (
        24,
        2,
        4096,
        64,
    )
    assert (train.steps, train.data.seq_len, train.data.batch_size, train.data.grad_accum) == (1713, 64, 4, 1)
    assert (train.optimizer.lr, train.optimizer.weight_decay) == (8e-3, 0.1)
    assert (train.schedule.warmup_steps, train.schedule.decay, train.schedule.min_lr_ratio) == (
        172,
        "cosine",
        0.1,
    )
    assert (train.eval_every, train.eval_batches) == (0, 64)  # once, at the end, on 16,384 tokens
    sched = train.lr_schedule
    assert lr_at(171, sched) == 8e-3  # the last warmup step reaches the peak
    assert abs(lr_at(1712, sched) - 8e-4) < 1e-6  # cosine down to 0.1x peak
    assert train.device == "cpu" and train.seed == cfg.seed
