"""Synthetic math: every generated step checks exactly; wrong steps and answers are caught and named."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from ml.posttrain.math_synth import FAMILIES, evaluate, generate_math, make_problem, verify_solution


def test_evaluate_is_exact_and_refuses_code():
    assert evaluate("7 * 5 + 2 * 12") == 59
    assert evaluate("(124) / (60)") == Fraction(31, 15)
    assert evaluate("-14 - (-47)") == 33
    for bad in ("__import__('os').system('x')", "2 ** 10", "x + 1", "1 / 0"):
        with pytest.raises(ValueError):
            evaluate(bad)


def test_generated_problems_verify_and_are_exact():
    problems = generate_math(60, seed=3)
    assert len({p.id for p in problems}) == 60
    assert {p.family for p in problems} == set(FAMILIES)
    for p in problems:
        assert verify_solution(p.solution, p.answer).ok, p
    p = make_problem("fractions", random.Random(1))
    assert p.question == "Compute 3/11 + 2/6 and give the result as a reduced fraction."
    assert p.solution.splitlines() == [  # 3/11 + 2/6 = 18/66 + 22/66 = 40/66 = 20/33
        "Common denominator: 11 * 6 = 66",
        "Numerator: 3 * 6 + 2 * 11 = 40",
        "Reduce: (40) / (66) = 20/33",
        "Answer: 20/33",
    ]
    assert p.answer == Fraction(20, 33) and p.to_record()["answer"] == "20/33"


def test_wrong_step_and_wrong_answer_are_named():
    good = "Notebooks sold: 7 * 2 = 14\nLeft: 132 - 14 = 118\nAnswer: 118"
    assert verify_solution(good, Fraction(118)).ok
    assert (
        verify_solution(good.replace("= 118", "= 119", 1), Fraction(118)).reason
        == "line 2: 132 - 14 is 118, not 119"
    )
    assert verify_solution(good, Fraction(117)).reason == "answer 118 != expected 117"
    assert verify_solution("Answer: 5", Fraction(5)).reason == "no checked step before the answer"
    assert verify_solution("1 + 1 = 2\nso 5", Fraction(5)).reason.startswith("line 2: the last line must be")
    assert verify_solution("x = 2 ** 3\nAnswer: 8", Fraction(8)).reason.startswith(
        "line 1: not an arithmetic step"
    )
