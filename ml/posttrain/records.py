"""Post-training records, checked on the way in, and held-out splits by id.

Two record kinds, one JSON object per line (``*.jsonl``), every record with a unique string ``id``:

* SFT: ``{"id", "messages": [{"role", "content", "tool_call"?}, ...]}`` with at least one assistant turn.
* Preference (Llama 3 paper §4.1: responses ranked edited > chosen > rejected): ``{"id", "prompt":
  [messages ending with a user or ipython turn], "chosen": str, "rejected": str, "edited": str?}``;
  responses are assistant texts.

A bad record is a ``RecordError`` naming the file, line and id. Held-out splits are decided by a hash
of the id alone (``split_of``), so a prompt's split never depends on what else was generated with it and
training can check that it sees no held-out id (``assert_no_heldout``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ml.tokens.tokenizer import check_message

PREFERENCE_RESPONSES = ("edited", "chosen", "rejected")  # best first (Llama 3 paper §4.1)


class RecordError(ValueError):
    """A record that cannot be trained on; the message names it."""


def _name(record: Any, where: str) -> str:
    rid = record.get("id") if isinstance(record, Mapping) else None
    return f"{where} (id {rid!r})" if rid is not None else where


def _check_messages(messages: Any, where: str) -> None:
    if not isinstance(messages, list) or not messages:
        raise RecordError(f"{where}: messages must be a non-empty list")
    for i, m in enumerate(messages):
        try:
            check_message(i, m)
        except ValueError as exc:
            raise RecordError(f"{where}: {exc}") from None


def _check_id(record: Any, where: str) -> None:
    if not isinstance(record, Mapping):
        raise RecordError(f"{where}: a record must be a JSON object, got {type(record).__name__}")
    if not isinstance(record.get("id"), str) or not record["id"]:
        raise RecordError(f"{where}: 'id' must be a non-empty string")


def check_sft_record(record: Any, where: str = "record") -> dict[str, Any]:
    """The record if it is a valid SFT record, else a RecordError naming it."""
    _check_id(record, where)
    where = _name(record, where)
    _check_messages(record.get("messages"), where)
    if not any(m["role"] == "assistant" for m in record["messages"]):
        raise RecordError(f"{where}: no assistant turn to train on")
    return dict(record)


def check_preference_record(record: Any, where: str = "record") -> dict[str, Any]:
    """The record if it is a valid preference record, else a RecordError naming it and the field."""
    _check_id(record, where)
    where = _name(record, where)
    _check_messages(record.get("prompt"), where + " prompt")
    if record["prompt"][-1]["role"] not in ("user", "ipython"):
        raise RecordError(f"{where}: the prompt must end with a user or ipython turn")
    for field in PREFERENCE_RESPONSES:
        value = record.get(field)
        if field == "edited" and value is None:
            continue
        if value is None:
            raise RecordError(f"{where}: missing {field!r} response")
        if not isinstance(value, str) or not value.strip():
            raise RecordError(f"{where}: {field!r} response must be non-empty text, got {value!r}")
    if record["chosen"] == record["rejected"]:
        raise RecordError(f"{where}: 'chosen' and 'rejected' are the same text")
    return dict(record)


def ranked_responses(record: Mapping[str, Any]) -> list[str]:
    """A preference record's responses, best first: [edited,] chosen, rejected."""
    return [record[f] for f in PREFERENCE_RESPONSES if record.get(f) is not None]


def read_jsonl(path: Path | str, check: Any) -> list[dict[str, Any]]:
    """Records of a JSONL file, each passed through ``check(record, where)``; ids must be unique."""
    path = Path(path)
    records, seen = [], set()
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RecordError(f"{where}: not JSON ({exc.msg})") from None
            record = check(record, where)
            if record["id"] in seen:
                raise RecordError(f"{where}: duplicate id {record['id']!r}")
            seen.add(record["id"])
            records.append(record)
    return records


def write_jsonl(records: Iterable[Mapping[str, Any]], path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    tmp.replace(path)
    return path


def split_of(record_id: str, heldout_fraction: float, seed: int = 0) -> str:
    """ "heldout" or "train" from the id alone: sha256(seed:id) as a number in [0, 1) below the fraction."""
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    digest = hashlib.sha256(f"{seed}:{record_id}".encode()).digest()
    return "heldout" if int.from_bytes(digest[:8], "big") / 2**64 < heldout_fraction else "train"


def split_records(
    records: Iterable[Mapping[str, Any]], heldout_fraction: float, seed: int = 0
) -> dict[str, list[dict[str, Any]]]:
    """{"train": [...], "heldout": [...]} by ``split_of`` of each record's id."""
    out: dict[str, list[dict[str, Any]]] = {"train": [], "heldout": []}
    for r in records:
        out[split_of(r["id"], heldout_fraction, seed)].append(dict(r))
    return out


def assert_no_heldout(ids: Iterator[str] | Iterable[str], heldout_fraction: float, seed: int = 0) -> None:
    """RecordError naming the first id that belongs to the held-out split (training must never see one)."""
    for rid in ids:
        if split_of(rid, heldout_fraction, seed) == "heldout":
            raise RecordError(f"record id {rid!r} is in the held-out split and must not be trained on")


def write_posttrain_splits(
    records: Iterable[Mapping[str, Any]],
    directory: Path | str,
    heldout_fraction: float,
    val_fraction: float,
    seed: int = 0,
) -> dict[str, int]:
    """``train.jsonl``, ``val.jsonl`` and ``heldout.jsonl`` in ``directory``; returns records per split.

    ``heldout`` (never trained on, for the final evaluations) is decided by ``split_of(id)``; the rest is
    split into train and validation by the id's hash under another seed, so val moves with val_fraction
    while held-out stays put."""
    splits = split_records(records, heldout_fraction, seed)
    rest = split_records(splits["train"], val_fraction, seed + 1)
    out = {"train": rest["train"], "val": rest["heldout"], "heldout": splits["heldout"]}
    for name, recs in out.items():
        write_jsonl(recs, Path(directory) / f"{name}.jsonl")
    return {name: len(recs) for name, recs in out.items()}
