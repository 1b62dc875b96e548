"""Stage configs: one dataclass per stage, named presets, YAML in and out.

Every stage config subclasses :class:`StageConfig` and declares a class-level ``PRESETS`` dict mapping
preset names (``tiny``, ``small``, ``8b``, ``70b``, ``405b``) to field overrides. Unknown keys are an
error that names the key and the config, so a typo in YAML or Dagster run config never passes silently.

A field may itself be a StageConfig (``TrainConfig.model`` is a ``ModelConfig``). In a preset, YAML or an
override such a field is written as

* a preset name of the nested config (``model: tiny``): that preset's values;
* a mapping of its fields (``model: {vocab_size: 300}``): layered over what the layer below gave the field
  (the outer preset's value, else the field's default); ``preset`` inside the mapping
  (``model: {preset: small, vocab_size: 300}``) starts from that preset of the nested config instead;
* an instance of the nested config: taken as it is.

Unknown nested keys are errors naming the full path (``TrainConfig.model.xyz``).

Precedence, lowest to highest: the field defaults, the preset (``from_preset``; ``LIFECYCLE_PRESET`` when
none is named), the YAML file (``from_yaml(path, preset=...)``), explicit overrides (keyword arguments of
``from_preset``, :meth:`StageConfig.override`, Dagster run config). Each layer replaces plain fields and
merges nested-config mappings key by key, as above.
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


def _plain(value: Any) -> Any:
    """A field value as YAML/JSON data: Paths as strings, tuples (also nested) as lists."""
    if isinstance(value, StageConfig):
        return value.to_dict()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _is_stage_config(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, StageConfig)


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """Base for stage configs: presets, strict dict/YAML loading, nested configs, flat dict for MLflow."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def from_preset(cls, preset: str | None = None, **overrides: Any) -> Self:
        preset = preset or preset_from_env()
        if preset not in PRESET_NAMES:
            raise ConfigError(
                f"{cls.__name__}: unknown preset {preset!r}; choose one of {', '.join(PRESET_NAMES)}"
            )
        return cls.from_dict(cls.layer(dict(cls.PRESETS.get(preset, {})), overrides))

    @classmethod
    def nested_fields(cls) -> dict[str, type[StageConfig]]:
        """Fields whose type is itself a StageConfig, by name."""
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls) if _is_stage_config(hints[f.name])}

    @classmethod
    def layer(cls, base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
        """``over`` on top of ``base`` (raw values): plain fields replaced, nested-config mappings merged."""
        nested = cls.nested_fields()
        out = dict(base)
        for key, value in over.items():
            below = out.get(key)
            if key in nested and isinstance(value, dict) and "preset" not in value and below is not None:
                if isinstance(below, str):
                    below = {"preset": below}
                elif isinstance(below, StageConfig):
                    below = below.to_dict()
                out[key] = nested[key].layer(below, value) if isinstance(below, dict) else value
            else:
                out[key] = value
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str | None = None) -> Self:
        """Build from raw values; ``where`` is this config's path in error messages (default: class name)."""
        where = where or cls.__name__
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ConfigError(
                f"unknown key(s) {', '.join(f'{where}.{k}' for k in unknown)}; "
                f"valid keys are {', '.join(sorted(fields))}"
            )
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for k, v in values.items():
            if _is_stage_config(hints[k]):
                kwargs[k] = hints[k]._nested(v, fields[k], f"{where}.{k}")
            else:
                kwargs[k] = _coerce(v, hints[k], f"{where}.{k}")
        try:
            return cls(**kwargs)
        except TypeError as exc:  # missing required field
            raise ConfigError(f"{where}: {exc}") from exc

    @classmethod
    def _nested(cls, value: Any, field: dataclasses.Field, where: str) -> Self:
        """A nested config from a preset name, a mapping of fields (optionally with ``preset``) or an instance."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            value = {"preset": value}
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a preset name or a mapping, got {type(value).__name__}")
        values = dict(value)
        preset = values.pop("preset", None)
        if preset is not None:
            try:
                base = cls.from_preset(preset).to_dict()
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from exc
        elif field.default is not dataclasses.MISSING:
            base = field.default.to_dict()
        elif field.default_factory is not dataclasses.MISSING:
            base = field.default_factory().to_dict()
        else:
            base = {}
        return cls.from_dict(cls.layer(base, values), where=where)

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

    def override(self, values: dict[str, Any]) -> Self:
        """This config with ``values`` layered on top (nested-config mappings merged key by key)."""
        return self.from_dict(self.layer(self.to_dict(), values))

    def to_dict(self) -> dict[str, Any]:
        """Field values as YAML/JSON data; nested configs as mappings (``from_dict`` reads it back)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_flat_dict(self) -> dict[str, Any]:
        """Like ``to_dict`` with nested configs flattened to dotted keys (``model.dim``), e.g. MLflow params."""
        out: dict[str, Any] = {}
        for key, value in self.to_dict().items():
            if isinstance(getattr(self, key), StageConfig):
                out.update({f"{key}.{k}": v for k, v in getattr(self, key).to_flat_dict().items()})
            else:
                out[key] = value
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)
