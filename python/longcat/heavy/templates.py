"""Summary prompts: how a question and its candidates' answers are laid out for the summary step.

``VERBOSE`` follows the layout of the LongCat report's Fig. 10 (an intro line, a problem block,
one block per thinker) with RSA's instruction that candidates may be wrong; it is for chat
models. ``COMPACT`` is a one-line layout a tiny completion model learns in a short warm start
(``"12+7=[19][18][19]="``): the question, each candidate answer in brackets, then ``=``.
``TALLY`` is the compact layout with agreement made explicit: identical answers are merged into
one bracket with their count, most frequent first (``"12+7=[19:2][18:1]="``), so a small model
can copy the majority without counting and learn when to overrule it. ``TALLY_FIRST`` puts that
tally before the question (``"[19:2][18:1]12+7="``).
A template only renders text; which candidates it sees (answers only, shuffled, truncated) is
decided by ``longcat.heavy.candidates``.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class ShownCandidate:
    """What the summary sees of one candidate: its answer content (thinking removed, possibly
    truncated) and its tool calls with compact results (``"name(args) -> result"`` lines)."""

    answer: str
    tool_results: tuple[str, ...] = ()


class SummaryTemplate(abc.ABC):
    """Renders the summary prompt. Subclasses set ``render``."""

    name = "template"

    @abc.abstractmethod
    def render(self, question: str, candidates: Sequence[ShownCandidate]) -> str:
        """The summary prompt for ``question`` and the candidates shown."""


class VerboseTemplate(SummaryTemplate):
    name = "verbose"

    def render(self, question: str, candidates: Sequence[ShownCandidate]) -> str:
        lines = ["Below, multiple thinkers tried to solve the problem independently; some of them may be "
                 "wrong, and none may be right. Read their answers, reason about which ideas hold, and give "
                 "your own final answer in the same format as a normal answer.",
                 "", "====== Problem ======", question, "", "==== Thinkers Process Start ===="]
        for i, c in enumerate(candidates, 1):
            lines.append(f"# ----- Thinker #{i} -----")
            if c.tool_results:
                lines.append("Tool results:")
                lines.extend(f"- {r}" for r in c.tool_results)
            lines.append(c.answer)
        if not candidates:
            lines.append("(no thinker finished with a readable answer: solve the problem yourself)")
        lines.append("==== Thinkers Process End ====")
        return "\n".join(lines)


class CompactTemplate(SummaryTemplate):
    name = "compact"

    def render(self, question: str, candidates: Sequence[ShownCandidate]) -> str:
        # Brackets inside an answer would break the layout the model learned: drop them.
        shown = "".join("[" + c.answer.replace("[", "").replace("]", "").strip() + "]" for c in candidates)
        return f"{question}{shown}="


class TallyTemplate(SummaryTemplate):
    name = "tally"

    def render(self, question: str, candidates: Sequence[ShownCandidate]) -> str:
        counts: dict[str, int] = {}
        for c in candidates:  # dicts keep first-seen order: ties stay in the (shuffled) shown order
            answer = c.answer.replace("[", "").replace("]", "").strip()
            counts[answer] = counts.get(answer, 0) + 1
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])
        return question + "".join(f"[{a}:{n}]" for a, n in ranked) + "="


class TallyFirstTemplate(TallyTemplate):
    """The tally before the question (``"[19:2][18:1]12+7="``): the prompt ends exactly like a
    plain task prompt, so the summary starts from the model's own skill at the task and the
    training only has to teach it to weigh the candidates in front."""

    name = "tally-first"

    def render(self, question: str, candidates: Sequence[ShownCandidate]) -> str:
        tally = super().render("", candidates)[:-1]  # "[19:2][18:1]" without the closing "="
        return tally + question


VERBOSE = VerboseTemplate()
COMPACT = CompactTemplate()
TALLY = TallyTemplate()
TALLY_FIRST = TallyFirstTemplate()
TEMPLATES = {t.name: t for t in (VERBOSE, COMPACT, TALLY, TALLY_FIRST)}


def get_template(template) -> SummaryTemplate:
    """A template object, or one of ``TEMPLATES`` by name."""
    if isinstance(template, SummaryTemplate):
        return template
    if template in TEMPLATES:
        return TEMPLATES[template]
    raise ValueError(f"template: expected a SummaryTemplate or one of {sorted(TEMPLATES)}, got {template!r}")
