"""The engine's seams: init_from (HF export or another run's checkpoint), restore before init_from,
frozen models for a task, non-finite loss, init_from on 2 FSDP2 ranks, and the CPU optimizer."""

from __future__ import annotations

import copy

import pytest
import torch
from train_helpers import REPO, read_metrics, tiny_config, torchrun, train_cli, train_in_process, write_config

from ml.model.hf import load_hf
from ml.model.llama import Llama
from ml.train.checkpoint import CheckpointError
from ml.train.config import TrainConfig
from ml.train.dist import init_distributed
from ml.train.engine import Trainer, build_optimizer, train
from ml.train.tasks import build_task
from ml.train.tasks.pretrain import PretrainTask

STEPS = 6
RUN = tiny_config(steps=STEPS, eval_every=STEPS, ckpt_every=STEPS, schedule={"warmup_steps": 2})


@pytest.fixture(autouse=True)
def _one_thread_and_restored_determinism():
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


@pytest.fixture(scope="module")
def source(token_shards, tmp_path_factory):
    """A finished run: its result and work dir (hf/ export, checkpoints/step-00000006)."""
    out = tmp_path_factory.mktemp("source")
    torch.set_num_threads(1)
    return train(TrainConfig.from_dict(RUN), token_shards, out), out


def built(cfg: TrainConfig, shards, out, task=None) -> Trainer:
    info = init_distributed("cpu")
    trainer = Trainer(cfg, task or build_task(cfg, shards, info), out, info)
    trainer.build()
    return trainer


@pytest.mark.parametrize("where", ["hf", "checkpoints/step-00000006", "checkpoints"])
def test_init_from_reproduces_the_source_validation_loss_at_step_0(source, token_shards, tmp_path, where):
    result, out = source
    assert [s for s, _ in result.val_losses] == [STEPS]
    cfg = TrainConfig.from_dict({**RUN, "init_from": str(out / where)})
    trainer = built(cfg, token_shards, tmp_path)
    fresh = trainer.evaluate()["val_loss"]
    assert trainer.init_from(cfg.init_from) == out / ("hf" if where == "hf" else "checkpoints/step-00000006")
    assert trainer.evaluate()["val_loss"] == result.val_losses[-1][1] < fresh - 0.3
    assert (trainer.step, trainer.tokens_seen) == (0, 0)  # weights only: step, optimizer and data start over
    assert all(not s for s in trainer.optimizer.state.values())


def test_a_run_started_from_weights_trains_from_them_and_then_resumes_itself(source, token_shards, tmp_path):
    result, out = source
    cfg = TrainConfig.from_dict({**RUN, "steps": 2, "init_from": str(out / "hf")})
    first = train(cfg, token_shards, tmp_path)
    assert first.start_step == 0 and first.losses[0] < result.losses[0] - 0.5
    resumed = train(cfg.replace(steps=4), token_shards, tmp_path)  # own checkpoint wins over init_from
    assert (resumed.start_step, resumed.final_step) == (2, 4)


@pytest.mark.parametrize("where", ["hf", "checkpoints"])
def test_init_from_refuses_another_shape(source, token_shards, tmp_path, where):
    _, out = source
    cfg = TrainConfig.from_dict(TrainConfig.layer(RUN, {"model": {"dim": 32}, "init_from": str(out / where)}))
    with pytest.raises(CheckpointError, match=r"weights of another model shape: dim=64 \(this run: 32\)"):
        built(cfg, token_shards, tmp_path).init_from(cfg.init_from)
    with pytest.raises(CheckpointError, match="not an HF model directory"):
        built(cfg, token_shards, tmp_path).init_from(tmp_path)


class ReferenceTask(PretrainTask):
    """Pre-training that asks the engine for a frozen reference model, as DPO will."""

    def __init__(self, *args, reference: str):
        super().__init__(*args)
        self.reference, self.frozen = reference, {}

    def frozen_models(self) -> dict[str, str]:
        return {"reference": self.reference}

    def bind_frozen(self, models) -> None:
        self.frozen = models


def test_frozen_models_are_built_loaded_and_never_trained(source, token_shards, tmp_path):
    _, out = source
    cfg = TrainConfig.from_dict(RUN)
    info = init_distributed("cpu")
    task = ReferenceTask(cfg, token_shards, info, reference=str(out / "hf"))
    trainer = built(cfg, token_shards, tmp_path, task)
    reference = task.frozen["reference"]
    want = load_hf(out / "hf").state_dict()
    assert not reference.training and not any(p.requires_grad for p in reference.parameters())
    optimized = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not optimized & {id(p) for p in reference.parameters()}
    trainer.train_step()
    for name, tensor in reference.state_dict().items():
        assert torch.equal(tensor, want[name]), name


class NanTask(PretrainTask):
    def loss(self, model, batch):
        loss, tokens = super().loss(model, batch)
        return loss * float("nan"), tokens


def test_a_non_finite_loss_stops_the_run(token_shards, tmp_path):
    cfg = TrainConfig.from_dict(RUN)
    trainer = built(cfg, token_shards, tmp_path, NanTask(cfg, token_shards, init_distributed("cpu")))
    with pytest.raises(FloatingPointError, match="step 1: training loss is nan"):
        trainer.train_step()


@pytest.mark.slow
def test_init_from_a_checkpoint_on_two_ranks_equals_init_from_its_export_in_one(
    source, token_shards, tmp_path
):
    """2 FSDP2 ranks load the 1-process checkpoint's DCP state resharded; one process loads the HF export."""
    _, out = source
    run = {**RUN, "eval_every": 3, "ckpt_every": 0}
    single = train_in_process({**run, "init_from": str(out / "hf")}, token_shards, tmp_path / "single")
    cfg_path = write_config({**run, "init_from": str(out / "checkpoints")}, tmp_path / "cfg.yaml")
    metrics = tmp_path / "m.jsonl"
    done = torchrun(train_cli(cfg_path, token_shards, tmp_path / "fsdp", metrics), timeout=180, cwd=REPO)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "initialised from" in done.stderr and "step-00000006" in done.stderr
    got = read_metrics(metrics)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in got:
        assert got[step]["loss"] == pytest.approx(single[step]["loss"], rel=1e-4), step
    for step in (3, 6):
        assert got[step]["val_loss"] == pytest.approx(single[step]["val_loss"], rel=1e-4), step


def test_cpu_adamw_is_multi_tensor_and_steps_exactly_like_the_single_tensor_loop():
    cfg = TrainConfig.from_dict(RUN)
    torch.manual_seed(0)
    model = Llama.from_config(cfg.model)
    twin = copy.deepcopy(model)
    multi = build_optimizer(model, cfg, torch.device("cpu"))
    single = build_optimizer(twin, cfg, torch.device("cpu"))
    for group in single.param_groups:
        group["foreach"] = False
    assert [(g["foreach"], g["fused"]) for g in multi.param_groups] == [(True, None)] * 2
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        for p, q in zip(model.parameters(), twin.parameters(), strict=True):
            p.grad = torch.randn(p.shape, generator=gen)
            q.grad = p.grad.clone()
        multi.step()
        single.step()
    pairs = list(zip(model.parameters(), twin.parameters(), strict=True))
    assert all(torch.equal(p, q) for p, q in pairs)
    assert not torch.equal(pairs[0][0], Llama.from_config(cfg.model).embed_tokens.weight)  # it did train


def test_clip_grad_norm_returns_the_norm_before_clipping_as_a_tensor():
    """Gradients (3, 4) and (0, 0, 12): global norm 13 (hand-computed), clipped to norm 1 in place; the
    norm comes back as a 0-d tensor, read by the caller once the optimizer step is queued."""
    from ml.train.engine import clip_grad_norm

    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))
    a.grad, b.grad = torch.tensor([3.0, 4.0]), torch.tensor([0.0, 0.0, 12.0])
    norm = clip_grad_norm([a, b], max_norm=1.0)
    assert isinstance(norm, torch.Tensor) and norm.dim() == 0 and norm.item() == 13.0
    clipped = torch.cat([a.grad, b.grad]).norm().item()
    assert abs(clipped - 1.0) < 1e-6


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_batches_reach_the_device_through_pinned_memory_unchanged():
    from ml.train.engine import to_device

    batch = {"inputs": torch.arange(4096).reshape(2, 2048), "doc_ids": torch.zeros(2, 2048, dtype=torch.long)}
    out = to_device(batch, torch.device("cuda"))
    torch.cuda.synchronize()
    assert all(out[k].is_cuda and torch.equal(out[k].cpu(), batch[k]) for k in batch)
