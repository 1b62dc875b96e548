"""FlexAttention tile settings for the document mask, and the backward configs Inductor is offered for them.

A settings dict holds FlexKernelOptions keys (tile sizes, warps, pipeline stages) plus "mask_block_size",
the block mask's tile. ``FLEX_TUNED`` maps (GPU compute capability, head dim, dtype) to the settings
benchmarks/flex_tuning.py measured fastest (benchmarks/NOTES.md has the tables); shapes with no entry keep
torch's defaults. ``set_flex_settings`` overrides the table process-wide (the tuner and the throughput
benchmark use it).

Inductor (torch 2.11 to 2.13) drops every FlexAttention backward config whose tiles do not divide the mask's
tile, before ``kernel_options`` replace the tiles. Its H100 default at head dim 64 is 64x128/128x64, so a
64-token mask leaves no config (NoValidChoicesError) even when the options ask for 64x64. While a
``FlexConfigOffer`` is open, Inductor's chooser also returns the asked-for config, only where no default
fits. Nothing is changed at import or when a model is built: the offer is opened by whoever compiles
(``ml.train.dist.apply_compile`` for a model's lifetime, the eager flex path in ``ml.model.attention``,
benchmarks around their compiles) and the original chooser comes back when the last offer is released.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from typing import Any, Self

import torch

# ROWS_GUARANTEED_SAFE and BLOCKS_ARE_CONTIGUOUS are never set: a document mask breaks both (a row's first
# visited key block can be all masked; a query block's partially masked key blocks, its document start and
# the diagonal, are not one contiguous run).
FLEX_TUNED: dict[tuple[tuple[int, int], int, torch.dtype], dict[str, int]] = {
    # H100 SXM, head dim 64, bf16 (the small and 1b presets), B=16, T=2048, 12/4 heads, one layer fwd+bwd:
    # 0.763 ms against 1.144 ms with torch's defaults. A 64-token mask visits 15% less of the T x T plane
    # than torch's 128 (partial blocks 7.4% instead of 14.0%); its backward needs the offered config.
    ((9, 0), 64, torch.bfloat16): {
        "mask_block_size": 64,
        "fwd_BLOCK_M": 64,
        "fwd_BLOCK_N": 64,
        "fwd_num_warps": 4,
        "fwd_num_stages": 3,
        "bwd_BLOCK_M1": 64,
        "bwd_BLOCK_N1": 64,
        "bwd_BLOCK_M2": 64,
        "bwd_BLOCK_N2": 64,
        "bwd_num_warps": 4,
        "bwd_num_stages": 3,
    },
}
_override: dict[str, int] | None = None


def split_flex_settings(settings: dict[str, int]) -> tuple[int, dict[str, int]]:
    """(block mask tile, FlexKernelOptions) of a settings dict; the tile defaults to torch's 128."""
    options = dict(settings)
    return options.pop("mask_block_size", 128), options


def set_flex_settings(settings: dict[str, int] | None) -> None:
    """Use ``settings`` for every flex call from now on; None goes back to the tuned table."""
    global _override
    if settings is not None:
        check_bwd_tiles(settings)
    _override = dict(settings) if settings is not None else None


@torch.compiler.assume_constant_result
def _cuda_capability(index: int) -> tuple[int, int]:
    # a constant to torch.compile (read once at trace time), so compiled graphs may look up FLEX_TUNED
    return torch.cuda.get_device_capability(index)


def flex_settings(device: torch.device, head_dim: int, dtype: torch.dtype) -> dict[str, int]:
    """The override if set, else the tuned entry for this GPU, head dim and dtype ({} if none)."""
    if _override is not None:
        return dict(_override)
    if device.type != "cuda":
        return {}
    index = device.index if device.index is not None else 0
    return dict(FLEX_TUNED.get((_cuda_capability(index), head_dim, dtype), {}))


# ---------------------------------------------------------------------------------------------------------
# The backward configs offered to Inductor

# FlexBwDConfig field -> its FlexKernelOptions key in a settings dict
_BWD_TILES = {t: f"bwd_{t.upper()}" for t in ("block_m1", "block_n1", "block_m2", "block_n2")}


def _needs_offer(settings: dict[str, int]) -> bool:
    block, options = split_flex_settings(settings)
    return block < 128 and any(k.startswith("bwd_") for k in options)


def check_bwd_tiles(settings: dict[str, int]) -> None:
    """A mask tile under 128 with backward options must name all four backward tiles (ValueError if not)."""
    if not _needs_offer(settings):
        return
    missing = [key for key in _BWD_TILES.values() if key not in settings]
    if missing:
        block, _ = split_flex_settings(settings)
        raise ValueError(f"flex settings {settings}: a {block}-token block mask needs {missing} as well")


def _bwd_offers() -> dict[int, dict[str, int]]:
    """Mask tile -> the settings whose backward config is offered: the table's small-mask entries, then the
    override (which wins for its tile)."""
    candidates = [*FLEX_TUNED.values(), *([_override] if _override is not None else [])]
    return {split_flex_settings(s)[0]: s for s in candidates if _needs_offer(s)}


def _fits(conf: Any, block: int) -> bool:
    return all(block % getattr(conf, t) == 0 for t in _BWD_TILES)


def _offered_bwd_configs(configs: list[Any]) -> list[Any]:
    """``configs`` plus, for each offered mask tile that none of them divides, the asked-for config (a copy
    of the last default with the tiles, warps and stages replaced)."""
    out = list(configs)
    for block, opts in _bwd_offers().items():
        if out and not any(_fits(c, block) for c in out):
            tiles = {t: opts[key] for t, key in _BWD_TILES.items()}
            extra = {k: opts[f"bwd_{k}"] for k in ("num_warps", "num_stages") if f"bwd_{k}" in opts}
            out.append(dataclasses.replace(out[-1], **tiles, **extra))
    return out


_lock = threading.Lock()
_open_offers = 0
_original_chooser: Any = None


def _install() -> None:
    """Wrap ``InductorChoices.get_flex_attention_bwd_configs`` (the first open offer does this).

    The class method is wrapped rather than a choices handler installed: the backward is compiled lazily in
    autograd's device thread, which never sees a handler set in the calling thread (handlers are
    thread-local)."""
    global _original_chooser
    from torch._inductor.choices import InductorChoices

    original = InductorChoices.get_flex_attention_bwd_configs
    _original_chooser = original

    def get_flex_attention_bwd_configs(self, head_dim, dtype, device_type="cuda"):
        return _offered_bwd_configs(original(self, head_dim, dtype, device_type))

    InductorChoices.get_flex_attention_bwd_configs = get_flex_attention_bwd_configs


def _uninstall() -> None:
    global _original_chooser
    from torch._inductor.choices import InductorChoices

    InductorChoices.get_flex_attention_bwd_configs = _original_chooser
    _original_chooser = None


class FlexConfigOffer:
    """One hold on the backward-config offer; Inductor's chooser is wrapped while any hold is open.

    Use as a context manager around code that compiles and runs its first backward, or ``open()`` it for
    as long as compiled code may recompile and ``release()`` it after (idempotent). Open it outside any
    trace: it is a side effect dynamo must not see."""

    def __init__(self) -> None:
        self.is_open = False

    def open(self) -> Self:
        global _open_offers
        with _lock:
            if not self.is_open:
                if _open_offers == 0:
                    _install()
                _open_offers += 1
                self.is_open = True
        return self

    def release(self) -> None:
        global _open_offers
        with _lock:
            if self.is_open:
                self.is_open = False
                _open_offers -= 1
                if _open_offers == 0:
                    _uninstall()

    def __deepcopy__(self, memo: dict) -> FlexConfigOffer:
        return FlexConfigOffer()  # a copied module holds nothing until it is compiled (and held) itself

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.release()


def flex_compile_configs() -> FlexConfigOffer:
    """``with flex_compile_configs(): ...`` offers the tuned backward configs inside the block only."""
    return FlexConfigOffer()


def hold_flex_compile_configs(module: torch.nn.Module) -> FlexConfigOffer:
    """Open an offer for the lifetime of ``module`` (a compiled model may recompile, backward included, at
    any later call): kept as ``module.flex_config_offer``, released by ``release_flex_compile_configs`` or
    when the module is garbage-collected. Idempotent per module."""
    offer = module.__dict__.get("flex_config_offer")
    if offer is None or not offer.is_open:  # none yet, released, or a deep copy's closed one
        offer = FlexConfigOffer().open()
        module.__dict__["flex_config_offer"] = offer
        weakref.finalize(module, offer.release)
    return offer


def release_flex_compile_configs(module: torch.nn.Module) -> None:
    """Undo ``hold_flex_compile_configs(module)``; the chooser is restored once no other offer is open."""
    offer = module.__dict__.get("flex_config_offer")
    if offer is not None:
        offer.release()
