"""Stage configs: one dataclass per stage, named presets, YAML in and out.

Every stage config subclasses :class:`StageConfig` and declares a class-level ``PRESETS`` dict mapping
preset names (``tiny``, ``small``, ``8b``, ``70b``, ``405b``) to field overrides. Unknown keys are an
error that names the key and the config, so a typo in YAML or Dagster run config never passes silently.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Self

import yaml

PRESET_NAMES: tuple[str, ...] = ("tiny", "small", "8b", "70b", "405b")
DEFAULT_PRESET = "tiny"


class ConfigError(ValueError):
    """A config value or key is wrong; the message names the config and the key."""


def preset_from_env() -> str:
    """The preset named by ``LIFECYCLE_PRESET`` (default ``tiny``), validated."""
    name = os.environ.get("LIFECYCLE_PRESET", DEFAULT_PRESET).strip() or DEFAULT_PRESET
    if name not in PRESET_NAMES:
        raise ConfigError(
            f"LIFECYCLE_PRESET={name!r} is not a preset; choose one of {', '.join(PRESET_NAMES)}"
        )
    return name


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Turn YAML/JSON values into the field's declared type (tuples, Paths, floats from ints)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if value is None:
        return None
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        return _coerce(value, non_none[0], where) if len(non_none) == 1 else value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        return tuple(value)
    if origin is dict or origin is list:
        return value
    if annotation is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if annotation is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if annotation is Path:
        return Path(value)
    if annotation in (int, float, str, bool) and not isinstance(value, annotation):
        raise ConfigError(f"{where}: expected {annotation.__name__}, got {type(value).__name__} {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """Base for stage configs: presets, strict dict/YAML loading, flat dict for MLflow params."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def from_preset(cls, preset: str | None = None, **overrides: Any) -> Self:
        preset = preset or preset_from_env()
        if preset not in PRESET_NAMES:
            raise ConfigError(
                f"{cls.__name__}: unknown preset {preset!r}; choose one of {', '.join(PRESET_NAMES)}"
            )
        values = dict(cls.PRESETS.get(preset, {}))
        values.update(overrides)
        return cls.from_dict(values)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ConfigError(
                f"{cls.__name__}: unknown key(s) {', '.join(unknown)}; valid keys are {', '.join(sorted(fields))}"
            )
        hints = typing.get_type_hints(cls)
        kwargs = {k: _coerce(v, hints[k], f"{cls.__name__}.{k}") for k, v in values.items()}
        try:
            return cls(**kwargs)
        except TypeError as exc:  # missing required field
            raise ConfigError(f"{cls.__name__}: {exc}") from exc

    @classmethod
    def from_yaml(cls, path: str | Path, preset: str | None = None) -> Self:
        """Load ``path``; a top-level mapping of fields, layered over ``preset`` when given."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{cls.__name__}: cannot read YAML {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}: YAML {path} must hold a mapping, got {type(data).__name__}")
        return cls.from_preset(preset, **data) if preset else cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Path):
                v = str(v)
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)
