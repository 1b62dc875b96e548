"""Checkpoints: round trip, atomic naming, keep-last, manifest validation, no unpickling of foreign code."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import random
import re

import numpy as np
import pytest
import torch
from train_helpers import TINY_OVERRIDES, reseal_manifest

from ml.io import sha256_file
from ml.model.llama import Llama, ModelConfig
from ml.train import checkpoint as ckpt
from ml.train.checkpoint import CheckpointError


def _model_and_optimizer(seed: int = 0):
    torch.manual_seed(seed)
    model = Llama.from_config(ModelConfig.from_preset("tiny", **TINY_OVERRIDES))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    tokens = torch.randint(0, 256, (2, 16))
    model(tokens, labels=tokens).backward()
    opt.step()
    opt.zero_grad()
    return model, opt


def _save(root, step, model, opt, keep_last=3, **state):
    cfg = ckpt.config_dict(model.cfg)
    train_state = {"step": step, "tokens_seen": 10 * step, "rng": ckpt.rng_state(), **state}
    return ckpt.save_checkpoint(root, step, model, opt, train_state, model_config=cfg, keep_last=keep_last)


@pytest.fixture
def saved(tmp_path):
    torch.set_num_threads(1)
    model, opt = _model_and_optimizer()
    path = _save(tmp_path / "ckpts", 7, model, opt, data={"epoch": 1, "position": 3})
    return tmp_path / "ckpts", path, model, opt


def test_round_trip_restores_weights_optimizer_and_state(saved):
    root, path, model, opt = saved
    assert path.name == "step-00000007" and ckpt.latest_checkpoint(root) == path
    assert sorted(p.name for p in path.iterdir()) == [
        "checkpoint.json",
        "config.json",
        "dcp",
        "model.safetensors",
        "train_state",
    ]
    fresh, fresh_opt = _model_and_optimizer(seed=1)  # different weights and moments
    state = ckpt.load_checkpoint(path, fresh, fresh_opt)
    assert (state["step"], state["tokens_seen"], state["data"]) == (7, 70, {"epoch": 1, "position": 3})
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    sa, sb = opt.state_dict(), fresh_opt.state_dict()
    for k in sa["state"]:
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(sa["state"][k][key], sb["state"][k][key])
    assert sb["param_groups"][0]["betas"] == (0.9, 0.95)


def test_rng_states_round_trip():
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    state = json.loads(json.dumps(ckpt.rng_state()))  # through JSON, as on disk
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    ckpt.set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_keep_last_and_latest_ignore_incomplete_dirs(tmp_path):
    torch.set_num_threads(1)
    model, opt = _model_and_optimizer()
    root = tmp_path / "ckpts"
    for step in (1, 2, 3):
        _save(root, step, model, opt, keep_last=2)
    assert [s for s, _ in ckpt.list_checkpoints(root)] == [2, 3]
    (root / "step-00000009").mkdir()  # no manifest: a crash before rename cannot produce this, but ignore it
    (root / ".step-00000010.tmp").mkdir()  # what a killed save leaves behind
    assert ckpt.latest_checkpoint(root).name == "step-00000003"
    _save(root, 4, model, opt, keep_last=2)
    assert not (root / ".step-00000010.tmp").exists()
    assert ckpt.latest_checkpoint(tmp_path / "nothing-here") is None


def test_truncated_file_is_refused_naming_it(saved):
    _, path, model, opt = saved
    shard = next((path / "dcp").glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match=rf"{shard.name}: truncated"):
        ckpt.load_checkpoint(path, model, opt)


def test_tampered_file_is_refused_naming_it(saved):
    _, path, model, opt = saved
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: sha256 mismatch"):
        ckpt.load_checkpoint(path, model, opt)


def test_missing_and_unlisted_files_are_refused(saved):
    _, path, model, opt = saved
    (path / "train_state" / "extra.json").write_text("{}")
    with pytest.raises(CheckpointError, match="extra.json: file not listed"):
        ckpt.verify_checkpoint(path)
    (path / "train_state" / "extra.json").unlink()
    (path / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json: listed in the manifest but missing"):
        ckpt.verify_checkpoint(path)
    (path / "checkpoint.json").unlink()
    with pytest.raises(CheckpointError, match="manifest missing"):
        ckpt.verify_checkpoint(path)


class _Exploit:
    def __reduce__(self):
        return (eval, ("1 + 1",))


def test_foreign_pickle_in_dcp_metadata_is_never_executed(saved):
    """Even with a manifest rewritten to match, the metadata unpickler only builds DCP's own classes."""
    _, path, model, opt = saved
    meta = path / "dcp" / ".metadata"
    meta.write_bytes(pickle.dumps(_Exploit()))
    manifest = json.loads((path / "checkpoint.json").read_text())
    manifest["files"]["dcp/.metadata"] = {"bytes": meta.stat().st_size, "sha256": sha256_file(meta)}
    (path / "checkpoint.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"builtins\.eval, which is not allowed"):
        ckpt.load_checkpoint(path, model, opt)


def test_rank_files_must_match_the_manifest_world_size(saved):
    _, path, model, opt = saved
    manifest = json.loads((path / "checkpoint.json").read_text())
    manifest["world_size"] = 2
    (path / "checkpoint.json").write_text(json.dumps(manifest))
    with pytest.raises(
        CheckpointError, match=r"holds \['rank-00000.json'\] but the manifest says world size 2"
    ):
        ckpt.load_checkpoint(path, model, opt)


def test_other_model_shape_is_refused_before_loading(saved):
    _, path, model, opt = saved
    other = {**ckpt.config_dict(model.cfg), "dim": 128}
    with pytest.raises(CheckpointError, match=r"another model shape: dim=64 \(this run: 128\)"):
        ckpt.load_checkpoint(path, model, opt, model_config=other)
    assert ckpt.load_checkpoint(path, model, opt, model_config=ckpt.config_dict(model.cfg))["step"] == 7


def test_non_json_training_state_is_an_error(tmp_path):
    model, opt = _model_and_optimizer()
    with pytest.raises(CheckpointError, match="not JSON-serializable"):
        _save(tmp_path, 1, model, opt, data={"bad": object()})


def test_metadata_unpickler_allows_dcp_enum_by_name_only():
    """Python 3.11.2 pickles DCP's enum members as getattr(Enum, "NAME"): allowed for DCP enums, nothing else."""
    import io
    import pathlib
    import pickle

    from torch.distributed.checkpoint.metadata import _MEM_FORMAT_ENCODING

    from ml.train.checkpoint import _MetadataUnpickler

    class ByName:
        def __init__(self, target, name):
            self.target, self.name = target, name

        def __reduce__(self):
            return (getattr, (self.target, self.name))

    ok = pickle.dumps(ByName(_MEM_FORMAT_ENCODING, "TORCH_CONTIGUOUS_FORMAT"), protocol=4)
    assert _MetadataUnpickler(io.BytesIO(ok)).load() is _MEM_FORMAT_ENCODING.TORCH_CONTIGUOUS_FORMAT
    bad = pickle.dumps(ByName(pathlib.PurePosixPath, "joinpath"), protocol=4)  # not a DCP enum
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        _MetadataUnpickler(io.BytesIO(bad)).load()


def test_dcp_checkpoint_exception_surfaces_as_checkpoint_error(saved, monkeypatch):
    """DCP's CheckpointException is a BaseException: it must not escape the project's CheckpointError."""
    from torch.distributed.checkpoint.api import CheckpointException, _wrap_exception

    _, path, _, _ = saved
    fresh, fresh_opt = _model_and_optimizer(seed=1)

    def failing_load(*args, **kwargs):
        raise CheckpointException("load", {0: _wrap_exception(ValueError("rank 0 read a short file"))})

    monkeypatch.setattr(ckpt.dcp, "load", failing_load)
    with pytest.raises(CheckpointError, match=r"dcp: cannot load model/optimizer state"):
        ckpt.load_checkpoint(path, fresh, fresh_opt)
    with pytest.raises(CheckpointError, match=r"dcp: cannot load the model state"):
        ckpt.load_model_state(path, fresh)


# ---- hostile checkpoints: the whole folder is the attacker's, its manifest rewritten to match ------------


@pytest.fixture
def foreign_shard(tmp_path):
    """The DCP shard of another checkpoint (other weights) outside the one under test."""
    model, opt = _model_and_optimizer(seed=1)
    return _save(tmp_path / "elsewhere", 7, model, opt) / "dcp" / "__0_0.distcp"


def _edit_metadata(path, edit):
    """Apply ``edit`` to checkpoint ``path``'s DCP metadata (our own file: plain pickle) and reseal it."""
    meta = path / "dcp" / ".metadata"
    metadata = pickle.loads(meta.read_bytes())
    edit(metadata)
    meta.write_bytes(pickle.dumps(metadata))
    reseal_manifest(path)


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _unchanged(model, before):
    return all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    "storage_path, why",
    [
        ("absolute", "is absolute"),
        ("dot-dot", "contains '..'"),
        ("/etc/passwd", "is absolute"),
        ("../../../../../../../../../etc/passwd", "contains '..'"),
    ],
    ids=["absolute", "dot-dot", "etc-passwd", "dot-dot-etc-passwd"],
)
def test_dcp_storage_paths_outside_the_checkpoint_are_refused(saved, foreign_shard, storage_path, why):
    """Before: an absolute or ../ path in the metadata loaded another checkpoint's weights (or failed
    with DCP's traceback for /etc/passwd)."""
    _, path, _, _ = saved
    dcp_dir = path / "dcp"
    rel = {"absolute": str(foreign_shard), "dot-dot": os.path.relpath(foreign_shard, dcp_dir)}.get(
        storage_path, storage_path
    )
    _edit_metadata(
        path,
        lambda md: setattr(
            md,
            "storage_data",
            {k: dataclasses.replace(v, relative_path=rel) for k, v in md.storage_data.items()},
        ),
    )
    fresh, fresh_opt = _model_and_optimizer(seed=2)
    before = _weights(fresh)
    message = f"{dcp_dir / '.metadata'}: storage path {rel!r} {why}; DCP may read only files inside {dcp_dir}"
    with pytest.raises(CheckpointError, match=f"^{re.escape(message)}$"):
        ckpt.load_checkpoint(path, fresh, fresh_opt)
    assert _unchanged(fresh, before)


def test_a_dcp_shard_linked_outside_the_checkpoint_is_refused(saved, foreign_shard):
    """Before: a symlink in dcp/ to another checkpoint's shard passed the manifest and loaded its weights."""
    _, path, _, _ = saved
    shard = path / "dcp" / "__0_0.distcp"
    shard.unlink()
    shard.symlink_to(foreign_shard)
    reseal_manifest(path)
    fresh, fresh_opt = _model_and_optimizer(seed=2)
    before = _weights(fresh)
    message = f"{shard}: a link to {foreign_shard.resolve()}, outside the checkpoint {path}"
    with pytest.raises(CheckpointError, match=f"^{re.escape(message)}$"):
        ckpt.load_checkpoint(path, fresh, fresh_opt)
    assert _unchanged(fresh, before)
    # The DCP reader checks on its own too (it is also used where no manifest was checked first).
    message = (
        f"{path / 'dcp' / '.metadata'}: storage path '__0_0.distcp' resolves to {foreign_shard.resolve()}; "
        f"DCP may read only files inside {path / 'dcp'}"
    )
    with pytest.raises(CheckpointError, match=f"^{re.escape(message)}$"):
        ckpt.SafeFileSystemReader(path / "dcp").read_metadata()


def _drop_norm_metadata(md):
    del md.state_dict_metadata["model.norm.weight"]


def _drop_norm_storage(md):
    md.storage_data = {k: v for k, v in md.storage_data.items() if k.fqn != "model.norm.weight"}


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            _drop_norm_metadata,
            "dcp: cannot load model/optimizer state "
            "(rank 0: RuntimeError: Missing key in checkpoint state_dict: model.norm.weight.)",
        ),
        (
            _drop_norm_storage,
            "dcp: cannot load model/optimizer state (rank 0: KeyError: "
            "MetadataIndex(fqn='model.norm.weight', offset=torch.Size([0]), index=0))",
        ),
    ],
    ids=["no-state-dict-entry", "no-storage-entry"],
)
def test_dcp_metadata_without_an_expected_entry_is_a_short_checkpoint_error(saved, edit, message):
    """Before: the CheckpointError carried DCP's whole multi-rank traceback text."""
    _, path, _, _ = saved
    _edit_metadata(path, edit)
    fresh, fresh_opt = _model_and_optimizer(seed=2)
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(path / message))}$"):
        ckpt.load_checkpoint(path, fresh, fresh_opt)


def _edit_json(path, rel, edit):
    data = json.loads((path / rel).read_text())
    edit(data)
    (path / rel).write_text(json.dumps(data))
    if rel != "checkpoint.json":
        reseal_manifest(path)


STATE = "train_state/rank-00000.json"


@pytest.mark.parametrize(
    "rel, edit, message",
    [
        (
            STATE,
            lambda s: s.pop("optim_param_groups"),
            f"{STATE}: 'optim_param_groups' is missing, this optimizer has 1 parameter group(s)",
        ),
        (
            STATE,
            lambda s: s["optim_param_groups"].pop(),
            f"{STATE}: 'optim_param_groups' holds 0 parameter group(s), this optimizer has 1",
        ),
        (
            STATE,
            lambda s: s["optim_param_groups"][0].pop("params"),
            f"{STATE}: parameter group 0 has no ['params']",
        ),
        (
            "checkpoint.json",
            lambda m: m.pop("world_size"),
            "checkpoint.json: not a valid checkpoint manifest ('world_size' must be a positive integer, is None)",
        ),
        (
            "checkpoint.json",
            lambda m: m["files"]["config.json"].pop("bytes"),
            "checkpoint.json: not a valid checkpoint manifest (entry 'config.json' needs an integer 'bytes' "
            "and a string 'sha256')",
        ),
        (
            "checkpoint.json",
            lambda m: m.update(files=["config.json"]),
            "checkpoint.json: not a valid checkpoint manifest ('files' is a list, not an object)",
        ),
        (
            "checkpoint.json",
            lambda m: m["files"].update({"../elsewhere/config.json": {"bytes": 1, "sha256": "0" * 64}}),
            "../elsewhere/config.json: listed in the manifest but outside the checkpoint {path}",
        ),
    ],
    ids=[
        "no-param-groups",
        "too-few-param-groups",
        "param-group-without-params",
        "manifest-without-world-size",
        "manifest-entry-without-bytes",
        "manifest-files-a-list",
        "manifest-lists-a-file-outside",
    ],
)
def test_malformed_manifest_and_training_state_are_checkpoint_errors(saved, rel, edit, message):
    """Before: KeyError, ValueError or AttributeError escaped, or a file outside the checkpoint was read."""
    _, path, _, _ = saved
    _edit_json(path, rel, edit)
    fresh, fresh_opt = _model_and_optimizer(seed=2)
    expected = f"{path}/{message}".format(path=path)
    with pytest.raises(CheckpointError, match=f"^{re.escape(expected)}$"):
        ckpt.load_checkpoint(path, fresh, fresh_opt)


def test_newest_intact_sets_corrupt_newer_checkpoints_aside_under_a_free_name(tmp_path):
    torch.set_num_threads(1)
    model, opt = _model_and_optimizer()
    root = tmp_path / "ckpts"
    first, second = (_save(root, step, model, opt) for step in (1, 2))
    assert ckpt.newest_intact(tmp_path / "nothing-here") is None
    assert ckpt.newest_intact(root)[:2] == (second, ckpt.verify_checkpoint(second))
    size = (second / "config.json").stat().st_size
    (second / "config.json").write_text("{}")
    (root / "corrupt-step-00000002").mkdir()  # set aside by an earlier resume: never overwritten
    path, manifest, skipped = ckpt.newest_intact(root)
    why = f"{second / 'config.json'}: truncated or resized: 2 bytes, manifest says {size}"
    assert (path, manifest["step"]) == (first, 1)
    assert skipped == [ckpt.SkippedCheckpoint(second, root / "corrupt-step-00000002.1", why)]
    assert sorted(p.name for p in root.iterdir()) == [
        "corrupt-step-00000002",
        "corrupt-step-00000002.1",
        "step-00000001",
    ]
    assert (root / "corrupt-step-00000002.1" / "config.json").read_text() == "{}"
