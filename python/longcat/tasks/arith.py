"""Checkable arithmetic: the task the tiny preset learns in ``rl/arith-tiny.yaml`` and that
``longcat bench heavy`` evaluates.

One problem is an expression of ``n_terms`` integers joined by ``+``, ``-`` or ``*``, evaluated
left to right with the usual precedence (Python's). The prompt is the bare expression followed by
``=`` (``"12+7="``): a tiny byte-level model learns this format in a short warm start. The
completion is the integer, optionally after a thinking block; ``parse_answer`` reads the last
integer after ``</think>`` (or in the whole text when there is no thinking block), so the same
checker works for plain answers, thinking-model answers and Heavy Thinking summaries.
``worked_answer`` writes a +/- answer step by step (``"4+5-3="`` -> ``"9-3=6"``): each step is
checkable on its own, which a Heavy Thinking summary can use and a vote cannot.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

_OPS = "+-*"
_INT = re.compile(r"-?\d+")


@dataclass(frozen=True)
class ArithProblem:
    prompt: str  # "12+7="
    answer: int


def make_problems(n: int, seed: int = 0, *, max_operand: int = 99, ops: str = "+-", n_terms: int = 2,
                  ) -> list[ArithProblem]:
    """``n`` problems drawn with ``random.Random(seed)``: the same arguments give the same list."""
    if n < 0:
        raise ValueError(f"make_problems: n must be >= 0, got {n}")
    if max_operand < 1:
        raise ValueError(f"make_problems: max_operand must be >= 1, got {max_operand}")
    if n_terms < 2:
        raise ValueError(f"make_problems: n_terms must be >= 2, got {n_terms}")
    if not ops or any(op not in _OPS for op in ops):
        raise ValueError(f"make_problems: ops must be a non-empty string of {_OPS!r}, got {ops!r}")
    rng = random.Random(seed)
    problems = []
    for _ in range(n):
        terms = [str(rng.randint(0, max_operand))]
        for _ in range(n_terms - 1):
            terms += [rng.choice(ops), str(rng.randint(0, max_operand))]
        expr = "".join(terms)
        problems.append(ArithProblem(prompt=expr + "=", answer=int(eval(expr))))  # digits and + - * only
    return problems


def worked_answer(prompt: str) -> str:
    """The answer to a +/- ``prompt`` (``"4+5-3="``) worked left to right, one step per ``=``: the
    first two terms are reduced and the rest copied (``"9-3=6"``; two terms give the bare result).
    ``parse_answer`` reads its last integer, the result."""
    expr = prompt[:-1] if prompt.endswith("=") else prompt
    if not re.fullmatch(r"\d+([+-]\d+)+", expr):
        raise ValueError(f"worked_answer: prompt must be integers joined by + or - and end with '=', got {prompt!r}")
    terms = re.findall(r"[+-]?\d+", expr)  # "4", "+5", "-3": each term with its sign
    value, steps = int(terms[0]), []
    for i in range(1, len(terms)):
        value += int(terms[i])
        steps.append(str(value) + "".join(terms[i + 1:]))
    return "=".join(steps)


def parse_answer(text: str) -> int | None:
    """The last integer of the answer part of ``text`` (after ``</think>`` when present), or None.
    A thinking block that never closed is an unfinished answer: None."""
    if "<think>" in text and "</think>" not in text:
        return None
    answer = text.rsplit("</think>", 1)[-1]
    found = _INT.findall(answer)
    return int(found[-1]) if found else None


def score(text: str, problem: ArithProblem) -> float:
    """1.0 when ``text`` answers ``problem`` correctly, else 0.0."""
    return 1.0 if parse_answer(text) == problem.answer else 0.0
