"""Construction-time checks for the source configs: every field has the declared type (a bool is not an
int here, NaN and infinity are not numbers) and every number is in its range; errors name the field and
the value."""

from __future__ import annotations

import dataclasses
import math
import typing
from functools import cache
from typing import Any

from ml.config import ConfigError


@cache
def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _type_error(cfg: object, name: str, value: Any, expected: Any) -> str | None:
    """Why ``value`` is not of the declared type ``expected`` (None when it is)."""
    if expected is bool:
        ok = isinstance(value, bool)
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif expected is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    elif expected is str:
        ok = isinstance(value, str)
    elif typing.get_origin(expected) is tuple:
        ok = isinstance(value, tuple) and all(isinstance(v, str) for v in value)
        expected = "tuple of str"
    else:
        return None
    if ok:
        return None
    label = ("finite " if expected is float else "") + str(getattr(expected, "__name__", expected))
    return f"{type(cfg).__name__}.{name} must be a {label}, got {value!r}"


def check_fields(
    cfg: object,
    minimum: dict[str, float],
    positive: tuple[str, ...] = (),
    maximum: dict[str, float] | None = None,
) -> None:
    """Raise :class:`ConfigError` naming the first field of dataclass ``cfg`` out of its type or range.

    ``minimum``: field -> smallest allowed value; ``positive``: fields that must be > 0 (a time or a
    ratio where 0 means nothing); ``maximum``: field -> largest allowed value.
    """
    for name, expected in _field_types(type(cfg)).items():
        if (why := _type_error(cfg, name, getattr(cfg, name), expected)) is not None:
            raise ConfigError(why)
    where = type(cfg).__name__
    for name in positive:
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"{where}.{name} must be > 0, got {getattr(cfg, name)!r}")
    for name, low in minimum.items():
        if getattr(cfg, name) < low:
            raise ConfigError(f"{where}.{name} must be >= {low}, got {getattr(cfg, name)!r}")
    for name, high in (maximum or {}).items():
        if getattr(cfg, name) > high:
            raise ConfigError(f"{where}.{name} must be <= {high}, got {getattr(cfg, name)!r}")


def check_name(where: str, value: Any) -> None:
    """A file-name prefix: a non-empty str without path separators."""
    if not isinstance(value, str) or not value or "/" in value or "\\" in value or value in (".", ".."):
        raise ConfigError(f"{where} must be a non-empty file-name prefix without '/', got {value!r}")
