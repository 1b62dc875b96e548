"""ml/train/average.py: the tensor-by-tensor mean of N checkpoints, and refusals naming file and tensor."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from ml.model.hf import load_hf, save_hf
from ml.model.llama import Llama, ModelConfig
from ml.train.average import AverageError, average_checkpoints


def _write(directory, tensors, config=None):
    directory.mkdir(parents=True)
    save_file(tensors, str(directory / "model.safetensors"))
    if config is not None:
        (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_mean_of_three_hand_built_checkpoints_is_exact(tmp_path):
    config = {"model_type": "llama", "hidden_size": 2}
    a = {"w": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "b": torch.tensor([0.0, 3.0], dtype=torch.bfloat16)}
    b = {"w": torch.tensor([[4.0, 2.0], [0.0, -2.0]]), "b": torch.tensor([3.0, 3.0], dtype=torch.bfloat16)}
    c = {"w": torch.tensor([[1.0, 5.0], [6.0, 1.0]]), "b": torch.tensor([6.0, 0.0], dtype=torch.bfloat16)}
    dirs = [_write(tmp_path / n, t, config) for n, t in zip("abc", (a, b, c), strict=True)]
    out = average_checkpoints(dirs, tmp_path / "avg")
    got = load_file(str(out / "model.safetensors"))
    assert torch.equal(got["w"], torch.tensor([[2.0, 3.0], [3.0, 1.0]]))
    assert got["b"].dtype == torch.bfloat16 and torch.equal(
        got["b"], torch.tensor([3.0, 2.0], dtype=torch.bfloat16)
    )
    assert json.loads((out / "config.json").read_text()) == config


def test_average_of_hf_models_loads_as_a_model(tmp_path):
    cfg = ModelConfig.from_preset(
        "tiny", dim=32, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=64, vocab_size=64
    )
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(Llama.from_config(cfg))
        save_hf(models[-1], tmp_path / f"m{seed}")
    avg = load_hf(average_checkpoints([tmp_path / f"m{i}" for i in range(3)], tmp_path / "avg"))
    for name, tensor in avg.state_dict().items():
        want = sum(m.state_dict()[name] for m in models) / 3
        torch.testing.assert_close(tensor, want, rtol=0, atol=1e-7, msg=name)


def test_mismatches_name_the_file_and_tensor(tmp_path):
    base = _write(tmp_path / "base", {"w": torch.zeros(2, 2), "b": torch.zeros(2)})
    missing = _write(tmp_path / "missing", {"w": torch.zeros(2, 2)})
    extra = _write(tmp_path / "extra", {"w": torch.zeros(2, 2), "b": torch.zeros(2), "c": torch.zeros(1)})
    shape = _write(tmp_path / "shape", {"w": torch.zeros(2, 3), "b": torch.zeros(2)})
    dtype = _write(tmp_path / "dtype", {"w": torch.zeros(2, 2), "b": torch.zeros(2, dtype=torch.float16)})
    cases = [
        (missing, rf"{missing}/model.safetensors: lacks tensor 'b'"),
        (extra, rf"{extra}/model.safetensors: has tensor 'c'"),
        (shape, rf"{shape}/model.safetensors: tensor 'w' is F32 \[2, 3\], .* has F32 \[2, 2\]"),
        (dtype, rf"{dtype}/model.safetensors: tensor 'b' is F16 \[2\], .* has F32 \[2\]"),
    ]
    for other, message in cases:
        with pytest.raises(AverageError, match=message):
            average_checkpoints([base, other], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    _write(tmp_path / "cfg_a", {"w": torch.zeros(1)}, {"hidden_size": 2})
    _write(tmp_path / "cfg_b", {"w": torch.zeros(1)}, {"hidden_size": 4})
    with pytest.raises(AverageError, match=r"cfg_b/config.json: model config differs"):
        average_checkpoints([tmp_path / "cfg_a", tmp_path / "cfg_b"], tmp_path / "out")
    with pytest.raises(AverageError, match="no checkpoints given"):
        average_checkpoints([], tmp_path / "out")


def test_bare_safetensors_files(tmp_path):
    files = []
    for i, value in enumerate((1.0, 2.0, 6.0)):
        files.append(tmp_path / f"{i}.safetensors")
        save_file({"x": torch.full((3,), value)}, str(files[-1]))
    out = average_checkpoints(files, tmp_path / "avg")
    assert torch.equal(load_file(str(out / "model.safetensors"))["x"], torch.full((3,), 3.0))
    assert not (out / "config.json").exists()
