"""Preference pairs from verified records (Llama 3 paper §4.2.1/§4.3: chosen and rejected responses, here
judged by verifiers instead of annotators).

For every verified SFT record the chosen response is its verified solution and the rejected one a minimal
corruption that its verifier refuses: math — the last step's result and the answer off by one (the step
check fails); QA — another word of the text as the answer; code — the first integer literal of the
reference changed by one, and the result must fail its unit tests in the sandbox (a mutation that still
passes gives no pair and is counted). The pair keeps the record's id, so it shares its held-out split.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from fractions import Fraction
from typing import Any

from ml.posttrain.code_synth import CodeTask, check_candidate
from ml.posttrain.math_synth import verify_solution
from ml.posttrain.qa import verify_answer
from ml.posttrain.sandbox import SandboxLimits

_INT = re.compile(r"(?<![\w.])(\d+)(?![\w.])")
_LAST_STEP = re.compile(r"=\s*(-?\d+(?:/\d+)?)\s*$")


def corrupt_math(solution: str) -> str:
    """The solution with its last checked step's result and its answer one larger."""
    lines = solution.strip().splitlines()
    answer = Fraction(lines[-1].split(":", 1)[1].strip())
    wrong = answer + 1
    text = f"{wrong.numerator}" if wrong.denominator == 1 else f"{wrong.numerator}/{wrong.denominator}"
    steps = [i for i, ln in enumerate(lines[:-1]) if _LAST_STEP.search(ln)]
    if steps:
        lines[steps[-1]] = _LAST_STEP.sub(f"= {text}", lines[steps[-1]])
    return "\n".join([*lines[:-1], f"Answer: {text}"])


def corrupt_code(reply: str) -> str | None:
    """The reply with its first integer literal plus one; None when it has none."""
    m = _INT.search(reply.replace("```python", "```"))
    if m is None:
        return None
    body = reply.replace("```python", "```")
    mutated = body[: m.start()] + str(int(m.group(1)) + 1) + body[m.end() :]
    return mutated.replace("```", "```python", 1)


def corrupt_qa(record: Mapping[str, Any]) -> str | None:
    """The reply with another word of the text as the answer (in its sentence and its answer line)."""
    answer = record["answer"]
    words = [w for w in record["messages"][0]["content"].split() if w.isalpha() and w != answer]
    if not words:
        return None
    wrong = words[len(answer) % len(words)]
    first, _ = record["messages"][-1]["content"].rsplit("\n", 1)
    head, _ = first.rsplit(" is ", 1)
    return f"{head} is {wrong}.\nAnswer: {wrong}"


def code_source(reply: str) -> str:
    """The code of a reply: inside its first ```python fence when there is one, else the whole reply."""
    m = re.search(r"```(?:python)?\n(.*?)```", reply, re.DOTALL)
    return m.group(1) if m else reply


def code_task_of(record: Mapping[str, Any]) -> CodeTask:
    """The code task a record was built from (prompt, tests, function name), for checking candidates."""
    name = re.search(r"`(\w+)`", record["messages"][0]["content"]).group(1)
    tests = [(list(a), e) for a, e in record["tests"]]
    reference = code_source(record["messages"][-1]["content"])
    return CodeTask(record["id"], record["family"], record["messages"][0]["content"], name, reference, tests)


def _rejected(record: Mapping[str, Any], limits: SandboxLimits) -> tuple[str | None, str]:
    """(rejected response, "") or (None, drop reason)."""
    chosen = record["messages"][-1]["content"]
    if "tests" in record:
        bad = corrupt_code(chosen)
        if bad is None:
            return None, "pair_no_mutation"
        verdict = check_candidate(code_task_of(record), code_source(bad), limits)
        return (bad, "") if not verdict.ok else (None, "pair_mutation_passes")
    if record.get("family") == "qa":
        bad = corrupt_qa(record)
        ok = bad is not None and not verify_answer(bad, record["answer"])
        return (bad, "") if ok else (None, "pair_no_mutation")
    bad = corrupt_math(chosen)
    if verify_solution(bad, Fraction(record["answer"])).ok:
        return None, "pair_mutation_passes"
    return bad, ""


def preference_pairs(
    records: Iterable[Mapping[str, Any]], limits: SandboxLimits = SandboxLimits()
) -> tuple[list[dict[str, Any]], Counter]:
    """(pairs, counts): one preference record per verified SFT record; counts has ``pairs`` and one entry
    per reason a record gave no pair."""
    pairs, counts = [], Counter()
    for r in records:
        bad, reason = _rejected(r, limits)
        if bad is None:
            counts[reason] += 1
            continue
        pairs.append(
            {
                "id": r["id"],
                "family": r.get("family", ""),
                "prompt": [dict(m) for m in r["messages"][:-1]],
                "chosen": r["messages"][-1]["content"],
                "rejected": bad,
            }
        )
        counts["pairs"] += 1
    return pairs, counts
