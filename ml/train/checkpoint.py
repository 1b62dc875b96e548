"""Training checkpoints: safetensors weights + DCP training state + a sha256 manifest, written atomically.

Layout of ``<root>/step-00000123/``::

    model.safetensors, config.json   full weights (HF Llama format through ``hf_writer``, else plain safetensors)
    dcp/                             torch.distributed.checkpoint of {"model": ..., "optim": {"state": ...}}
                                     (sharded under FSDP2, reshardable to another world size)
    train_state/rank-00000.json      per rank: step, tokens seen, RNG states, data-loader state,
                                     optimizer param_groups (JSON: nothing here is ever unpickled)
    checkpoint.json                  manifest: step, world size, sha256 + size of every other file

Resuming at another world size: DCP reshards model and optimizer tensors (FSDP2 DTensor shards <-> plain
tensors, any number of ranks); the optimizer param_groups name parameters by FQN, so rank 0's apply
everywhere; the data-loader state is world-size independent (ml/train/data.py). RNG states are per rank:
at the saving world size every rank restores its own, at another one every rank restores rank 0's (the
loop seeds all ranks alike, so rank 0's state is what any rank of an uninterrupted run would hold).

Every rank writes into ``.step-00000123.tmp`` beside the final directory; rank 0 writes the manifest last
and renames the directory, so a directory named ``step-*`` is complete. Loading re-hashes every file
against the manifest first (truncated, tampered, missing or unexpected file, or one outside the folder ->
:class:`CheckpointError` naming it), then reads DCP's metadata with an unpickler restricted to DCP's own
metadata classes, refuses any storage path in it that is absolute, holds ``..`` or leads out of ``dcp/``
through a link (a hostile folder can rewrite its manifest to match), and reads the tensors with
``weights_only=True``. Multi-rank saves assume a filesystem shared by all ranks.

Resuming (:func:`newest_intact`) takes the newest checkpoint that passes verification; newer ones that fail
are renamed ``corrupt-step-*`` (kept for inspection, out of ``keep_last``'s count and of a re-save's way).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import os
import pickle
import random
import re
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.metadata import BytesStorageMetadata, Metadata, StorageMeta
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from ml.io import sha256_file

MANIFEST = "checkpoint.json"
FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"^step-(\d{8})$")

HfWriter = Callable[[dict[str, torch.Tensor], Path], None]


class CheckpointError(RuntimeError):
    """A checkpoint is incomplete, corrupt or tampered with; the message names the file."""


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root`` (a ``step-*`` dir holding a manifest), sorted by step."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / MANIFEST).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint directory under ``root``, or None."""
    found = list_checkpoints(root)
    return found[-1][1] if found else None


@dataclasses.dataclass(frozen=True)
class SkippedCheckpoint:
    """A checkpoint that failed verification when resuming, moved aside for inspection (never deleted)."""

    path: Path  # its step-* name, where it was
    kept_at: Path  # where it is now: corrupt-step-* beside it
    reason: str  # the verification error (it names the file at ``path``)


def newest_intact(root: Path) -> tuple[Path, dict[str, Any], list[SkippedCheckpoint]] | None:
    """The newest checkpoint under ``root`` that passes verification, its manifest, and the newer ones that
    failed (collective: rank 0 verifies); None when ``root`` holds no checkpoint.

    The failed ones are renamed ``corrupt-step-*``: kept, but no longer listed by :func:`list_checkpoints`,
    so neither ``keep_last`` pruning (which would count them and drop intact ones) nor a re-save of their
    step (which would replace them) touches them. When none passes, nothing is moved and the CheckpointError
    lists every one and why."""
    found = list_checkpoints(root)
    if not found:
        return None
    failed: list[tuple[Path, str]] = []
    for _, path in reversed(found):
        try:
            manifest = verified_manifest(path)
        except CheckpointError as exc:
            failed.append((path, str(exc)))
            continue
        return path, manifest, [SkippedCheckpoint(p, _set_aside(p), why) for p, why in failed]
    raise CheckpointError(
        f"{root}: no intact checkpoint to resume from ({len(failed)}, newest first):\n"
        + "\n".join(f"  {p.name}: {why}" for p, why in failed)
    )


def _set_aside(path: Path) -> Path:
    """Rename checkpoint ``path`` to a free ``corrupt-step-*`` name beside it (collective; rank 0 renames)."""
    kept = path.parent / f"corrupt-{path.name}"
    n = 1
    while kept.exists():
        kept, n = path.parent / f"corrupt-{path.name}.{n}", n + 1
    _barrier()  # every rank has chosen the same free name before rank 0 takes it
    if _rank() == 0:
        path.rename(kept)
    _barrier()
    return kept


# ---- RNG state as JSON ------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) RNG states as JSON-able values."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": _to_json(random.getstate()),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state().tolist()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(torch.tensor(state["cuda"], dtype=torch.uint8))


def _to_json(obj: Any) -> Any:
    """Tuples -> lists, numpy scalars/arrays -> Python; anything else non-JSON is an error."""
    if isinstance(obj, dict):
        return {str(k): _to_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_to_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise CheckpointError(
        f"training state holds a {type(obj).__name__} ({obj!r:.80}) that is not JSON-serializable"
    )


# ---- safe reading of DCP ----------------------------------------------------------------------------

_DCP_MODULES = ("torch.distributed.checkpoint.metadata", "torch.distributed.checkpoint.filesystem")


def _dcp_enum_member(cls: Any, member: str) -> Any:
    """The only ``getattr`` a DCP metadata pickle may call: a member of one of DCP's own enums."""
    if isinstance(cls, type) and issubclass(cls, enum.Enum) and cls.__module__ in _DCP_MODULES:
        return cls[member]
    raise pickle.UnpicklingError(f"DCP metadata calls getattr on {cls!r:.80}, which is not allowed")


class _MetadataUnpickler(pickle.Unpickler):
    """Only DCP's metadata dataclasses, torch.Size, dtypes, layouts and paths may be constructed."""

    def find_class(self, module: str, name: str) -> Any:
        if module in _DCP_MODULES:
            obj = super().find_class(module, name)
            if isinstance(obj, type) and obj.__module__ == module:
                return obj
        elif module == "torch" and (name == "Size" or isinstance(getattr(torch, name, None), torch.dtype)):
            return getattr(torch, name)
        elif (module, name) == ("torch.serialization", "_get_layout"):
            return super().find_class(module, name)
        elif module == "pathlib" and name in ("PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath"):
            return super().find_class(module, name)
        elif module == "collections" and name == "OrderedDict":
            return super().find_class(module, name)
        elif (module, name) == ("builtins", "getattr"):
            return _dcp_enum_member  # some Python 3.11 releases pickle enum members as getattr(Enum, "NAME")
        raise pickle.UnpicklingError(f"DCP metadata refers to {module}.{name}, which is not allowed")


class SafeFileSystemReader(dcp.FileSystemReader):
    """DCP reader whose ``.metadata`` unpickling is restricted and which refuses non-tensor items."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        rank = kwargs.get("rank")
        path = Path(self.path) / (".metadata" if rank is None else f"__{rank}.metadata")
        try:
            with open(path, "rb") as fh:
                metadata = _MetadataUnpickler(fh).load()
        except (pickle.UnpicklingError, EOFError, AttributeError, ValueError) as exc:
            raise CheckpointError(f"{path}: unreadable DCP metadata ({exc})") from exc
        if not isinstance(metadata, Metadata):
            raise CheckpointError(f"{path}: DCP metadata is a {type(metadata).__name__}, not Metadata")
        pickled = [k for k, v in metadata.state_dict_metadata.items() if isinstance(v, BytesStorageMetadata)]
        if pickled:
            # Non-tensor DCP items are read back with torch.load(weights_only=False): never accept them.
            raise CheckpointError(f"{path}: holds pickled non-tensor items {pickled[:5]}; refusing to load")
        _check_storage_paths(Path(self.path), metadata, path)
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


def _check_storage_paths(dcp_dir: Path, metadata: Metadata, source: Path) -> None:
    """Every file DCP metadata ``source`` makes the reader open must be a file inside ``dcp_dir``.

    Its ``storage_data`` maps tensors to ``_StorageInfo(relative_path, offset, length)``; a hostile
    ``relative_path`` (absolute, ``..``, or a link leading out) would read any file DCP can open."""
    storage = metadata.storage_data
    if not isinstance(storage, dict):
        raise CheckpointError(f"{source}: storage_data is a {type(storage).__name__}, not a dict")
    inside = dcp_dir.resolve()
    for rel in sorted({_storage_path(info, source) for info in storage.values()}):
        why = None
        if os.path.isabs(rel):
            why = "is absolute"
        elif ".." in PurePosixPath(rel).parts:
            why = "contains '..'"
        else:
            target = (dcp_dir / rel).resolve()
            if not target.is_relative_to(inside):
                why = f"resolves to {target}"
            elif target == inside or not target.is_file():
                why = "names no file"
        if why is not None:
            raise CheckpointError(
                f"{source}: storage path {rel!r} {why}; DCP may read only files inside {dcp_dir}"
            )


def _storage_path(info: Any, source: Path) -> str:
    if not isinstance(info, _StorageInfo) or not isinstance(info.relative_path, str):
        raise CheckpointError(f"{source}: storage entry {info!r:.120} is not a file, offset and length")
    return info.relative_path


# ---- manifest ---------------------------------------------------------------------------------------


def _files(directory: Path) -> list[str]:
    return sorted(
        str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST
    )


def _read_manifest(manifest_path: Path) -> dict[str, Any]:
    """The manifest at ``manifest_path``, its structure checked (nothing else reads an unchecked one)."""
    if not manifest_path.is_file():
        raise CheckpointError(f"{manifest_path}: manifest missing (incomplete checkpoint?)")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (ValueError, KeyError, TypeError) as exc:  # ValueError: bad JSON or not UTF-8 at all
        raise CheckpointError(f"{manifest_path}: not a valid checkpoint manifest ({exc})") from exc
    if manifest.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{manifest_path}: format {manifest.get('format')!r}, expected {FORMAT_VERSION}"
        )
    problem = _manifest_problem(manifest, files)
    if problem is not None:
        raise CheckpointError(f"{manifest_path}: not a valid checkpoint manifest ({problem})")
    return manifest


def _manifest_problem(manifest: dict[str, Any], files: Any) -> str | None:
    """What is wrong with a parsed manifest's fields, or None."""
    if not isinstance(files, dict):
        return f"'files' is a {type(files).__name__}, not an object"
    for key, least in (("step", 0), ("world_size", 1)):
        value = manifest.get(key)
        if type(value) is not int or value < least:
            return f"{key!r} must be a {'positive' if least else 'non-negative'} integer, is {value!r}"
    for rel, meta in files.items():
        if not (
            isinstance(meta, dict) and type(meta.get("bytes")) is int and isinstance(meta.get("sha256"), str)
        ):
            return f"entry {rel!r} needs an integer 'bytes' and a string 'sha256'"
    return None


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """Check every file of checkpoint ``path`` against its manifest; returns the manifest.

    Every listed file must lie inside ``path``: no absolute or ``..`` names, no link leading out."""
    path = Path(path)
    manifest = _read_manifest(path / MANIFEST)
    files: dict[str, dict[str, Any]] = manifest["files"]
    inside = path.resolve()
    for rel, meta in files.items():
        f = path / rel
        if os.path.isabs(rel) or ".." in PurePosixPath(rel).parts:
            raise CheckpointError(f"{f}: listed in the manifest but outside the checkpoint {path}")
        if not f.is_file():
            raise CheckpointError(f"{f}: listed in the manifest but missing")
        if not f.resolve().is_relative_to(inside):
            raise CheckpointError(f"{f}: a link to {f.resolve()}, outside the checkpoint {path}")
        size = f.stat().st_size
        if size != meta["bytes"]:
            raise CheckpointError(f"{f}: truncated or resized: {size} bytes, manifest says {meta['bytes']}")
        if sha256_file(f) != meta["sha256"]:
            raise CheckpointError(f"{f}: sha256 mismatch with the manifest (corrupt or tampered)")
    extra = sorted(set(_files(path)) - set(files))
    if extra:
        raise CheckpointError(f"{path / extra[0]}: file not listed in the manifest (tampered checkpoint)")
    return manifest


# ---- save / load ------------------------------------------------------------------------------------


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@contextlib.contextmanager
def _single_process_ok() -> Iterator[None]:
    """DCP warns when no process group exists; one process is a supported case here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
        yield


def _barrier() -> None:
    if _world() > 1:
        dist.barrier()


def write_safetensors(state_dict: dict[str, torch.Tensor], directory: Path, config: dict[str, Any]) -> None:
    """Default weights writer: ``model.safetensors`` (our parameter names) + ``config.json``."""
    from safetensors.torch import save_file

    save_file(
        {k: v.detach().contiguous() for k, v in state_dict.items()}, str(directory / "model.safetensors")
    )
    (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Unsharded CPU copy of the model's weights (collective under FSDP: every rank must call it)."""
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=opts)


def save_checkpoint(
    root: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    train_state: dict[str, Any],
    *,
    model_config: dict[str, Any],
    keep_last: int = 3,
    hf_writer: HfWriter | None = None,
) -> Path:
    """Write checkpoint ``root/step-XXXXXXXX`` (collective: every rank calls it); returns its path.

    ``train_state`` is this rank's JSON-able state (step, tokens, RNG, data loader). ``hf_writer(sd, dir)``
    writes the full weights on rank 0 (default: :func:`write_safetensors`). Keeps the newest ``keep_last``.
    """
    root = Path(root)
    rank, world = _rank(), _world()
    final = root / checkpoint_name(step)
    tmp = root / f".{final.name}.tmp"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        for stale in [*root.glob(".step-*.tmp"), *root.glob(".step-*.old")]:  # left by a killed run
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
    _barrier()

    msd, osd = get_state_dict(model, optimizer)
    with _single_process_ok():
        dcp.save(
            {"model": msd, "optim": {"state": osd["state"]}}, storage_writer=dcp.FileSystemWriter(tmp / "dcp")
        )
    full = full_state_dict(model)
    state = {**train_state, "optim_param_groups": osd["param_groups"], "world_size": world, "rank": rank}
    (tmp / "train_state").mkdir(exist_ok=True)
    (tmp / "train_state" / f"rank-{rank:05d}.json").write_text(json.dumps(_to_json(state)))
    if rank == 0:
        (hf_writer or (lambda sd, d: write_safetensors(sd, d, model_config)))(full, tmp)
    del full
    _barrier()

    if rank == 0:
        _publish(tmp, final, {"step": step, "world_size": world, "model_config": model_config}, keep_last)
    _barrier()
    return final


def _publish(tmp: Path, final: Path, header: dict[str, Any], keep_last: int) -> None:
    """Rank 0: write the manifest last, rename ``tmp`` to ``final``, drop all but the newest ``keep_last``."""
    manifest = {
        "format": FORMAT_VERSION,
        "step": header["step"],
        "world_size": header["world_size"],
        "created_unix": time.time(),
        "model_config": header["model_config"],
        "files": {
            rel: {"bytes": (tmp / rel).stat().st_size, "sha256": sha256_file(tmp / rel)}
            for rel in _files(tmp)
        },
    }
    with open(tmp / MANIFEST, "w") as fh:
        json.dump(manifest, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    old = final.parent / f".{final.name}.old"
    if final.exists():  # re-saving a step: move the previous copy aside, never leave a gap
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    complete = list_checkpoints(final.parent)
    for _, stale in complete[: max(0, len(complete) - keep_last)]:
        shutil.rmtree(stale, ignore_errors=True)


def verified_manifest(path: Path) -> dict[str, Any]:
    """Rank 0 verifies the whole checkpoint, then every rank learns the outcome (same error everywhere)."""
    result: list[Any] = [None, None]
    if _rank() == 0:
        try:
            result = [verify_checkpoint(path), None]
        except CheckpointError as exc:
            result = [None, str(exc)]
    if _world() > 1:
        dist.broadcast_object_list(result, src=0)
    if result[1] is not None:
        raise CheckpointError(result[1])
    return result[0]


def load_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    model_config: dict[str, Any] | None = None,
    verified: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Verify ``path``, load model + optimizer in place (collective), return this rank's training state.

    The checkpoint may come from any world size (see the module docstring for what is remapped); the
    returned state's ``world_size`` is the saving one. ``model_config``: refuse a checkpoint of another
    model shape before any tensor is read. ``verified``: the manifest :func:`verified_manifest` (or
    :func:`newest_intact`) just returned for ``path``, so that its files are not hashed twice.
    """
    path = Path(path)
    manifest = verified if verified is not None else verified_manifest(path)
    if model_config is not None and manifest.get("model_config") != model_config:
        saved = manifest.get("model_config") or {}
        diff = sorted(k for k in {*saved, *model_config} if saved.get(k) != model_config.get(k))
        raise CheckpointError(
            f"{path / MANIFEST}: saved for another model shape: "
            + ", ".join(f"{k}={saved.get(k)!r} (this run: {model_config.get(k)!r})" for k in diff)
        )
    rank, world, saved_world = _rank(), _world(), int(manifest["world_size"])
    state_files = sorted(p.name for p in (path / "train_state").glob("rank-*.json"))
    if state_files != [f"rank-{r:05d}.json" for r in range(saved_world)]:
        raise CheckpointError(
            f"{path / 'train_state'}: holds {state_files} but the manifest says world size {saved_world}"
        )
    state_file = path / "train_state" / f"rank-{rank if world == saved_world else 0:05d}.json"
    try:
        state = json.loads(state_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{state_file}: unreadable training state ({exc})") from exc

    msd, osd = get_state_dict(model, optimizer)
    groups = _param_groups(state, osd["param_groups"], state_file)
    target = {"model": msd, "optim": {"state": osd["state"]}}
    _dcp_load(Path(path), target, "model/optimizer state")
    try:
        set_state_dict(
            model,
            optimizer,
            model_state_dict=target["model"],
            optim_state_dict={"state": target["optim"]["state"], "param_groups": groups},
        )
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path}: the saved state does not fit this model and optimizer ({exc!r})"
        ) from exc
    return state


def _param_groups(
    state: dict[str, Any], live: list[dict[str, Any]], state_file: Path
) -> list[dict[str, Any]]:
    """The optimizer param_groups saved in training state ``state`` (popped), checked against ``live``."""
    groups = state.pop("optim_param_groups", None)
    if groups is None:
        raise CheckpointError(
            f"{state_file}: 'optim_param_groups' is missing, this optimizer has {len(live)} parameter group(s)"
        )
    if not isinstance(groups, list) or len(groups) != len(live):
        held = (
            f"{len(groups)} parameter group(s)" if isinstance(groups, list) else f"a {type(groups).__name__}"
        )
        raise CheckpointError(
            f"{state_file}: 'optim_param_groups' holds {held}, this optimizer has {len(live)}"
        )
    for i, (saved, group) in enumerate(zip(groups, live, strict=True)):
        if not isinstance(saved, dict):
            raise CheckpointError(
                f"{state_file}: parameter group {i} is a {type(saved).__name__}, not an object"
            )
        missing = sorted(set(group) - set(saved))
        if missing:
            raise CheckpointError(f"{state_file}: parameter group {i} has no {missing}")
        for k, v in group.items():  # JSON turned tuples (betas) into lists
            if isinstance(v, tuple) and isinstance(saved[k], list):
                saved[k] = tuple(saved[k])
    return groups


def load_model_state(path: Path, model: torch.nn.Module) -> None:
    """The model weights of checkpoint ``path`` into ``model`` (collective; the optimizer state is not read).

    The caller verifies the checkpoint first (:func:`verified_manifest`)."""
    target = {"model": get_model_state_dict(model)}
    _dcp_load(Path(path), target, "the model state")
    set_model_state_dict(model, target["model"])


def _dcp_load(path: Path, target: dict[str, Any], what: str) -> None:
    """``dcp.load`` of checkpoint ``path`` into ``target``; every failure is a CheckpointError naming it.

    DCP wraps per-rank failures in ``CheckpointException``, a ``BaseException``: caught explicitly."""
    reader = SafeFileSystemReader(path / "dcp")
    reader.read_metadata()  # a clean CheckpointError here rather than one wrapped by DCP's collectives
    try:
        with _single_process_ok():
            dcp.load(target, storage_reader=reader)
    except CheckpointError:
        raise
    except CheckpointException as exc:  # its str() is every rank's traceback: name each rank's error
        failures = "; ".join(
            f"rank {r}: {type(e).__name__}: {e}" for r, (e, _) in sorted(exc.failures.items())
        )
        raise CheckpointError(f"{path / 'dcp'}: cannot load {what} ({failures})") from exc
    except Exception as exc:
        raise CheckpointError(f"{path / 'dcp'}: cannot load {what} ({type(exc).__name__}: {exc})") from exc


def config_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass config as a JSON-able dict (for ``model_config``)."""
    return _to_json(dataclasses.asdict(cfg)) if dataclasses.is_dataclass(cfg) else _to_json(dict(cfg))
