"""Stage configs as Dagster run config.

Each ml/ stage dataclass becomes a ``dg.Config`` with the same fields (all optional: unset means "take
the preset's value"), plus ``preset`` and ``config_yaml``. The launchpad therefore shows every field of
the stage, and the resolved dataclass is what the asset logs to MLflow as params.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Optional

import dagster as dg
import pydantic

from ml.config import StageConfig, preset_from_env


def _dagster_type(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        return _dagster_type(non_none[0]) if len(non_none) == 1 else Any
    if origin is tuple:
        return list[_dagster_type(args[0])] if args else list[str]
    if origin is list:
        return list[_dagster_type(args[0])] if args else list[str]
    if origin is dict:
        return dict[str, _dagster_type(args[1])] if args else dict[str, str]
    if annotation is Path:
        return str
    if annotation in (int, float, str, bool):
        return annotation
    return Any


def dagster_config_for(cls: type[StageConfig], **extra: tuple[Any, Any]) -> type[dg.Config]:
    """A ``dg.Config`` mirroring ``cls``: ``preset``, ``config_yaml`` and every field as an optional override.

    ``extra`` adds asset-level fields (name → (type, pydantic.Field)) that are not part of the stage config.
    """
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {
        "preset": (
            Optional[str],
            pydantic.Field(None, description="tiny | small | 8b | 70b | 405b (default: LIFECYCLE_PRESET)"),
        ),
        "config_yaml": (
            Optional[str],
            pydantic.Field(None, description="YAML file of field values layered over the preset"),
        ),
    }
    for f in dataclasses.fields(cls):
        fields[f.name] = (
            Optional[_dagster_type(hints[f.name])],
            pydantic.Field(None, description=f"{cls.__name__}.{f.name}"),
        )
    fields.update(extra)
    return pydantic.create_model(f"{cls.__name__}Run", __base__=dg.Config, **fields)


def resolve_config(cls: type[StageConfig], run_config: dg.Config | None):
    """Preset (run config > ``LIFECYCLE_PRESET``) → YAML file → explicit field overrides."""
    values = run_config.model_dump() if run_config is not None else {}
    names = {f.name for f in dataclasses.fields(cls)} | {"preset", "config_yaml"}
    values = {k: v for k, v in values.items() if k in names}
    preset = values.pop("preset", None) or preset_from_env()
    yaml_path = values.pop("config_yaml", None)
    overrides = {k: v for k, v in values.items() if v is not None}
    cfg = cls.from_yaml(yaml_path, preset=preset) if yaml_path else cls.from_preset(preset)
    return cfg.from_dict({**cfg.to_dict(), **overrides}) if overrides else cfg
