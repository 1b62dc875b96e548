"""Verified synthetic math (Llama 3 paper §4.3.3: step-wise reasoning whose steps and answers are checked).

Problems are generated programmatically from a seed, with exact answers (``fractions.Fraction``) and a
step-by-step solution. Every step is one line ``[prose:] <arithmetic expression> = <number>``; the verifier
evaluates the left side exactly (a whitelist AST evaluator: numbers, + - * /, parentheses, nothing else)
and compares it with the right side, then checks the ``Answer:`` line against the expected answer.
A generated problem whose own solution fails verification is a bug and raises; a model-written solution
(rejection sampling) is judged by the same :func:`verify_solution`.

Families: ``linear`` (solve a·x + b = c, checked by substitution), ``shop`` (a multi-step word problem on
stock), ``fractions`` (sum of two fractions, reduced). A record's id is a hash of its problem text, so the
same problem always gets the same id — and the same held-out split (ml/posttrain/records.py).
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import operator
import random
import re
from fractions import Fraction
from typing import Any

FAMILIES = ("linear", "shop", "fractions")
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
# a step: optional prose ending in ":", then "<expression> = <number>"
_STEP = re.compile(r"^(?:[^:=]*:)?\s*(?P<lhs>[-+*/()\d\s.]+?)\s*=\s*(?P<rhs>-?\d+(?:/\d+)?)\s*$")
_ANSWER = re.compile(r"^Answer:\s*(?P<value>-?\d+(?:/\d+)?)\s*$")


@dataclasses.dataclass(frozen=True)
class MathProblem:
    id: str
    family: str
    question: str
    solution: str  # step lines, then "Answer: <value>"
    answer: Fraction

    def to_record(self) -> dict[str, Any]:
        """An SFT record (ml/posttrain/records.py) with the exact answer kept for evaluation."""
        return {
            "id": self.id,
            "family": self.family,
            "answer": format_number(self.answer),
            "messages": [
                {"role": "user", "content": self.question},
                {"role": "assistant", "content": self.solution},
            ],
        }


@dataclasses.dataclass(frozen=True)
class Verdict:
    """ok, and for a failure the 1-based line and the reason, e.g. ``line 2: 15 / 3 is 5, not 6``."""

    ok: bool
    reason: str = ""


def format_number(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def evaluate(expr: str) -> Fraction:
    """Exact value of an arithmetic expression (numbers, + - * /, parentheses); ValueError otherwise."""

    def ev(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return Fraction(str(node.value))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Div) and right == 0:
                raise ValueError("division by zero")
            return _OPS[type(node.op)](left, right)
        raise ValueError(f"not plain arithmetic: {ast.dump(node)[:60]}")

    try:
        return ev(ast.parse(expr.strip(), mode="eval"))
    except SyntaxError as exc:
        raise ValueError(f"not an expression: {expr!r}") from exc


def verify_solution(solution: str, expected: Fraction) -> Verdict:
    """Check every ``expr = value`` step exactly and the final ``Answer:`` line against ``expected``.

    Lines without ``=`` are prose and skipped; at least one step and exactly one final answer line are
    required."""
    lines = [ln for ln in solution.strip().splitlines() if ln.strip()]
    if not lines:
        return Verdict(False, "empty solution")
    steps = 0
    for no, line in enumerate(lines[:-1], start=1):
        if "=" not in line:
            continue
        m = _STEP.match(line)
        if m is None:
            return Verdict(False, f"line {no}: not an arithmetic step: {line!r}")
        try:
            value = evaluate(m["lhs"])
        except ValueError as exc:
            return Verdict(False, f"line {no}: {exc}")
        claimed = Fraction(m["rhs"])
        if value != claimed:
            return Verdict(False, f"line {no}: {m['lhs'].strip()} is {format_number(value)}, not {m['rhs']}")
        steps += 1
    final = _ANSWER.match(lines[-1])
    if final is None:
        return Verdict(False, f"line {len(lines)}: the last line must be 'Answer: <number>'")
    if steps == 0:
        return Verdict(False, "no checked step before the answer")
    if Fraction(final["value"]) != expected:
        return Verdict(False, f"answer {final['value']} != expected {format_number(expected)}")
    return Verdict(True)


def _linear(rng: random.Random) -> tuple[str, list[str], Fraction]:
    a, x, b = rng.randint(2, 12), rng.randint(-20, 20), rng.randint(-50, 50)
    c = a * x + b
    question = f"Solve for x: {a}x {'+' if b >= 0 else '-'} {abs(b)} = {c}."
    steps = [
        f"Move the constant to the right side: {c} - ({b}) = {c - b}",
        f"Divide both sides by {a}: {c - b} / {a} = {x}",
        f"Check by substitution: {a} * ({x}) + ({b}) = {c}",
    ]
    return question, steps, Fraction(x)


def _shop(rng: random.Random) -> tuple[str, list[str], Fraction]:
    stock, per_day, days = rng.randint(100, 500), rng.randint(3, 15), rng.randint(2, 7)
    delivery, price = rng.randint(10, 80), rng.randint(2, 9)
    left = stock - per_day * days + delivery
    question = (
        f"A shop has {stock} notebooks. It sells {per_day} notebooks a day for {days} days, then receives "
        f"a delivery of {delivery}. It sells every remaining notebook at {price} euros each. "
        "How many euros does it earn from those remaining notebooks?"
    )
    steps = [
        f"Notebooks sold: {per_day} * {days} = {per_day * days}",
        f"Left after the sales: {stock} - {per_day * days} = {stock - per_day * days}",
        f"After the delivery: {stock - per_day * days} + {delivery} = {left}",
        f"Earnings: {left} * {price} = {left * price}",
    ]
    return question, steps, Fraction(left * price)


def _fractions(rng: random.Random) -> tuple[str, list[str], Fraction]:
    a, b = rng.randint(1, 9), rng.randint(2, 12)
    c, d = rng.randint(1, 9), rng.randint(2, 12)
    total = Fraction(a, b) + Fraction(c, d)
    question = f"Compute {a}/{b} + {c}/{d} and give the result as a reduced fraction."
    steps = [
        f"Common denominator: {b} * {d} = {b * d}",
        f"Numerator: {a} * {d} + {c} * {b} = {a * d + c * b}",
        f"Reduce: ({a * d + c * b}) / ({b * d}) = {format_number(total)}",
    ]
    return question, steps, total


_GENERATORS = {"linear": _linear, "shop": _shop, "fractions": _fractions}


def make_problem(family: str, rng: random.Random) -> MathProblem:
    """One problem of ``family`` with its verified solution; id = hash of the question."""
    if family not in _GENERATORS:
        raise ValueError(f"unknown math family {family!r}; choose one of {', '.join(FAMILIES)}")
    question, steps, answer = _GENERATORS[family](rng)
    solution = "\n".join([*steps, f"Answer: {format_number(answer)}"])
    verdict = verify_solution(solution, answer)
    if not verdict.ok:  # the generator's own solution must pass its checker
        raise AssertionError(f"{family} generator wrote an unverifiable solution: {verdict.reason}")
    pid = "math-" + hashlib.sha256(question.encode()).hexdigest()[:16]
    return MathProblem(pid, family, question, solution, answer)


def generate_math(n: int, seed: int = 0, families: tuple[str, ...] = FAMILIES) -> list[MathProblem]:
    """``n`` distinct problems (by id), families in turn, from one seeded generator."""
    rng, out, seen = random.Random(seed), [], set()
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 20 * n + 100:
            raise ValueError(f"generate_math: only {len(out)} distinct problems after {attempts} draws")
        p = make_problem(families[len(out) % len(families)], rng)
        if p.id not in seen:
            seen.add(p.id)
            out.append(p)
    return out
