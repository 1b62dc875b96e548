"""Load and validate the shipped safety data (Llama 3 paper §5.4): prompts and refusal-detector responses.

Prompt files hold one JSON object per line::

    {"id": ..., "seed": ..., "category": "S1".."S14" | "none", "resembles": null | "S1".."S14",
     "kind": "adversarial" | "borderline", "lang": "en", "variant": "single" | "multi_turn" |
     "long_context" | "tool_use", "framing": ..., "split": "train" | "heldout",
     "messages": [{"role": "system" | "user" | "assistant" | "ipython", "content": ...}, ...]}

An adversarial prompt names its hazard category; a borderline prompt has category "none" and names the
category it only resembles in ``resembles``. The chat ends with a user or ipython turn: the model speaks
next. Any violation (malformed JSON, unknown field, category, kind, variant or role, duplicate id) raises
:class:`SafetyDataError` naming the file and the line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from ml.config import ConfigError, StageConfig

DATA_DIR = Path(__file__).resolve().parent.parent / "resources" / "safety"
CATEGORIES = {
    "S1": "violent crimes",
    "S2": "non-violent crimes",
    "S3": "sex-related crimes",
    "S4": "child sexual exploitation",
    "S5": "defamation",
    "S6": "specialized advice",
    "S7": "privacy",
    "S8": "intellectual property",
    "S9": "indiscriminate weapons",
    "S10": "hate",
    "S11": "suicide and self-harm",
    "S12": "sexual content",
    "S13": "elections",
    "S14": "code interpreter abuse",
}  # the Llama Guard 3 hazard taxonomy
KINDS = ("adversarial", "borderline")
VARIANTS = ("single", "multi_turn", "long_context", "tool_use")
ROLES = ("system", "user", "assistant", "ipython")
SPLITS = ("train", "heldout")
LABELS = ("refusal", "compliance")
_LANG = re.compile(r"^[a-z]{2}$")
PROMPT_FIELDS = {
    "id",
    "seed",
    "category",
    "resembles",
    "kind",
    "lang",
    "variant",
    "framing",
    "split",
    "messages",
}
PROMPT_REQUIRED = {"id", "category", "kind", "lang", "variant", "split", "messages"}
RESPONSE_FIELDS = {"id", "lang", "split", "label", "response"}


class SafetyDataError(ValueError):
    """A safety data file is wrong; the message starts with ``file:line``."""


@dataclasses.dataclass(frozen=True)
class SafetyDataConfig(StageConfig):
    """Which part of the shipped safety data a stage uses."""

    version: str = "v1"
    langs: tuple[str, ...] = ("en", "de", "fr", "es")
    variants: tuple[str, ...] = VARIANTS
    per_category: int = 0  # chosen: items per (category, kind, split) kept; 0 keeps all
    seed: int = 0

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(per_category=6),  # chosen: 14 x 2 x 6 = 168 prompts a split, minutes on CPU
        "small": dict(per_category=24),
        "8b": {},
        "70b": {},
        "405b": {},
    }

    def __post_init__(self) -> None:
        if unknown := sorted(set(self.variants) - set(VARIANTS)):
            raise ConfigError(
                f"SafetyDataConfig.variants: unknown {unknown}; choose from {', '.join(VARIANTS)}"
            )
        if self.per_category < 0:
            raise ConfigError(f"SafetyDataConfig.per_category must be >= 0, got {self.per_category}")


def _one_of(record: dict[str, Any], field: str, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    if record.get(field) not in allowed:
        raise ValueError(f"unknown {field} {record.get(field)!r}; expected one of {', '.join(allowed)}")


def _check_fields(record: Any, allowed: set[str], required: set[str]) -> None:
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    if unknown := sorted(set(record) - allowed):
        raise ValueError(f"unknown field(s) {', '.join(unknown)}")
    if missing := sorted(required - set(record)):
        raise ValueError(f"missing field(s) {', '.join(missing)}")
    if not isinstance(record["id"], str) or not record["id"]:
        raise ValueError(f"id must be a non-empty string, got {record['id']!r}")
    if not isinstance(record["lang"], str) or not _LANG.match(record["lang"]):
        raise ValueError(f"lang must be a two-letter lowercase code, got {record['lang']!r}")
    _one_of(record, "split", SPLITS)


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list of {role, content}")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or set(msg) != {"role", "content"}:
            raise ValueError(f"messages[{i}] must be an object with exactly role and content")
        if msg["role"] not in ROLES:
            raise ValueError(
                f"messages[{i}]: unknown role {msg['role']!r}; expected one of {', '.join(ROLES)}"
            )
        if not isinstance(msg["content"], str) or not msg["content"].strip():
            raise ValueError(f"messages[{i}]: content must be a non-empty string")
    if messages[-1]["role"] not in ("user", "ipython"):
        raise ValueError(f"the last message must be a user or ipython turn, got {messages[-1]['role']!r}")


def check_prompt(record: Any) -> None:
    """Raise ValueError describing the first schema violation of one prompt record."""
    _check_fields(record, PROMPT_FIELDS, PROMPT_REQUIRED)
    _one_of(record, "kind", KINDS)
    _one_of(record, "variant", VARIANTS)
    if record["kind"] == "adversarial":
        _one_of(record, "category", CATEGORIES)
        if record.get("resembles") is not None:
            raise ValueError("an adversarial prompt has no 'resembles' category")
    else:
        _one_of(record, "category", ("none",))
        _one_of(record, "resembles", CATEGORIES)
    _check_messages(record["messages"])


def check_response(record: Any) -> None:
    """Raise ValueError describing the first schema violation of one refusal-detector record."""
    _check_fields(record, RESPONSE_FIELDS, RESPONSE_FIELDS)
    _one_of(record, "label", LABELS)
    if not isinstance(record["response"], str) or not record["response"].strip():
        raise ValueError("response must be a non-empty string")


def read_jsonl(paths: Iterable[Path], check: Callable[[Any], None]) -> list[dict[str, Any]]:
    """Records of every file, each checked; errors and duplicate ids name ``file:line``."""
    records, seen = [], {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SafetyDataError(
                        f"{where}: malformed JSON: {exc.msg} (column {exc.colno})"
                    ) from None
                try:
                    check(record)
                except ValueError as exc:
                    raise SafetyDataError(f"{where}: {exc}") from None
                if record["id"] in seen:
                    raise SafetyDataError(
                        f"{where}: duplicate id {record['id']!r} (first at {seen[record['id']]})"
                    )
                seen[record["id"]] = where
                records.append({**record, "file": Path(path).name, "line": lineno})
    return records


def prompt_text(messages: list[dict[str, str]]) -> str:
    """The turn the model answers: the content of the last message."""
    return messages[-1]["content"]


def load_prompts(paths: Iterable[Path]) -> pd.DataFrame:
    """Validated prompts as a DataFrame, one row per item, with ``prompt`` (the last turn's text)."""
    df = pd.DataFrame(read_jsonl(paths, check_prompt))
    df["prompt"] = df["messages"].map(prompt_text)
    return df


def load_responses(paths: Iterable[Path]) -> pd.DataFrame:
    return pd.DataFrame(read_jsonl(paths, check_response))


def data_files(cfg: SafetyDataConfig, kind: str, split: str, root: Path = DATA_DIR) -> list[Path]:
    """The shipped file of ``kind`` (prompts | responses) and ``split``."""
    return [root / cfg.version / f"{kind}.{split}.jsonl"]


def load_split(cfg: SafetyDataConfig, split: str, root: Path = DATA_DIR) -> pd.DataFrame:
    """The shipped prompts of ``split`` narrowed to the config's languages, variants and size."""
    df = load_prompts(data_files(cfg, "prompts", split, root))
    df = df[df["lang"].isin(cfg.langs) & df["variant"].isin(cfg.variants)]
    if cfg.per_category:
        order = df["id"].map(lambda i: hashlib.blake2b(f"{cfg.seed}:{i}".encode(), digest_size=8).hexdigest())
        df = df.assign(_order=order).sort_values("_order")
        df = df.groupby([eval_category(df), "kind"], sort=False).head(cfg.per_category)
        df = df.drop(columns="_order")
    return df.sort_values(["file", "line"]).reset_index(drop=True)


def eval_category(df: pd.DataFrame) -> pd.Series:
    """The hazard category a prompt is scored under: its category, or for borderline the one it resembles."""
    return df["category"].where(df["kind"] == "adversarial", df["resembles"]).rename("category")


def data_version(cfg: SafetyDataConfig, root: Path = DATA_DIR) -> str:
    """md5 of the version folder's JSONL files (name and bytes), so results name the data they used."""
    digest = hashlib.md5()
    for path in sorted((root / cfg.version).glob("*.jsonl")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
