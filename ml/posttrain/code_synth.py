"""Verified synthetic code tasks (Llama 3 paper §4.3.1: execution feedback — parse, run unit tests).

A task is a function to write (name, signature, description), a reference solution and unit tests whose
expected values come from a trusted in-process twin of the reference, never from executing generated code
here. A candidate (the reference, or a model's answer during rejection sampling) is judged by
:func:`check_candidate`: parsed with ``ast`` (no execution), then run with the tests in the sandbox
(ml/posttrain/sandbox.py) in a separate, network-less, time- and memory-limited process.

Limitation, stated: the harness and the candidate share one sandboxed interpreter, so a candidate written
to forge the harness's result line could; the result line carries a random nonce and the candidate's
own prints are captured, which stops accidents, not a determined adversary.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import random
import secrets
from collections.abc import Callable
from typing import Any

from ml.posttrain.sandbox import SandboxLimits, SandboxResult, run_python


@dataclasses.dataclass(frozen=True)
class CodeTask:
    id: str
    family: str
    prompt: str
    function: str
    reference: str
    tests: list[tuple[list[Any], Any]]  # (arguments, expected result)

    def to_record(self) -> dict[str, Any]:
        """An SFT record: the prompt and the reference solution; tests kept for evaluation."""
        return {
            "id": self.id,
            "family": self.family,
            "tests": [[a, e] for a, e in self.tests],
            "messages": [
                {"role": "user", "content": self.prompt},
                {"role": "assistant", "content": f"```python\n{self.reference}```"},
            ],
        }


@dataclasses.dataclass(frozen=True)
class CodeVerdict:
    """status: passed | syntax_error | missing_function | error | failed_tests | timeout | crashed;
    failures: the first failing tests as "name(args) -> got, expected e"."""

    status: str
    passed: int
    total: int
    failures: list[str]
    detail: str
    run: SandboxResult | None

    @property
    def ok(self) -> bool:
        return self.status == "passed"


# family -> (function name, description, reference source, trusted twin, argument generator)
_Family = tuple[str, str, str, Callable[..., Any], Callable[[random.Random], list[Any]]]


def _families(k: int) -> dict[str, _Family]:
    """The task families with parameter ``k`` drawn per task (so tasks of one family differ)."""
    return {
        "clamp_scale": (
            "clamp_scale",
            f"returns x * {k} clamped to the closed range [lo, hi]",
            f"def clamp_scale(x, lo, hi):\n    return max(lo, min(hi, x * {k}))\n",
            lambda x, lo, hi: max(lo, min(hi, x * k)),
            lambda r: [r.randint(-50, 50), r.randint(-60, 0), r.randint(1, 60)],
        ),
        "every_kth": (
            "every_kth",
            f"returns every {k}th element of the list xs, starting with the first",
            f"def every_kth(xs):\n    return xs[::{k}]\n",
            lambda xs: xs[::k],
            lambda r: [[r.randint(0, 9) for _ in range(r.randint(0, 12))]],
        ),
        "running_sum": (
            "running_sum",
            f"returns the running sums of xs, each plus {k}",
            "def running_sum(xs):\n    out, total = [], 0\n    for x in xs:\n        total += x\n"
            f"        out.append(total + {k})\n    return out\n",
            lambda xs: [sum(xs[: i + 1]) + k for i in range(len(xs))],
            lambda r: [[r.randint(-9, 9) for _ in range(r.randint(0, 8))]],
        ),
        "count_multiples": (
            "count_multiples",
            f"returns how many integers in xs are multiples of {k}",
            f"def count_multiples(xs):\n    return sum(1 for x in xs if x % {k} == 0)\n",
            lambda xs: sum(1 for x in xs if x % k == 0),
            lambda r: [[r.randint(-30, 30) for _ in range(r.randint(0, 10))]],
        ),
    }


FAMILIES = tuple(_families(2))


def make_code_task(family: str, rng: random.Random, n_tests: int = 6) -> CodeTask:
    """One task of ``family`` with ``n_tests`` unit tests; id = hash of the prompt."""
    k = rng.randint(2, 5)
    fams = _families(k)
    if family not in fams:
        raise ValueError(f"unknown code family {family!r}; choose one of {', '.join(FAMILIES)}")
    name, description, reference, twin, draw = fams[family]
    args_list = [draw(rng) for _ in range(n_tests)]
    tests = [(args, twin(*args)) for args in args_list]
    prompt = f"Write a Python function `{name}` that {description}. Reply with the code only."
    tid = "code-" + hashlib.sha256((prompt + json.dumps(tests)).encode()).hexdigest()[:16]
    return CodeTask(tid, family, prompt, name, reference, tests)


def generate_code_tasks(n: int, seed: int = 0) -> list[CodeTask]:
    rng = random.Random(seed)
    return [make_code_task(FAMILIES[i % len(FAMILIES)], rng) for i in range(n)]


_HARNESS = """\
import contextlib, io, json, sys
NONCE, NAME, TESTS = {nonce!r}, {name!r}, json.loads({tests!r})
SOURCE = open("candidate.py", encoding="utf-8").read()
ns, report = {{}}, {{"passed": 0, "failures": []}}
with contextlib.redirect_stdout(io.StringIO()):
    try:
        exec(compile(SOURCE, "candidate.py", "exec"), ns)
    except BaseException as e:
        report["error"] = type(e).__name__ + ": " + str(e)[:200]
    fn = ns.get(NAME)
    for args, expected in TESTS if "error" not in report and callable(fn) else []:
        try:
            got = fn(*args)
        except BaseException as e:
            got = "raised " + type(e).__name__
        if got == expected:
            report["passed"] += 1
        else:
            report["failures"].append(NAME + "(" + ", ".join(map(repr, args)) + ") -> " + repr(got)[:80]
                                      + ", expected " + repr(expected))
    if "error" not in report and not callable(fn):
        report["error"] = "missing_function"
sys.__stdout__.write("\\n" + NONCE + json.dumps(report) + "\\n")
"""


def _parse_report(run: SandboxResult, nonce: str) -> dict[str, Any] | None:
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith(nonce)]
    return json.loads(lines[-1][len(nonce) :]) if lines else None


def check_candidate(task: CodeTask, code: str, limits: SandboxLimits = SandboxLimits()) -> CodeVerdict:
    """Parse ``code``, then run ``task``'s unit tests against it in the sandbox."""
    total = len(task.tests)
    try:
        ast.parse(code)
    except SyntaxError as exc:
        return CodeVerdict("syntax_error", 0, total, [], f"line {exc.lineno}: {exc.msg}", None)
    nonce = secrets.token_hex(16)
    harness = _HARNESS.format(nonce=nonce, name=task.function, tests=json.dumps(task.tests))
    run = run_python(harness, limits, files={"candidate.py": code})
    report = _parse_report(run, nonce)
    if run.timed_out:
        return CodeVerdict("timeout", 0, total, [], f"over {limits.wall_seconds}s wall clock", run)
    if report is None:
        return CodeVerdict("crashed", 0, total, [], f"{run.outcome}: {run.stderr[-300:]}", run)
    if report.get("error") == "missing_function":
        return CodeVerdict("missing_function", 0, total, [], f"no function {task.function!r} defined", run)
    if "error" in report:
        return CodeVerdict("error", 0, total, [], report["error"], run)
    status = "passed" if report["passed"] == total else "failed_tests"
    return CodeVerdict(status, report["passed"], total, report["failures"][:5], "", run)
