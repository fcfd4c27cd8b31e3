"""RL on the summary step (the report's extra RL stage for Heavy Thinking): the summary prompt
as a task of the streaming RL loop (``task.name: arith-summary`` in a recipe, ``rl/arith-summary.yaml``).

A prompt is one training problem with K of its candidates, rendered exactly as ``HeavyThinker``
renders a summary prompt (finished candidates only, shuffled, the same template); the policy
writes the summary, and the reward is the correctness of its answer
(``longcat.rl.tasks.ArithReward``), as for the ``SummaryEpisode`` the decoder records. The
candidates come from a bank, ``candidates.jsonl``, that ``longcat heavy-train-summary`` writes
next to its checkpoint: the model's own samples on training problems that ``longcat bench heavy``
never evaluates (RSA trains its aggregator the same way, on pre-generated candidates). Draws whose
candidates miss the true answer stay in: the reward then teaches the summary to solve the problem
itself, or the group has no signal and the loop filters it. With the ``pick`` layout the prompt's
problem is a ``PickedProblem`` and the reward scores the answer the summary names.
"""
from __future__ import annotations

import json
import os
import random
from typing import Sequence

from dataclasses import dataclass

from longcat.heavy.candidates import Candidate, select_for_summary
from longcat.heavy.templates import ShownCandidate, get_template
from longcat.tasks.arith import ArithProblem

SUMMARY_KS = (2, 4, 8)  # candidates per prompt: the K values the bench evaluates


def load_bank(path: str | os.PathLike) -> list[tuple[ArithProblem, list[str]]]:
    """(problem, candidate answers) per line of a ``candidates.jsonl`` (problems without any
    finished candidate are skipped)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"candidates: expected a candidates.jsonl file (longcat heavy-train-summary writes one), "
                         f"got {path!r}")
    bank = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            try:
                row = json.loads(line)
                problem, cands = ArithProblem(row["prompt"], int(row["answer"])), [str(c) for c in row["candidates"]]
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"candidates: {path} line {n}: expected {{prompt, answer, candidates}}, "
                                 f"got {line[:80]!r} ({e})") from None
            if cands:
                bank.append((problem, cands))
    if not bank:
        raise ValueError(f"candidates: {path} holds no problem with a candidate")
    return bank


@dataclass(frozen=True)
class PickedProblem(ArithProblem):
    """A summary prompt in a layout that ``copies`` (``pick``): the reward reads the answer the
    summary names (``resolve``), as the decoder does, so RL trains the pick on correctness."""

    shown: tuple[ShownCandidate, ...] = ()
    template: str = "pick"

    def resolve(self, completion: str) -> str:
        """The shown answer the completion names ("" when it names none: no reward)."""
        return get_template(self.template).resolve(completion, self.shown) or ""


class SummarySource:
    """uid -> (problem, summary prompt ids): problem, K (from ``ks``), the K candidates and their
    order are drawn from ``random.Random`` seeded by the uid, so a re-queued prompt is the same."""

    def __init__(self, tokenizer, bank: Sequence[tuple[ArithProblem, list[str]]], seed: int = 0,
                 template: str = "compact", ks: Sequence[int] = SUMMARY_KS):
        if not bank:
            raise ValueError("bank: expected at least one (problem, candidates) entry, got none")
        if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
            raise ValueError(f"ks: expected a non-empty list of ints >= 1, got {ks!r}")
        self.tokenizer, self.bank, self.seed, self.ks = tokenizer, list(bank), seed, tuple(ks)
        self.template = get_template(template)

    def prompt(self, uid: int) -> tuple[ArithProblem, str]:
        rng = random.Random(self.seed * 1_000_003 + uid)
        problem, answers = self.bank[rng.randrange(len(self.bank))]
        k = rng.choice(self.ks)
        # Distinct samples as the bench shows them; with replacement only when the bank holds fewer than k.
        drawn = rng.sample(answers, k) if len(answers) >= k else rng.choices(answers, k=k)
        picked = [Candidate(a) for a in drawn]
        shown = select_for_summary(picked, per_candidate_budget=64, total_budget=64 * k,
                                   count_tokens=len, rng=rng).shown
        if self.template.copies:
            problem = PickedProblem(problem.prompt, problem.answer, tuple(shown), self.template.name)
        return problem, self.template.render(problem.prompt, shown)

    def get(self, uid: int) -> tuple[ArithProblem, list[int]]:
        problem, text = self.prompt(uid)
        return problem, list(self.tokenizer(text)["input_ids"])
