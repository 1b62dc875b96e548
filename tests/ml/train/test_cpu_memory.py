"""ml/train/cpu_memory.py: glibc's mmap and trim thresholds raised once per process."""

from __future__ import annotations

import ctypes

import pytest

from ml.train import cpu_memory


@pytest.fixture
def calls(monkeypatch):
    """mallopt replaced by a recorder answering ``answer[0]``; the module's once-per-process flag reset."""
    seen: list[tuple[int, int]] = []
    answer = [1]

    def mallopt(param, value):
        seen.append((param, value.value))
        return answer[0]

    monkeypatch.setattr(cpu_memory, "_applied", False)
    monkeypatch.setattr(cpu_memory, "_mallopt", lambda: mallopt)
    return seen, answer


def test_both_thresholds_are_raised_to_the_largest_int_once(calls):
    seen, _ = calls
    assert cpu_memory.keep_freed_memory() is True
    assert seen == [(-3, 2**31 - 1), (-1, 2**31 - 1)]  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    assert cpu_memory.keep_freed_memory() is True
    assert len(seen) == 2  # applied already: mallopt is not called again


def test_a_refused_setting_or_no_glibc_reports_false(calls, monkeypatch):
    seen, answer = calls
    answer[0] = 0  # mallopt's error answer
    assert cpu_memory.keep_freed_memory() is False
    assert seen == [(-3, 2**31 - 1)]  # stops at the first refusal
    monkeypatch.setattr(cpu_memory, "_mallopt", lambda: None)
    assert cpu_memory.keep_freed_memory() is False


def test_this_glibc_accepts_the_settings():
    assert cpu_memory._mallopt() is not None
    assert cpu_memory._mallopt()(cpu_memory.M_TRIM_THRESHOLD, ctypes.c_int(2**31 - 1)) == 1
    assert cpu_memory.keep_freed_memory() is True
