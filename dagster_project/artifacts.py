"""Typed artifact handles and the IO manager that resolves them.

An artifact is a directory written by its asset: each materialization writes a new immutable version
under ``<home>/data/<asset>/.versions/<partition>/`` and the one that passed its checks is also the current
directory ``<home>/data/<asset>/<partition>/`` (dagster_project/versions.py). A handle names one: the
asset, the partition, the path, its md5 and its version id. An asset declares each upstream once, as a
typed parameter::

    @stage_asset(partitions_def=SNAPSHOTS)
    def minhash_deduped(context, config, url_deduped: DocShards, ...) -> dg.MaterializeResult: ...

``ArtifactIOManager`` stores nothing (the directory is the value: no pickling). It loads a handle to the
version the upstream's newest Dagster materialization recorded, skipping versions that failed their
checks (then the newest that passed), or to the current directory when no materialization recorded a
version (artifacts written outside Dagster); a parameter typed ``dict[str, Handle]`` receives one handle
per mapped upstream partition (all sweep cells -> one fit).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import typing
from functools import cached_property
from pathlib import Path
from typing import Any, Self

import dagster as dg
import pandas as pd

from dagster_project.home import artifact_dir, lifecycle_home
from dagster_project.resources import DvcResource, directory_md5, dvc_md5
from dagster_project.versions import VersionError, VersionStore
from ml.io import DOC_COLUMNS, read_shards, shard_paths


def recorded_md5(path: Path) -> str:
    """The DVC md5 of an artifact (dvc.lock / .dvc file), or a content hash if DVC has none."""
    home = lifecycle_home()
    rel = Path(path).resolve().relative_to(home).as_posix()
    with contextlib.suppress(RuntimeError, FileNotFoundError):  # DVC has no record: hash the content instead
        return dvc_md5(home, rel, DvcResource()._stage_for(home, rel))
    return directory_md5(path)


@dataclasses.dataclass(frozen=True)
class Artifact:
    """One materialized artifact: ``path`` is its directory, ``md5`` its content version (DVC's once it
    is current), ``version`` the immutable version it is (None: the current directory, unversioned)."""

    asset: str
    partition: str | None
    path: Path
    md5: str
    version: str | None = None

    @classmethod
    def at(cls, asset: str, partition: str | None) -> Self:
        """The handle of ``asset``'s current artifact for ``partition``; a ``dg.Failure`` naming it when
        missing. An interrupted promotion is rolled back first."""
        store = VersionStore(asset, partition)
        store.recover()
        path = artifact_dir(asset, partition)
        if not path.exists():
            raise dg.Failure(
                description=f"Upstream artifact {asset} (partition {partition or 'none'}) is missing at "
                f"{path}: materialize {asset} for this partition first.",
                metadata={"asset": asset, "expected_path": str(path)},
            )
        vid = store.current_id()
        if vid:
            with contextlib.suppress(VersionError, KeyError):
                return cls(
                    asset=asset,
                    partition=partition,
                    path=store.path(vid),
                    md5=store.record(vid)["md5"],
                    version=vid,
                )
        return cls(asset=asset, partition=partition, path=path, md5=recorded_md5(path))

    @classmethod
    def of_version(cls, asset: str, partition: str | None, vid: str) -> Self:
        """The handle of one recorded version; a ``dg.Failure`` when it was garbage-collected."""
        store = VersionStore(asset, partition)
        path = store.path(vid)
        try:
            record = store.record(vid)
        except VersionError as exc:
            raise dg.Failure(description=f"Upstream artifact {asset}: {exc}") from exc
        if not path.is_dir():
            raise dg.Failure(
                description=f"Upstream artifact {asset} (partition {partition or 'none'}) version {vid} is gone "
                f"from {path} (garbage-collected?): rematerialize {asset}.",
            )
        return cls(
            asset=asset,
            partition=partition,
            path=path,
            md5=record.get("md5") or directory_md5(path),
            version=vid,
        )


class RawCrawl(Artifact):
    """WARC/WET files and ``manifest.parquet``."""

    def warc_files(self) -> list[Path]:
        suffixes = (".warc.gz", ".warc", ".wet.gz", ".wet")
        return sorted(p for p in self.path.iterdir() if p.name.endswith(suffixes))

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.parquet"


class DocShards(Artifact):
    """Parquet shards of kept documents in ``docs/`` (dropped ones with a reason in ``dropped/``)."""

    @property
    def docs_dir(self) -> Path:
        return self.path / "docs"

    def read(self, required: tuple[str, ...] = DOC_COLUMNS) -> pd.DataFrame:
        """Every kept document; fails naming the shard if one is corrupt or lacks a ``required`` column."""
        return read_shards(self.docs_dir, required)

    def shard_paths(self) -> list[Path]:
        return shard_paths(self.docs_dir)


class CuratedCorpus(DocShards):
    """The mixed corpus: document shards plus ``mix_report.json`` (target vs realized proportions)."""

    @property
    def mix_report(self) -> dict:
        return json.loads((self.path / "mix_report.json").read_text())


class QualityClassifier(Artifact):
    """The trained quality classifier (``model/``) and its held-out report."""

    @property
    def model_dir(self) -> Path:
        return self.path / "model"


HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def hf_tokenizer_files(directory: Path) -> list[Path]:
    """The HF tokenizer files present in ``directory`` (what ``transformers`` loads beside a model)."""
    return [directory / n for n in HF_TOKENIZER_FILES if (directory / n).exists()]


class Tokenizer(Artifact):
    """``tokenizer.json`` (HF ``tokenizers``) plus the files ``transformers`` loads with it."""

    HF_FILES = HF_TOKENIZER_FILES

    def hf_files(self) -> list[Path]:
        return hf_tokenizer_files(self.path)


class TokenShards(Artifact):
    """``uint32`` token shards with a document index and ``manifest.json``."""

    @cached_property
    def manifest(self) -> dict:
        return json.loads((self.path / "manifest.json").read_text())

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["vocab_size"])


class HFCheckpoint(Artifact):
    """A model in HF Llama format (``hf/``: safetensors + ``config.json``) and its ``metrics.jsonl``."""

    @property
    def hf_dir(self) -> Path:
        return self.path / "hf"


class SyntheticData(Artifact):
    """Verified post-training data: SFT records ``{train,val,heldout}.jsonl``, preference pairs
    ``prefs/{train,val,heldout}.jsonl`` (the same ids in the same splits), ``dropped.jsonl`` (id, reason,
    detail) and ``report.json``; ``heldout`` is never trained on."""

    @property
    def report(self) -> dict:
        return json.loads((self.path / "report.json").read_text())

    @property
    def prefs_dir(self) -> Path:
        return self.path / "prefs"

    def _split_path(self, split: str, prefs: bool) -> Path:
        return (self.prefs_dir if prefs else self.path) / f"{split}.jsonl"

    def records(self, split: str, prefs: bool = False) -> list[dict]:
        return [
            json.loads(line)
            for line in self._split_path(split, prefs).read_text().splitlines()
            if line.strip()
        ]

    def count(self, split: str, prefs: bool = False) -> int:
        """Records in a split, without parsing them."""
        with self._split_path(split, prefs).open() as f:
            return sum(1 for line in f if line.strip())


class RejectionSamples(Artifact):
    """A round's rejection samples: ``samples.jsonl`` (every sample, its reward and verdict per prompt),
    ``sft.jsonl`` (the best verified sample per prompt), ``pairs.jsonl`` (best over a failing sample) and
    ``report.json``."""

    @property
    def report(self) -> dict:
        return json.loads((self.path / "report.json").read_text())

    def records(self, name: str) -> list[dict]:
        return [json.loads(x) for x in (self.path / f"{name}.jsonl").read_text().splitlines() if x.strip()]


class DPORuns(Artifact):
    """A round's DPO runs from its SFT model: ``runs/seed-<s>/hf`` per seed, the reference (SFT) model's
    log-probs of every pair computed once (``reference_logps.json``) and ``report.json``."""

    @property
    def report(self) -> dict:
        return json.loads((self.path / "report.json").read_text())

    def run_dirs(self) -> list[Path]:
        return sorted(p / "hf" for p in (self.path / "runs").iterdir() if (p / "hf").is_dir())


class ChatModel(HFCheckpoint):
    """A round's chat model (the average of its DPO runs, ``hf/`` with the tokenizer and chat template) and
    its held-out evaluation against the round's start, SFT model and the previous round (``evals.json``)."""

    @property
    def evals(self) -> dict:
        return json.loads((self.path / "evals.json").read_text())


class SafetyModels(Artifact):
    """The safety classifier (``classifier/``), the refusal detector (``refusal_detector/``), per-class
    held-out and train tables (``per_class_<split>.parquet``) and ``report.json``."""

    @property
    def report(self) -> dict:
        return json.loads((self.path / "report.json").read_text())


class SafetyEvals(Artifact):
    """One model's safety evaluation: per-prompt ``responses.parquet``, VR/FRR tables
    (``rates_<dim>.parquet``), ``injection.parquet``, ``insecure_code.parquet``, ``comparison.parquet``
    against the previous evaluated model version, plots and ``report.json``."""

    @property
    def report(self) -> dict:
        return json.loads((self.path / "report.json").read_text())


class FP8Checkpoint(Artifact):
    """A model with FP8 (e4m3, row-wise) FFN weights: ``fp8/`` (safetensors with e4m3 weights and fp32
    scales, ``config.json``, ``fp8_config.json``) and ``quality.json`` (perplexity and per-document
    log-likelihood against the bf16 model)."""

    @property
    def fp8_dir(self) -> Path:
        return self.path / "fp8"

    @property
    def quality(self) -> dict:
        return json.loads((self.path / "quality.json").read_text())


class EvalTables(Artifact):
    """An evaluation: Parquet/JSON tables and PNG plots (``evals.json`` holds the headline numbers)."""

    @property
    def evals(self) -> dict:
        return json.loads((self.path / "evals.json").read_text())


def handle_type(annotation: Any) -> tuple[type[Artifact], bool]:
    """``(handle class, wants one handle per partition)`` for ``Handle`` or ``dict[str, Handle]``."""
    if typing.get_origin(annotation) in (dict, typing.Dict):  # noqa: UP006 (Dagster reports typing.Dict)
        return typing.get_args(annotation)[1], True
    if isinstance(annotation, type) and issubclass(annotation, Artifact):
        return annotation, False
    raise dg.Failure(f"an artifact input must be typed Artifact or dict[str, Artifact], not {annotation!r}")


def recorded_version(instance: dg.DagsterInstance | None, asset: str, partition: str | None) -> str | None:
    """The version the newest materialization of ``asset``/``partition`` recorded, or the newest one before
    it that passed its checks; None when the newest recorded no version (written outside versioning)."""
    if instance is None:
        return None
    filt = dg.AssetRecordsFilter(
        asset_key=dg.AssetKey.from_user_string(asset), asset_partitions=[partition] if partition else None
    )
    store = VersionStore(asset, partition)
    for rec in instance.fetch_materializations(filt, limit=50).records:
        meta = rec.asset_materialization.metadata if rec.asset_materialization else {}
        vid = getattr(meta.get("version"), "value", None)
        if not vid:
            return None
        with contextlib.suppress(VersionError):
            if store.record(vid).get("status") in ("current", "superseded") and store.path(vid).is_dir():
                return vid
    return None


def load_handle(
    cls: type[Artifact], instance: dg.DagsterInstance | None, asset: str, partition: str | None
) -> Artifact:
    vid = recorded_version(instance, asset, partition)
    return cls.of_version(asset, partition, vid) if vid else cls.at(asset, partition)


class ArtifactIOManager(dg.ConfigurableIOManager):
    """Artifacts are directories written by their asset: nothing is stored here, a handle is loaded."""

    def handle_output(self, context: dg.OutputContext, obj: Artifact) -> None:
        if not isinstance(obj, Artifact) or not obj.path.is_dir():
            raise dg.Failure(f"{context.asset_key.to_user_string()} returned no artifact directory: {obj!r}")

    def load_input(self, context: dg.InputContext) -> Artifact | dict[str, Artifact]:
        asset = context.asset_key.to_user_string()
        cls, per_partition = handle_type(context.dagster_type.typing_type)
        keys = list(context.asset_partition_keys) if context.has_asset_partitions else [None]
        if per_partition:
            missing = sorted(str(k) for k in keys if not artifact_dir(asset, k).exists())
            if missing:
                raise dg.Failure(
                    description=f"Upstream artifact {asset} is missing for partition(s) "
                    f"{', '.join(missing)}: materialize them first (input {context.name}).",
                    metadata={"asset": asset, "missing_partitions": dg.MetadataValue.json(missing)},
                )
            return {str(k): load_handle(cls, context.instance, asset, str(k)) for k in keys}
        if len(keys) != 1:
            raise dg.Failure(
                f"input {context.name} maps {len(keys)} partitions of {asset}: "
                f"type it dict[str, {cls.__name__}]"
            )
        return load_handle(cls, context.instance, asset, None if keys[0] is None else str(keys[0]))
