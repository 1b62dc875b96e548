"""Token shards: documents → flat ``uint32`` token files + doc-boundary index + manifest.

Layout of a shard directory::

    train-00000.bin       tokens, native little-endian uint32, np.memmap-able
    train-00000.idx.npy   int64 start offset of every document in the shard (first is 0)
    val-00000.bin / val-00000.idx.npy
    manifest.json         vocab, dtype, shards (tokens, docs, sha256), tokens per source/class/lang, mix

Each document is ``<|begin_of_text|> tokens <|end_of_text|>`` (both configurable) and lies whole in one
shard: a shard is closed before the document that would push it past ``tokens_per_shard`` (a document
longer than that gets a shard of its own). The train/val split is by document, from a seeded hash of its
``id``, so a document keeps its split when the corpus grows.
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import xxhash
from tokenizers import Tokenizer

from ml.config import StageConfig
from ml.io import ShardError, atomic_dir, atomic_write_text, sha256_file
from ml.tokens.tokenizer import BOS, EOS, SPLIT_KEYS, special_token_id, tokenizer_sha256

SPLITS: tuple[str, ...] = ("train", "val")
MANIFEST = "manifest.json"
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class ShardConfig(StageConfig):
    """Token shard settings.

    tokens_per_shard: shard size cap (chosen: tiny 2^20 tokens = 4 MiB, small 2^26 = 256 MiB,
        8b+ 2^28 = 1 GiB per file; the paper does not say).
    val_fraction: share of DOCUMENTS held out for validation (chosen: 0.05 tiny so the val split is
        not empty on a small crawl, 0.01 above; at least one val doc whenever > 0 and >= 2 docs).
    min_val_docs: at least this many documents in the validation split (the ones with the smallest
        hashes; at most half of the documents), so a validation loss averages over enough documents
        (chosen: 64 on tiny, where 5% of a ~1,000-document crawl is ~50 and was 28 on one run; 0 above,
        where 1% is thousands).
    seed: salt of the document hash that assigns the split. The tokenizer holds out the documents of the
        same hash rule (TokenizerConfig.heldout_*), so validation documents are never tokenizer training text.
    split_key: what the split hashes (``split_keys``): ``text`` (xxh64 of the document's text: the same in
        every crawl of the same pages) or ``id`` (sha1 of url + fetch time, which a re-crawl changes: the rule
        of shards written before this setting, which read back as ``id``).
    dtype: token dtype on disk; uint32 holds 128,256 ids (uint16 would not).
    add_bos / add_eos: wrap every document in <|begin_of_text|> ... <|end_of_text|>.
    encode_batch_size: documents per ``encode_batch`` call.
    """

    tokens_per_shard: int = 1 << 20
    val_fraction: float = 0.05
    min_val_docs: int = 0
    seed: int = 0
    dtype: str = "uint32"
    add_bos: bool = True
    add_eos: bool = True
    encode_batch_size: int = 1024
    split_key: str = "text"

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"tokens_per_shard": 1 << 20, "val_fraction": 0.05, "min_val_docs": 64},
        "small": {"tokens_per_shard": 1 << 26, "val_fraction": 0.01},
        "8b": {"tokens_per_shard": 1 << 28, "val_fraction": 0.01},
        "70b": {"tokens_per_shard": 1 << 28, "val_fraction": 0.01},
        "405b": {"tokens_per_shard": 1 << 28, "val_fraction": 0.01},
    }

    def __post_init__(self) -> None:
        if self.dtype != "uint32":
            raise ValueError(f"ShardConfig.dtype={self.dtype!r}: only 'uint32' is supported")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"ShardConfig.val_fraction={self.val_fraction}: must be in [0, 1)")
        if self.min_val_docs < 0:
            raise ValueError(f"ShardConfig.min_val_docs={self.min_val_docs}: must be >= 0")
        if self.tokens_per_shard < 1 or self.encode_batch_size < 1:
            raise ValueError("ShardConfig.tokens_per_shard and encode_batch_size must be >= 1")
        if self.split_key not in SPLIT_KEYS:
            raise ValueError(
                f"ShardConfig.split_key={self.split_key!r}: choose one of {', '.join(SPLIT_KEYS)}"
            )


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    """One ``.bin`` shard and its boundary index."""

    file: str
    index_file: str
    tokens: int
    docs: int
    sha256: str
    index_sha256: str


@dataclasses.dataclass(frozen=True)
class ShardManifest:
    """What ``manifest.json`` holds; ``directory`` is where it was read from or written to."""

    directory: Path
    vocab_size: int
    dtype: str
    bos_id: int | None
    eos_id: int | None
    tokenizer_sha256: str
    shards: dict[str, list[ShardInfo]]
    splits: dict[str, dict[str, int]]
    tokens_per_source: dict[str, dict[str, int]]
    tokens_per_class: dict[str, dict[str, int]]
    tokens_per_lang: dict[str, dict[str, int]]
    mix: dict[str, Any]
    class_col: str
    config: dict[str, Any]

    def paths(self, split: str) -> list[Path]:
        """The ``.bin`` files of ``split`` in stream order."""
        if split not in self.shards:
            raise KeyError(f"{self.directory / MANIFEST}: no split {split!r}; has {', '.join(self.shards)}")
        return [self.directory / s.file for s in self.shards[split]]

    def to_stats(self) -> dict[str, float]:
        """Flat numbers for metrics: ``shards``, ``<split>_tokens``/``_docs``/``_unique_docs``, and train-split
        ``tokens_by_source/<s>``, ``tokens_by_class/<c>``, ``tokens_by_lang/<l>``, ``mix/<c>``,
        ``mix_target/<c>``."""
        out: dict[str, float] = {
            "vocab_size": float(self.vocab_size),
            "shards": float(sum(len(v) for v in self.shards.values())),
        }
        for split, counts in self.splits.items():
            for key, value in counts.items():
                out[f"{split}_{key}"] = float(value)
        for group, table in (
            ("source", self.tokens_per_source),
            ("class", self.tokens_per_class),
            ("lang", self.tokens_per_lang),
        ):
            for key, value in table.get("train", {}).items():
                out[f"tokens_by_{group}/{key}"] = float(value)
        for key, value in self.mix.get("realized", {}).items():
            out[f"mix/{key}"] = float(value)
        for key, value in self.mix.get("target_weights", {}).items():
            out[f"mix_target/{key}"] = float(value)
        return out

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("directory")
        return {"format_version": FORMAT_VERSION, **d}


def assign_split(ids: pd.Series, val_fraction: float, seed: int, min_docs: int = 1) -> np.ndarray:
    """Boolean mask, True = validation: a doc is val when xxh64(f"{seed}:{id}") / 2^64 < val_fraction.

    Rows sharing an id share the split. While ``val_fraction > 0`` the split holds at least ``min_docs``
    distinct documents (at least 1; the ones with the smallest hashes, every copy of each) but never more
    than half of them by that rule, so the val split is never empty or tiny by chance and training keeps
    most of a small corpus.
    """
    keys = (f"{seed}:{i}".encode() for i in ids.astype(str))
    u = np.array([xxhash.xxh64_intdigest(k) / 2.0**64 for k in keys], dtype=np.float64)
    is_val = u < val_fraction
    distinct = np.unique(u)
    want = min(max(1, min_docs), len(distinct) // 2)
    if val_fraction > 0 and want >= 1 and len(np.unique(u[is_val])) < want:
        is_val = u <= distinct[want - 1]
    return is_val


def split_keys(df: pd.DataFrame, key: str = "text") -> pd.Series:
    """What the held-out rules hash, one value per row. ``text``: xxh64 of the UTF-8 text, so a re-crawl of
    the same pages splits the same way (the id changes with the fetch time and the local web's port), and
    up-sampled copies and exact duplicates share their split. ``id``: the document id."""
    if key not in SPLIT_KEYS:
        raise ValueError(f"split key {key!r}: choose one of {', '.join(SPLIT_KEYS)}")
    if key not in df.columns:
        raise KeyError(
            f"split key {key!r}: the documents have no such column ({', '.join(map(str, df.columns))})"
        )
    if key == "id":
        return df["id"].astype(str)
    return df["text"].map(lambda t: xxhash.xxh64_hexdigest(str(t).encode("utf-8")))


def heldout_mask(
    df: pd.DataFrame, fraction: float, seed: int, min_docs: int = 1, key: str = "text"
) -> np.ndarray:
    """:func:`assign_split` over :func:`split_keys`: True for the held-out documents."""
    return assign_split(split_keys(df, key), fraction, seed, min_docs)


def written_config(manifest_config: dict[str, Any]) -> ShardConfig:
    """The ShardConfig a manifest's ``config`` was written with; manifests from before ``split_key``
    hashed the id."""
    return ShardConfig.from_dict({"split_key": "id", **manifest_config})


def val_mask(df: pd.DataFrame, manifest_config: dict[str, Any]) -> np.ndarray:
    """True for the rows of ``df`` in the validation split of the shards written with ``manifest_config``."""
    cfg = written_config(manifest_config)
    return heldout_mask(df, cfg.val_fraction, cfg.seed, cfg.min_val_docs, cfg.split_key)


def _copy_index(df: pd.DataFrame) -> np.ndarray:
    """Column ``repeat`` (ml/curate/mix.py: 0 for a document's first copy, k for its (k+1)-th), else zeros."""
    if "repeat" not in df.columns:
        return np.zeros(len(df), dtype=np.int64)
    rep = pd.to_numeric(df["repeat"], errors="coerce")
    if rep.isna().any() or (rep < 0).any() or (rep % 1 != 0).any():
        raise ValueError("write_token_shards: column 'repeat' must hold non-negative integers")
    return rep.to_numpy(dtype=np.int64)


def _split_order(df: pd.DataFrame, is_val: np.ndarray) -> dict[str, np.ndarray]:
    """Row order per split. Train: every row, first copies first, then second copies, ... (table order
    within a pass), so up-sampled copies are spread through the stream instead of sitting side by side.
    Val: one row per document id (an up-sampled copy adds nothing to a loss estimate)."""
    rows = np.arange(len(df))
    train = rows[~is_val]
    train = train[np.argsort(_copy_index(df)[train], kind="stable")]
    val = rows[is_val & ~df["id"].duplicated(keep="first").to_numpy()]
    return {"train": train, "val": val}


class _ShardWriter:
    """Appends whole documents to ``<split>-NNNNN.bin`` files, closing a shard at the size cap."""

    def __init__(self, directory: Path, split: str, tokens_per_shard: int):
        self.directory, self.split, self.cap = directory, split, tokens_per_shard
        self.infos: list[ShardInfo] = []
        self.docs: list[np.ndarray] = []
        self.n_tokens = 0

    def add(self, doc: np.ndarray) -> None:
        if self.docs and self.n_tokens + len(doc) > self.cap:
            self.flush()
        self.docs.append(doc)
        self.n_tokens += len(doc)

    def flush(self) -> None:
        if not self.docs:
            return
        name = f"{self.split}-{len(self.infos):05d}"
        tokens = np.concatenate(self.docs).astype("<u4", copy=False)
        starts = np.zeros(len(self.docs), dtype="<i8")
        starts[1:] = np.cumsum([len(d) for d in self.docs[:-1]])
        bin_path, idx_path = self.directory / f"{name}.bin", self.directory / f"{name}.idx.npy"
        tokens.tofile(bin_path)
        np.save(idx_path, starts, allow_pickle=False)
        self.infos.append(
            ShardInfo(
                file=bin_path.name,
                index_file=idx_path.name,
                tokens=int(len(tokens)),
                docs=len(self.docs),
                sha256=sha256_file(bin_path),
                index_sha256=sha256_file(idx_path),
            )
        )
        self.docs, self.n_tokens = [], 0


def _encode(texts: list[str], tok: Tokenizer, batch_size: int) -> Iterator[list[int]]:
    for i in range(0, len(texts), batch_size):
        for enc in tok.encode_batch(texts[i : i + batch_size], add_special_tokens=False):
            yield enc.ids


def _encode_docs(
    texts: pd.Series, tok: Tokenizer, batch_size: int, bos: int | None, eos: int | None
) -> list[np.ndarray]:
    """Token ids (uint32) of each text wrapped in BOS/EOS; a text repeated in ``texts`` (an up-sampled
    copy) is encoded once."""
    head, tail = ([bos] if bos is not None else []), ([eos] if eos is not None else [])
    codes, unique_texts = pd.factorize(texts.astype(str))
    encoded = [
        np.array(head + ids + tail, dtype=np.uint32) for ids in _encode(list(unique_texts), tok, batch_size)
    ]
    return [encoded[c] for c in codes]


def _tokens_per_key(column: pd.Series, rows: np.ndarray, n_tokens: np.ndarray) -> dict[str, int]:
    """Tokens of ``rows`` summed per value of ``column`` (missing values count as ``unknown``), sorted by key."""
    keys = column.fillna("unknown").astype(str).to_numpy()[rows]
    per: dict[str, int] = defaultdict(int)
    for k, t in zip(keys, n_tokens[rows], strict=True):
        per[k] += int(t)
    return dict(sorted(per.items()))


def _split_counts(
    df: pd.DataFrame, order: dict[str, np.ndarray], n_tokens: np.ndarray, class_col: str
) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, dict[str, int]]]]:
    """Docs, unique docs and tokens per split; tokens per split per source / lang / class (groups whose
    column is absent stay empty)."""
    group_cols = {"source": "source", "lang": "lang", "class": class_col}
    counts: dict[str, dict[str, dict[str, int]]] = {g: {} for g in group_cols}
    splits: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        sel = order[split]
        splits[split] = {
            "docs": int(len(sel)),
            "unique_docs": int(df["id"].iloc[sel].nunique()),
            "tokens": int(n_tokens[sel].sum()),
        }
        for group, col in group_cols.items():
            if col in df.columns:
                counts[group][split] = _tokens_per_key(df[col], sel, n_tokens)
    return splits, counts


def write_token_shards(
    df: pd.DataFrame, tok: Tokenizer, out_dir: Path | str, cfg: ShardConfig, class_col: str = "domain"
) -> ShardManifest:
    """Tokenize ``df.text`` into train/val shards under ``out_dir`` (replaced atomically).

    Rows repeating an ``id`` are up-sampled copies (ml/curate/mix.py); they share a split, train keeps
    them all (ordered by the ``repeat`` copy index when present), val keeps one. Optional columns:
    ``source``, ``lang`` and ``class_col`` give token counts per group; ``weight`` (float) is recorded
    as the target mix weight of each class (token-weighted mean).
    """
    out_dir = Path(out_dir)
    for col in ("id", "text"):
        if col not in df.columns:
            raise KeyError(
                f"write_token_shards: column {col!r} missing; has {', '.join(map(str, df.columns))}"
            )
    df = df.reset_index(drop=True)
    bos = special_token_id(tok, BOS) if cfg.add_bos else None
    eos = special_token_id(tok, EOS) if cfg.add_eos else None
    is_val = heldout_mask(df, cfg.val_fraction, cfg.seed, cfg.min_val_docs, cfg.split_key)

    docs = _encode_docs(df["text"], tok, cfg.encode_batch_size, bos, eos)
    n_tokens = np.array([len(d) for d in docs], dtype=np.int64)

    order = _split_order(df, is_val)
    # An empty text without BOS/EOS has no tokens and no place in the stream.
    order = {split: sel[n_tokens[sel] > 0] for split, sel in order.items()}
    splits, counts = _split_counts(df, order, n_tokens, class_col)
    shards: dict[str, list[ShardInfo]] = {}
    with atomic_dir(out_dir) as tmp:
        for split in SPLITS:
            writer = _ShardWriter(tmp, split, cfg.tokens_per_shard)
            for r in order[split]:
                writer.add(docs[r])
            writer.flush()
            shards[split] = writer.infos
        mix = _mix(df, class_col, order["train"], n_tokens)
        manifest = ShardManifest(
            directory=out_dir,
            vocab_size=tok.get_vocab_size(),
            dtype=cfg.dtype,
            bos_id=bos,
            eos_id=eos,
            tokenizer_sha256=tokenizer_sha256(tok),
            shards=shards,
            splits=splits,
            tokens_per_source=counts["source"],
            tokens_per_class=counts["class"],
            tokens_per_lang=counts["lang"],
            mix=mix,
            class_col=class_col,
            config=cfg.to_dict(),
        )
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest.to_dict(), indent=2, sort_keys=False))
    return manifest


def _mix(df: pd.DataFrame, class_col: str, train_rows: np.ndarray, n_tokens: np.ndarray) -> dict[str, Any]:
    """Realized train mix per class (token share after repeats); target weights if a ``weight`` column exists."""
    if class_col not in df.columns:
        return {}
    keys = df[class_col].fillna("unknown").astype(str).to_numpy()
    total = int(n_tokens[train_rows].sum())
    realized: dict[str, float] = {}
    for k in sorted(set(keys[train_rows])):
        realized[k] = int(n_tokens[train_rows][keys[train_rows] == k].sum()) / total if total else 0.0
    out: dict[str, Any] = {"realized": realized}
    if "weight" in df.columns:
        w = pd.to_numeric(df["weight"], errors="coerce").to_numpy(dtype=np.float64)
        if np.isnan(w).any():
            raise ValueError("write_token_shards: column 'weight' must be numeric with no missing values")
        target = {}
        for k in sorted(set(keys)):
            m = keys == k
            t = n_tokens[m].sum()
            target[k] = float((w[m] * n_tokens[m]).sum() / t) if t else 0.0
        out["target_weights"] = target
    return out


def read_manifest(directory: Path | str, verify_sha256: bool = True) -> ShardManifest:
    """Read and validate ``directory/manifest.json``: every shard and index must exist with the recorded
    size (and sha256 unless ``verify_sha256=False``); a mismatch raises ShardError naming the file."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise ShardError(path, "token shard manifest does not exist")
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ShardError(path, f"not a readable JSON manifest ({exc})") from exc
    if raw.get("format_version") != FORMAT_VERSION:
        raise ShardError(path, f"format_version {raw.get('format_version')!r}, expected {FORMAT_VERSION}")
    raw.pop("format_version")
    try:
        raw["shards"] = {s: [ShardInfo(**i) for i in infos] for s, infos in raw["shards"].items()}
        manifest = ShardManifest(directory=directory, **raw)
    except (KeyError, TypeError) as exc:
        raise ShardError(path, f"malformed manifest ({exc})") from exc
    itemsize = np.dtype(manifest.dtype).itemsize
    for infos in manifest.shards.values():
        for info in infos:
            bin_path, idx_path = directory / info.file, directory / info.index_file
            for p in (bin_path, idx_path):
                if not p.is_file():
                    raise ShardError(p, f"listed in {path} but missing")
            size = bin_path.stat().st_size
            if size != info.tokens * itemsize:
                raise ShardError(
                    bin_path, f"size {size} bytes, manifest says {info.tokens} tokens x {itemsize} bytes"
                )
            if verify_sha256:
                for p, want in ((bin_path, info.sha256), (idx_path, info.index_sha256)):
                    got = sha256_file(p)
                    if got != want:
                        raise ShardError(p, f"sha256 {got} does not match manifest {want}")
    return manifest


def open_shard(path: Path | str, dtype: str = "uint32") -> np.memmap:
    """Read-only memmap of a ``.bin`` token shard."""
    path = Path(path)
    if not path.is_file():
        raise ShardError(path, "token shard does not exist")
    if path.stat().st_size % np.dtype(dtype).itemsize:
        raise ShardError(
            path, f"size {path.stat().st_size} is not a multiple of {dtype} ({np.dtype(dtype).itemsize})"
        )
    if path.stat().st_size == 0:
        raise ShardError(path, "token shard is empty (0 bytes)")
    return np.memmap(path, dtype=np.dtype(dtype).newbyteorder("<"), mode="r")


def open_index(path: Path | str) -> np.ndarray:
    """The int64 document start offsets of a shard (memory-mapped)."""
    path = Path(path)
    if not path.is_file():
        raise ShardError(path, "shard index does not exist")
    try:
        idx = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ShardError(path, f"not a readable .npy index ({exc})") from exc
    if idx.ndim != 1 or idx.dtype.kind != "i":
        raise ShardError(path, f"expected a 1-D int64 array, got {idx.dtype} with shape {idx.shape}")
    return idx
