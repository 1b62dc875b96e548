"""CPU training's memory allocator: keep freed memory in the process instead of handing it back to the OS.

A CPU training step allocates and frees the same large tensors every step (the loss's (rows, vocab) logits,
attention masks and scores, activations and their gradients). glibc's malloc serves blocks above
``M_MMAP_THRESHOLD`` (dynamic, at most 32 MiB) with a fresh ``mmap`` and returns them with ``munmap``, and
trims the heap's free top above ``M_TRIM_THRESHOLD``: every step then page-faults its tensors in again, zeroed
by the kernel. On the tiny pre-training run that was about 10% of the wall time in system time and slower
user time around it (benchmarks/engine_cpu.py). :func:`keep_freed_memory` raises both thresholds, so big
blocks come from the heap and freed ones are reused; the process keeps its peak memory until it exits.
Numerics are unchanged: only where the bytes live changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util

# mallopt parameters (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# chosen: the largest value mallopt takes (an int): no tensor of a CPU run is served by mmap, the heap is
# never trimmed
KEEP_BYTES = 2**31 - 1

_applied = False


def _mallopt():
    """glibc's ``mallopt``, or None (another C library, or none found)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
    except OSError:
        return None
    return getattr(libc, "mallopt", None)


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (once); False where there is no glibc."""
    global _applied
    if _applied:
        return True
    mallopt = _mallopt()
    if mallopt is None:
        return False
    ok = all(mallopt(param, ctypes.c_int(KEEP_BYTES)) == 1 for param in (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD))
    _applied = ok
    return ok
