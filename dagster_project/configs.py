"""Stage configs as Dagster run config, and the one place that layers them.

Precedence, lowest to highest (``resolve_config``; tests/pipeline/test_configs.py checks each step):

1. the **preset**: ``preset`` in the run config, else ``LIFECYCLE_PRESET``, else ``tiny`` — the
   dataclass's ``PRESETS[preset]`` over its field defaults;
2. the **YAML** file named by ``config_yaml`` in the run config (a mapping of fields);
3. the **run config** fields set in the launchpad / ``run_config`` / ``lifecycle --preset`` (unset = None
   = keep the value below). A nested dataclass field is a nested mapping, merged field by field.

``dagster_config_for(StageCfg)`` generates the ``dg.Config`` class the launchpad shows: ``preset``,
``config_yaml`` and every field of the dataclass, all optional; a nested dataclass field becomes a
nested config of optional fields. Each generated class records its dataclass in ``stage_config``, and
``RUN_CONFIGS`` lists them all (``lifecycle configs`` prints them).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Optional

import dagster as dg
import pydantic

from ml.config import StageConfig, preset_from_env

LAYER_FIELDS = ("preset", "config_yaml")
RUN_CONFIGS: dict[str, type[dg.Config]] = {}


class StageRunConfig(dg.Config):
    """Base of the generated run configs; ``stage_config`` is the dataclass the fields mirror."""

    stage_config: ClassVar[type]


def _dagster_type(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        return _dagster_type(non_none[0]) if len(non_none) == 1 else Any
    if origin in (tuple, list):
        return list[_dagster_type(args[0])] if args else list[str]
    if origin is dict:
        return dict[str, _dagster_type(args[1])] if args else dict[str, str]
    if dataclasses.is_dataclass(annotation):
        return _nested_config(annotation)
    if annotation is Path:
        return str
    if annotation in (int, float, str, bool):
        return annotation
    return Any


def _optional_fields(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {
        f.name: (
            Optional[_dagster_type(hints[f.name])],
            pydantic.Field(None, description=f"{cls.__name__}.{f.name}"),
        )
        for f in dataclasses.fields(cls)
    }


def _nested_config(cls: type) -> type[dg.Config]:
    """A nested dataclass field: a config of the same fields, all optional."""
    model = pydantic.create_model(f"{cls.__name__}Fields", __base__=dg.Config, **_optional_fields(cls))
    model.stage_config = cls
    return model


def dagster_config_for(cls: type[StageConfig], **extra: tuple[Any, Any]) -> type[dg.Config]:
    """A ``dg.Config`` mirroring ``cls``: ``preset``, ``config_yaml`` and every field as an optional override.

    ``extra`` adds asset-level fields (name → (type, pydantic.Field)) that are not part of the stage config.
    """
    fields: dict[str, Any] = {
        "preset": (
            Optional[str],
            pydantic.Field(None, description="tiny | small | 8b | 70b | 405b (default: LIFECYCLE_PRESET)"),
        ),
        "config_yaml": (
            Optional[str],
            pydantic.Field(None, description="YAML file of field values layered over the preset"),
        ),
        **_optional_fields(cls),
        **extra,
    }
    model = pydantic.create_model(f"{cls.__name__}Run", __base__=StageRunConfig, **fields)
    model.stage_config = cls
    RUN_CONFIGS[model.__name__] = model
    return model


def _set_fields(value: Any) -> Any:
    """The fields a run config sets: None (unset) dropped, nested mappings kept only if they set any."""
    if not isinstance(value, dict):
        return value
    kept = {k: _set_fields(v) for k, v in value.items() if v is not None}
    return {k: v for k, v in kept.items() if v != {}}


def resolve_config(cls: type[StageConfig], run_config: dg.Config | None):
    """Preset (run config > ``LIFECYCLE_PRESET``) → YAML file → run config fields (see the module doc)."""
    values = run_config.model_dump() if run_config is not None else {}
    names = {f.name for f in dataclasses.fields(cls)} | set(LAYER_FIELDS)
    values = {k: v for k, v in values.items() if k in names}
    preset = values.pop("preset", None) or preset_from_env()
    yaml_path = values.pop("config_yaml", None)
    cfg = cls.from_yaml(yaml_path, preset=preset) if yaml_path else cls.from_preset(preset)
    return cfg.override(_set_fields(values))  # validated once, after every layer


def describe_run_configs() -> str:
    """Every generated run config class and the dataclass it mirrors, one field per line."""
    lines = []
    for name, model in sorted(RUN_CONFIGS.items()):
        lines.append(f"{name} <- {model.stage_config.__module__}.{model.stage_config.__qualname__}")
        for field, info in model.model_fields.items():
            lines.append(f"  {field}: {info.annotation}")
    return "\n".join(lines)
