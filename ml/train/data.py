"""Deterministic, resumable loader over the token shards of one split (see ml/tokens/shards.py).

Sampling: the split's shards form one token stream of N tokens. Window ``w`` holds tokens
``[w*T, w*T + T + 1)`` (stride T, so consecutive windows share one token and every next-token target in
the stream is used once per epoch); there are ``(N - 1) // T`` windows. Each epoch shuffles window order
with ``np.random.default_rng(seed + epoch).permutation``; rank ``r`` of ``world_size`` takes
``perm[r::world_size]``, cut to the same length on every rank, and batches of B consecutive windows from
it (the tail that does not fill a batch is dropped, so every rank runs the same number of steps).

World-size independence: with W ranks of B windows each (global batch G = W * B), the p-th batch of rank
``r`` is ``perm[p*G + r + W*j]`` for ``j < B``, so the ranks' p-th batches together are exactly
``perm[p*G : (p+1)*G]``, the p-th batch of one process with batch G (only the order of the rows differs).
The epoch has ``N // G`` global batches at any W. Hence the loader state is world-size independent: the
epoch and the number of windows of it consumed by all ranks together (``windows_consumed = p * G``), and
a state saved at one world size resumes at another.

Per batch: ``inputs = window[:, :-1]``, ``targets = window[:, 1:]`` and ``doc_ids`` numbering the documents
within each row (0 for the one the row starts in, +1 at every document start), for a block-diagonal
attention mask. By default the last token of a document (``<|end_of_text|>``) keeps the next document's
``<|begin_of_text|>`` as its target; ``mask_cross_doc_targets=True`` sets those targets to -100 instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from ml.tokens.shards import open_index, open_shard, read_manifest

IGNORE_INDEX = -100


class Batch(NamedTuple):
    inputs: torch.Tensor  # (B, T) int64 token ids
    targets: torch.Tensor  # (B, T) int64 next-token ids, IGNORE_INDEX where masked
    doc_ids: torch.Tensor  # (B, T) int64 document number within each row


class TokenStream:
    """The shards of one split as a single random-access token stream."""

    def __init__(self, directory: Path | str, split: str = "train", verify_sha256: bool = False):
        manifest = read_manifest(directory, verify_sha256=verify_sha256)
        self.directory, self.split = Path(directory), split
        infos = manifest.shards.get(split)
        if not infos:
            raise ValueError(f"{self.directory}: split {split!r} has no token shards")
        self.tokens = [open_shard(p, manifest.dtype) for p in manifest.paths(split)]
        self.doc_index = [open_index(self.directory / i.index_file) for i in infos]
        self.offsets = np.zeros(len(infos) + 1, dtype=np.int64)  # global start of each shard, then N
        self.offsets[1:] = np.cumsum([len(t) for t in self.tokens])
        self.vocab_size = manifest.vocab_size

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens ``[start, start + length)`` as int64, across shard boundaries."""
        if start < 0 or start + length > len(self):
            raise IndexError(
                f"{self.directory} [{self.split}]: tokens [{start}, {start + length}) out of 0..{len(self)}"
            )
        out = np.empty(length, dtype=np.int64)
        k = int(np.searchsorted(self.offsets, start, side="right")) - 1
        done = 0
        while done < length:
            lo = start + done - int(self.offsets[k])
            n = min(length - done, len(self.tokens[k]) - lo)
            out[done : done + n] = self.tokens[k][lo : lo + n]
            done += n
            k += 1
        return out

    def doc_starts(self, lo: int, hi: int) -> np.ndarray:
        """Global positions of document starts in ``[lo, hi)``."""
        found = []
        k = int(np.searchsorted(self.offsets, lo, side="right")) - 1
        while k < len(self.tokens) and self.offsets[k] < hi:
            base = int(self.offsets[k])
            idx = self.doc_index[k]
            a, b = np.searchsorted(idx, [lo - base, hi - base], side="left")
            found.append(np.asarray(idx[a:b], dtype=np.int64) + base)
            k += 1
        return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)


class TokenLoader:
    """Infinite iterator of :class:`Batch` over one split; ``state_dict`` makes it resumable exactly."""

    def __init__(
        self,
        directory: Path | str,
        split: str = "train",
        *,
        batch_size: int,
        seq_len: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        mask_cross_doc_targets: bool = False,
        verify_sha256: bool = False,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"TokenLoader: rank {rank} is not in [0, world_size={world_size})")
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"TokenLoader: batch_size={batch_size} and seq_len={seq_len} must be >= 1")
        self.stream = TokenStream(directory, split, verify_sha256)
        self.batch_size, self.seq_len = batch_size, seq_len
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.mask_cross_doc_targets = mask_cross_doc_targets
        self.num_windows = (len(self.stream) - 1) // seq_len
        self.windows_per_rank = self.num_windows // world_size
        self.batches_per_epoch = self.windows_per_rank // batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"{self.stream.directory}: split {split!r} has {len(self.stream)} tokens = {self.num_windows} "
                f"windows of seq_len+1={seq_len + 1}, too few for batch_size={batch_size} x world_size={world_size}"
            )
        self.epoch, self.position = 0, 0
        self._perm_epoch, self._perm = -1, np.zeros(0, dtype=np.int64)

    def epoch_windows(self, epoch: int) -> np.ndarray:
        """This rank's window ids for ``epoch``, in the order they are served."""
        if epoch != self._perm_epoch:
            perm = np.random.default_rng(self.seed + epoch).permutation(self.num_windows)
            self._perm = perm[self.rank :: self.world_size][: self.windows_per_rank]
            self._perm_epoch = epoch
        return self._perm

    def __iter__(self) -> TokenLoader:
        return self

    def __next__(self) -> Batch:
        if self.position >= self.batches_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        b = self.batch_size
        windows = self.epoch_windows(self.epoch)[self.position * b : (self.position + 1) * b]
        self.position += 1
        return self.make_batch(windows)

    def make_batch(self, windows: np.ndarray) -> Batch:
        """The batch holding ``windows`` (window ids), one per row."""
        T = self.seq_len
        tokens = np.stack([self.stream.read(int(w) * T, T + 1) for w in windows])  # (B, T+1)
        doc = np.zeros_like(tokens)  # (B, T+1)
        for row, w in enumerate(windows):
            s = int(w) * T
            doc[row, self.stream.doc_starts(s + 1, s + T + 1) - s] = 1  # a new doc starts here
        doc = np.cumsum(doc, axis=1)
        targets = tokens[:, 1:].copy()  # (B, T)
        if self.mask_cross_doc_targets:
            targets[doc[:, 1:] != doc[:, :-1]] = IGNORE_INDEX
        return Batch(
            inputs=torch.from_numpy(np.ascontiguousarray(tokens[:, :-1])),
            targets=torch.from_numpy(targets),
            doc_ids=torch.from_numpy(np.ascontiguousarray(doc[:, :-1])),
        )

    def val_windows(self, n: int) -> np.ndarray:
        """This rank's share of ``n`` batches per rank of validation windows spread evenly over the whole
        split in stream order (every window when the split holds fewer): the windows are chosen for all
        ranks together and dealt round-robin, so any world size scores the same windows."""
        per_rank = min(n, self.windows_per_rank // self.batch_size) * self.batch_size
        count = per_rank * self.world_size
        if not count:
            return np.zeros(0, dtype=np.int64)
        picks = np.linspace(0, self.num_windows - 1, count).round().astype(np.int64)
        return picks[self.rank :: self.world_size]

    def val_batches(self, n: int) -> list[Batch]:
        """The validation batches of :meth:`val_windows` (no shuffle, state untouched); the same list on
        every call."""
        windows, b = self.val_windows(n), self.batch_size
        return [self.make_batch(windows[i * b : (i + 1) * b]) for i in range(len(windows) // b)]

    def docs_in(self, windows: np.ndarray) -> int:
        """How many distinct documents have tokens in ``windows`` (each ``seq_len + 1`` tokens long)."""
        T = self.seq_len
        starts = self.stream.doc_starts(0, len(self.stream))
        docs: set[int] = set()
        for w in windows:
            first = int(np.searchsorted(starts, int(w) * T, side="right"))  # docs begun at or before it
            last = int(np.searchsorted(starts, int(w) * T + T, side="right"))
            docs.update(range(first, last + 1))
        return len(docs)

    @property
    def global_batch_size(self) -> int:
        """Windows per batch over all ranks together."""
        return self.batch_size * self.world_size

    def state_dict(self) -> dict[str, Any]:
        """World-size independent position (epoch, windows consumed by all ranks) plus the settings it holds for.

        Every rank returns the same dict.
        """
        return {
            "epoch": self.epoch,
            "windows_consumed": self.position * self.global_batch_size,
            "seed": self.seed,
            "seq_len": self.seq_len,
            "global_batch_size": self.global_batch_size,
            "num_windows": self.num_windows,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from ``state``, saved at this or any other world size (same global batch)."""
        state = _upgrade_state(state)
        for key in ("epoch", "windows_consumed", "seed", "seq_len", "global_batch_size", "num_windows"):
            if key not in state:
                raise KeyError(f"TokenLoader.load_state_dict: state lacks {key!r}")
        for key in ("seed", "seq_len", "global_batch_size", "num_windows"):
            if int(state[key]) != getattr(self, key):
                raise ValueError(
                    f"TokenLoader.load_state_dict: state has {key}={state[key]} but this loader has "
                    f"{key}={getattr(self, key)} (batch_size={self.batch_size} x world_size={self.world_size}); "
                    "resuming would not reproduce the same batches"
                )
        consumed, g = int(state["windows_consumed"]), self.global_batch_size
        if consumed % g or not 0 <= consumed // g <= self.batches_per_epoch:
            raise ValueError(
                f"TokenLoader.load_state_dict: windows_consumed={consumed} is not a whole number of global "
                f"batches of {g} windows within an epoch of {self.batches_per_epoch} batches"
            )
        self.epoch, self.position = int(state["epoch"]), consumed // g


def _upgrade_state(state: dict[str, Any]) -> dict[str, Any]:
    """A state written before ``windows_consumed`` (per-rank ``position``, ``batch_size``, ``world_size``)."""
    if "windows_consumed" in state or not {"position", "batch_size", "world_size"} <= state.keys():
        return state
    g = int(state["batch_size"]) * int(state["world_size"])
    return {**state, "windows_consumed": int(state["position"]) * g, "global_batch_size": g}
