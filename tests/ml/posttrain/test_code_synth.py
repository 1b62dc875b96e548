"""Synthetic code tasks: reference solutions pass their tests in the sandbox; bad candidates are judged."""

from __future__ import annotations

import random

import pytest

from ml.posttrain.code_synth import FAMILIES, check_candidate, generate_code_tasks, make_code_task
from ml.posttrain.sandbox import SandboxLimits, backend

pytestmark = pytest.mark.skipif(backend() != "bwrap", reason="bubblewrap not installed")
LIMITS = SandboxLimits(cpu_seconds=2, wall_seconds=20)


def test_task_is_exact():
    t = make_code_task("every_kth", random.Random(0))
    assert (
        t.prompt == "Write a Python function `every_kth` that returns every 5th element of the list xs, "
        "starting with the first. Reply with the code only."
    )
    assert t.reference == "def every_kth(xs):\n    return xs[::5]\n"
    assert all(expected == args[0][::5] for args, expected in t.tests) and len(t.tests) == 6


def test_reference_solutions_pass_in_the_sandbox():
    tasks = generate_code_tasks(len(FAMILIES), seed=1)
    assert [t.family for t in tasks] == list(FAMILIES)
    for t in tasks:
        v = check_candidate(t, t.reference, LIMITS)
        assert (v.status, v.passed, v.total) == ("passed", 6, 6), (t.family, v)


def test_bad_candidates_get_their_verdict():
    t = make_code_task("count_multiples", random.Random(2))
    k = int(t.reference.split("% ")[1].split(" ")[0])
    off_by_one = f"def count_multiples(xs):\n    return sum(1 for x in xs if x % {k} == 0) + 1\n"
    v = check_candidate(t, off_by_one, LIMITS)
    assert v.status == "failed_tests" and v.passed == 0 and v.failures[0].startswith("count_multiples([")
    assert check_candidate(t, "def count_multiples(xs)\n    return 0", LIMITS).status == "syntax_error"
    assert check_candidate(t, "def other(xs):\n    return 0\n", LIMITS).status == "missing_function"
    assert check_candidate(t, "import nonexistent_module\n", LIMITS).detail.startswith("ModuleNotFoundError")
    loop = "def count_multiples(xs):\n    while True:\n        pass\n"
    assert (
        check_candidate(t, loop, SandboxLimits(cpu_seconds=1, wall_seconds=20)).status == "crashed"
    )  # SIGXCPU
    sleepy = "import time\ndef count_multiples(xs):\n    time.sleep(30)\n"
    assert check_candidate(t, sleepy, SandboxLimits(wall_seconds=1)).status == "timeout"
    exfil = (
        "import urllib.request\n"
        "def count_multiples(xs):\n"
        "    return urllib.request.urlopen('http://example.com', timeout=2).status\n"
    )
    v = check_candidate(t, exfil, LIMITS)
    assert v.status == "failed_tests" and "raised URLError" in v.failures[0]
    forger = 'print(\'{"passed": 6, "failures": []}\')\ndef count_multiples(xs):\n    return -1\n'
    assert check_candidate(t, forger, LIMITS).status == "failed_tests"  # its prints are not the report
