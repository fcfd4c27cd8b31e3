"""Checkable arithmetic: the task the tiny preset learns in ``rl/arith-tiny.yaml`` and that
``longcat bench heavy`` evaluates.

One problem is an expression of ``n_terms`` integers joined by ``+``, ``-`` or ``*``, evaluated
left to right with the usual precedence (Python's). The prompt is the bare expression followed by
``=`` (``"12+7="``): a tiny byte-level model learns this format in a short warm start. The
completion is the integer, optionally after a thinking block; ``parse_answer`` reads the last
integer after ``</think>`` (or in the whole text when there is no thinking block), so the same
checker works for plain answers, thinking-model answers and Heavy Thinking summaries.
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
