"""``torch.compile`` wrappers for kernels that are only fast compiled (flex attention, mask build, loss chunks)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

_COMPILED: dict[Callable, Callable] = {}


def compiled(fn: Callable, **compile_kwargs: Any) -> Callable:
    """``torch.compile(fn)``, made once, for eager callers; ``fn`` itself while dynamo traces a caller (the
    outer graph compiles it). A wrapper made during a trace must not be kept: the eager path would later get
    the plain, uncompiled function (flex attention's unfused fallback)."""
    if torch.compiler.is_compiling():
        return fn
    if fn not in _COMPILED:
        _COMPILED[fn] = torch.compile(fn, **compile_kwargs)
    return _COMPILED[fn]
