"""Checkpoint averaging (Llama 3 paper §3.4.3: the final model averages the checkpoints of annealing runs;
§4.1 does the same across post-training experiments).

:func:`average_checkpoints` takes N HF-format model directories (``config.json`` + ``model.safetensors``,
or shards listed in ``model.safetensors.index.json``) or bare safetensors files and writes their mean,
tensor by tensor, in HF format. Memory stays at about two models: the running sum and the tensor being
read (safetensors files are opened lazily and read one tensor at a time). The sum is kept in float32
(float64 for float64 weights) and cast back to the inputs' dtype at the end.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ml.io import atomic_dir
from ml.model.hf import CONFIG_FILE, INDEX_FILE, WEIGHTS_FILE


class AverageError(ValueError):
    """Checkpoints that cannot be averaged; the message names the file and the tensor."""


def _weight_files(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    if (source / WEIGHTS_FILE).is_file():
        return [source / WEIGHTS_FILE]
    if (source / INDEX_FILE).is_file():
        weight_map = json.loads((source / INDEX_FILE).read_text())["weight_map"]
        return [source / name for name in sorted(set(weight_map.values()))]
    raise AverageError(f"{source}: no {WEIGHTS_FILE}, {INDEX_FILE}, and not a safetensors file")


def _config(source: Path) -> dict | None:
    path = source / CONFIG_FILE
    return json.loads(path.read_text()) if source.is_dir() and path.is_file() else None


def _open_all(stack: contextlib.ExitStack, source: Path) -> dict[str, tuple[Path, object]]:
    """Tensor name -> (file, open safetensors handle) for every tensor of ``source``."""
    where: dict[str, tuple[Path, object]] = {}
    for path in _weight_files(source):
        handle = stack.enter_context(safe_open(str(path), framework="pt", device="cpu"))
        for name in handle.keys():  # noqa: SIM118 - safe_open has no __iter__
            where[name] = (path, handle)
    return where


def _describe(tensors: dict[str, tuple[Path, object]]) -> dict[str, tuple[Path, str, list[int]]]:
    """Tensor name -> (file, dtype, shape), read from the headers only."""
    out = {}
    for name, (path, handle) in tensors.items():
        view = handle.get_slice(name)
        out[name] = (path, view.get_dtype(), list(view.get_shape()))
    return out


def _check_like(
    first: dict[str, tuple[Path, str, list[int]]], other: dict[str, tuple[Path, str, list[int]]]
) -> None:
    """Same tensor names, shapes and dtypes as the first checkpoint, or an error naming file and tensor."""
    first_file = next(iter(first.values()))[0]
    for name in sorted(set(first) ^ set(other)):
        if name in other:
            raise AverageError(f"{other[name][0]}: has tensor {name!r}, which {first_file} lacks")
        raise AverageError(f"{next(iter(other.values()))[0]}: lacks tensor {name!r} of {first_file}")
    for name, (path, dtype, shape) in other.items():
        ref_path, ref_dtype, ref_shape = first[name]
        if (dtype, shape) != (ref_dtype, ref_shape):
            raise AverageError(
                f"{path}: tensor {name!r} is {dtype} {shape}, {ref_path} has {ref_dtype} {ref_shape}"
            )


def _accumulate(
    total: dict[str, torch.Tensor], dtypes: dict[str, torch.dtype], tensors: dict[str, tuple[Path, object]]
) -> None:
    """Add each tensor to the running sum, one tensor in memory at a time."""
    for name, (_, handle) in tensors.items():
        t = handle.get_tensor(name)
        if name not in total:
            dtypes[name] = t.dtype
            total[name] = t.to(torch.float64 if t.dtype == torch.float64 else torch.float32, copy=True)
        else:
            total[name] += t
        del t


def average_checkpoints(sources: list[str | Path], out_dir: str | Path) -> Path:
    """Write the tensor-by-tensor mean of ``sources`` to ``out_dir`` (HF format); returns ``out_dir``."""
    sources = [Path(s) for s in sources]
    if not sources:
        raise AverageError("average_checkpoints: no checkpoints given")
    configs = [_config(s) for s in sources]
    for source, config in zip(sources[1:], configs[1:], strict=True):
        if config != configs[0]:
            raise AverageError(
                f"{source / CONFIG_FILE}: model config differs from {sources[0] / CONFIG_FILE}"
            )
    total: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    first: dict[str, tuple[Path, str, list[int]]] = {}
    for source in sources:
        with contextlib.ExitStack() as stack:
            tensors = _open_all(stack, source)
            described = _describe(tensors)
            if first:
                _check_like(first, described)
            else:
                first = described
            _accumulate(total, dtypes, tensors)
    for name in list(total):  # in place, one converted tensor at a time
        total[name] = total[name].div_(len(sources)).to(dtypes[name])
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        save_file(total, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        if configs[0] is not None:
            (tmp / CONFIG_FILE).write_text(json.dumps(configs[0], indent=2) + "\n")
    return out_dir
