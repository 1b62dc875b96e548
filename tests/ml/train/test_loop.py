"""The training loop: golden loss curve, gradient accumulation, metrics, HF export, config errors.

Regenerate the golden file after an intended change to the model, optimizer or loader with
``UPDATE_GOLDEN=1 pytest tests/ml/train/test_loop.py -k golden``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from train_helpers import TINY_TRAIN, tiny_config

from ml.config import ConfigError
from ml.model.hf import load_hf
from ml.model.llama import Llama, ModelConfig
from ml.train.checkpoint import CheckpointError
from ml.train.config import TrainConfig
from ml.train.dist import DistInfo
from ml.train.engine import autocast_context, evaluate, train
from ml.train.schedule import lr_at
from ml.train.tasks.pretrain import PretrainTask

GOLDEN = Path(__file__).parent / "golden" / "tiny_loss.json"


pytestmark = pytest.mark.usefixtures("_one_thread")  # conftest.py: one thread, restored after


@pytest.fixture(scope="module")
def tiny_run(token_shards, tmp_path_factory):
    torch.set_num_threads(1)  # TINY_TRAIN sets deterministic=True
    out = tmp_path_factory.mktemp("tiny_run")
    rows: list[tuple[int, dict]] = []
    result = train(
        TrainConfig.from_dict(TINY_TRAIN), token_shards, out, on_metrics=lambda s, m: rows.append((s, m))
    )
    return result, rows, out


def test_golden_loss_curve(tiny_run):
    result, _, _ = tiny_run
    assert len(result.losses) == 50
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        golden = {
            "config": TrainConfig.from_dict(TINY_TRAIN).to_dict(),
            "data": "tests/ml/train/conftest.py write_synthetic_shards(seed=0)",
            "losses": result.losses,
            "val_losses": [list(v) for v in result.val_losses],
        }
        GOLDEN.write_text(json.dumps(golden, indent=1) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert golden["config"] == TrainConfig.from_dict(TINY_TRAIN).to_dict()
    assert result.losses == pytest.approx(golden["losses"], abs=1e-4)
    assert [s for s, _ in result.val_losses] == [s for s, _ in golden["val_losses"]] == [25, 50]
    assert [v for _, v in result.val_losses] == pytest.approx([v for _, v in golden["val_losses"]], abs=1e-4)
    # the run learns: from ~ln(256) = 5.55 down well below it
    assert golden["losses"][0] == pytest.approx(math.log(256), abs=0.1)
    assert golden["losses"][-1] < 3.5


def test_metrics_every_step_with_validation_merged(tiny_run):
    result, rows, _ = tiny_run
    cfg = TrainConfig.from_dict(TINY_TRAIN)
    assert [s for s, _ in rows] == list(range(1, 51))
    assert set(rows[0][1]) == {
        "loss",
        "lr",
        "grad_norm",
        "tokens_per_s",
        "mfu",
        "tokens_seen",
        "batch_tokens",
    }
    assert set(rows[24][1]) == set(rows[0][1]) | {"val_loss", "val_tokens", "val_docs"}
    for step, m in rows:
        assert m["lr"] == lr_at(step - 1, cfg.lr_schedule)
        assert m["tokens_seen"] == step * 8 * 64
        assert m["loss"] == result.losses[step - 1]
        assert m["grad_norm"] > 0 and m["tokens_per_s"] > 0 and 0 < m["mfu"] < 1
    assert result.tokens_seen == 50 * 8 * 64 and result.final_step == 50 and result.start_step == 0
    assert result.peak_flops_source == "cpu-nominal" and result.peak_flops == cfg.cpu_peak_flops


def test_hf_export_and_checkpoint_hold_the_final_weights(tiny_run, token_shards):
    result, _, out = tiny_run
    assert result.hf_dir == out / "hf"
    assert result.checkpoint_dir == out / "checkpoints" / "step-00000050"  # ckpt_every=0: the last step only
    exported = load_hf(result.hf_dir)
    ckpt_model = load_hf(result.checkpoint_dir)  # the checkpoint's weights are HF format too
    for (name, a), b in zip(exported.state_dict().items(), ckpt_model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    tokens = torch.arange(3, 35).reshape(2, 16)
    loss = exported(tokens, labels=tokens).item()
    assert math.isfinite(loss)


def test_grad_accumulation_equals_the_larger_batch(token_shards, tmp_path):
    """batch 8 x 1 micro-batch == batch 4 x 2 micro-batches: same windows, same mean gradient."""
    base = tiny_config(steps=6, eval_every=0, schedule={"warmup_steps": 2})
    full = train(TrainConfig.from_dict(base), token_shards, tmp_path / "a")
    accum = train(
        TrainConfig.from_dict(TrainConfig.layer(base, {"data": {"batch_size": 4, "grad_accum": 2}})),
        token_shards,
        tmp_path / "b",
    )
    assert accum.tokens_seen == full.tokens_seen == 6 * 512
    assert accum.losses == pytest.approx(full.losses, rel=1e-5)


def test_resume_false_starts_over_and_finished_run_resumes_to_nothing(token_shards, tmp_path):
    cfg = TrainConfig.from_dict(tiny_config(steps=3, eval_every=0, schedule={"warmup_steps": 1}))
    first = train(cfg, token_shards, tmp_path)
    again = train(cfg, token_shards, tmp_path)  # latest checkpoint is at the last step already
    assert (again.start_step, again.final_step, again.losses) == (3, 3, [])
    fresh = train(cfg, token_shards, tmp_path, resume=False)
    assert fresh.losses == first.losses


def test_resume_refuses_an_incompatible_checkpoint(token_shards, tmp_path):
    base = tiny_config(steps=2, eval_every=0, schedule={"warmup_steps": 1})
    train(TrainConfig.from_dict(base), token_shards, tmp_path)  # checkpoint at step 2
    cases = [
        ({"model": {"dim": 32}}, r"another model shape: dim=64 \(this run: 32\)"),
        ({"data": {"seq_len": 32}}, "saved with seq_len=64, this run has seq_len=32"),
        ({"data": {"batch_size": 4}}, "global_batch_size=8 but this loader has global_batch_size=4"),
    ]
    for change, message in cases:
        with pytest.raises(CheckpointError, match=message):
            train(TrainConfig.from_dict(TrainConfig.layer(base, change)), token_shards, tmp_path)


def test_vocab_mismatch_is_a_clear_error(token_shards, tmp_path):
    cfg = TrainConfig.from_dict(tiny_config(model={"vocab_size": 128}))
    with pytest.raises(ConfigError, match="vocabulary of 256 ids.*vocab_size=128"):
        train(cfg, token_shards, tmp_path)


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="precision"):
        TrainConfig.from_dict({"precision": "fp8"})
    with pytest.raises(ConfigError, match="unknown key.*lr_peak"):
        TrainConfig.from_dict({"lr_peak": 1.0})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) TrainConfig\.optimizer\.lr_peak"):
        TrainConfig.from_dict({"optimizer": {"lr_peak": 1.0}})
    with pytest.raises(ConfigError, match="warmup_steps=100 exceeds"):
        TrainConfig.from_dict({"steps": 10, "schedule": {"warmup_steps": 100}})


@pytest.mark.parametrize("preset", ["tiny", "small", "8b", "70b", "405b"])
def test_presets_round_trip_through_yaml(preset):
    import yaml

    cfg = TrainConfig.from_preset(preset)
    assert TrainConfig.from_dict(yaml.safe_load(cfg.to_yaml())) == cfg
    assert cfg.model.vocab_size > 0


def test_batch_ramp_grows_grad_accumulation_and_sequence_length(token_shards, tmp_path):
    # 512 tokens/step at seq 32 (batch 8 x 2 micro-batches of 32), then 1,024 tokens/step at seq 64 from 1,024 tokens.
    ramp = [[0, 512, 32], [1024, 1024, 64]]
    cfg = TrainConfig.from_dict(
        tiny_config(steps=4, eval_every=0, schedule={"warmup_steps": 1, "batch_ramp": ramp})
    )
    rows: dict[int, dict] = {}
    result = train(cfg, token_shards, tmp_path, on_metrics=lambda s, m: rows.update({s: m}))
    assert [rows[s]["batch_tokens"] for s in (1, 2, 3, 4)] == [512, 512, 1024, 1024]
    assert result.tokens_seen == 512 + 512 + 1024 + 1024
    too_long = TrainConfig.from_dict(tiny_config(schedule={"batch_ramp": [[0, 512, 32], [10, 1024, 4096]]}))
    with pytest.raises(ConfigError, match="sequence length 4096 exceeds"):
        train(too_long, token_shards, tmp_path / "x")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("scope", ["blocks", "model"])
def test_gpu_bf16_compiled_fused_run_learns(token_shards, tmp_path, scope):
    cfg = TrainConfig.from_dict(
        {
            **TINY_TRAIN,
            "device": "cuda",
            "precision": "bf16",
            "compile": True,
            "compile_scope": scope,
            "deterministic": False,
            "steps": 30,
        }
    )
    rows: dict[int, dict] = {}
    with autocast_context(torch.device("cuda"), "bf16", fsdp=False):
        assert torch.is_autocast_enabled("cuda")  # one GPU, bf16: autocast (FSDP2 would cast instead)
    result = train(cfg, token_shards, tmp_path, on_metrics=lambda s, m: rows.update({s: m}))
    assert result.losses[-1] < result.losses[0] - 1.0
    assert all(math.isfinite(v) for v in result.losses)
    assert result.peak_flops_source.startswith(("gpu:", "cpu-nominal"))
    assert (
        load_hf(result.hf_dir).state_dict()["embed_tokens.weight"].dtype == torch.float32
    )  # fp32 master weights


def test_evaluate_eager_bypasses_a_whole_model_compile(token_shards):
    """eager=True runs module.forward (the engine's choice under whole-model compile), never the compiled call."""

    def refuse(gm, example_inputs):
        raise AssertionError("compiled graph used")

    torch.manual_seed(0)
    model = Llama.from_config(
        ModelConfig.from_dict(
            dict(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=64, vocab_size=64, max_seq_len=16)
        )
    )
    tokens = torch.randint(0, 64, (2, 16))
    batches = [{"inputs": tokens, "targets": tokens, "doc_ids": torch.zeros_like(tokens)}]
    cpu = torch.device("cpu")
    task = PretrainTask(TrainConfig.from_dict(TINY_TRAIN), token_shards, DistInfo(0, 1, 0, cpu))
    expected = evaluate(model, task, batches, cpu, torch.autocast("cpu", enabled=False))
    model.compile(backend=refuse)
    with pytest.raises(Exception, match="compiled graph used"):
        evaluate(model, task, batches, cpu, torch.autocast("cpu", enabled=False))
    got = evaluate(model, task, batches, cpu, torch.autocast("cpu", enabled=False), eager=True)
    assert got == expected and model.training
