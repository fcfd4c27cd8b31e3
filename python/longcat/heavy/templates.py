"""Summary prompts: how a question and its candidates' answers are laid out for the summary step.

``VERBOSE`` follows the layout of the LongCat report's Fig. 10 (an intro line, a problem block,
one block per thinker) with RSA's instruction that candidates may be wrong; it is for chat
models. ``COMPACT`` is a one-line layout a tiny completion model learns in a short warm start
(``"12+7=[19][18][19]="``): the question, each candidate answer in brackets, then ``=``.
``TALLY`` is the compact layout with agreement made explicit: identical answers are merged into
one bracket with their count, most frequent first (``"12+7=[19:2][18:1]="``), so a small model
can copy the majority without counting and learn when to overrule it. ``TALLY_FIRST`` puts that
tally before the question (``"[19:2][18:1]12+7="``). ``PICK`` is a tally the summary answers by
number: identical answers merged with their count, most frequent first (``"12+7=[19*2][18*1]="``),
and the summary writes the number of the answer it keeps (``"2"``); the decoder then writes that
answer verbatim (``resolve``), so the summary's answer is always one of the candidates and a tiny
model needs no skill at copying (``"1"`` is the majority, self-consistency). Its separators are
``*`` and digits because the arith checkpoints' tokenizer has only digits, ``+-*=[]`` and space
(``:`` is dropped, so ``TALLY`` renders ``[19:2]`` as ``[192]`` there). ``CHOOSE`` puts that tally
before the question and the summary writes a normal answer, decoding constrained to the shown ones.
A template only renders text; which candidates it sees (answers only, shuffled, truncated) is
decided by ``longcat.heavy.candidates``.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Optional, Sequence


@dataclass(frozen=True)
class ShownCandidate:
    """What the summary sees of one candidate: its answer content (thinking removed, possibly
    truncated) and its tool calls with compact results (``"name(args) -> result"`` lines)."""

    answer: str
    tool_results: tuple[str, ...] = ()


class SummaryTemplate(abc.ABC):
    """Renders the summary prompt. Subclasses set ``render``."""

    name = "template"

    # True when the summary names a shown answer and ``resolve`` writes it (``PickTemplate``).
    copies = False
    # True when the summary writes one of the shown answers, decoding constrained to them (``ChooseTemplate``).
    constrains = False

    @abc.abstractmethod
    def render(self, question: str, candidates: Sequence[ShownCandidate]) -> str:
        """The summary prompt for ``question`` and the candidates shown."""

    def resolve(self, completion: str, candidates: Sequence[ShownCandidate]) -> Optional[str]:
        """The summary's answer content from what it wrote: the completion itself, except for a
        template that ``copies`` (None when it names no shown answer)."""
        return completion


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


class PickTemplate(SummaryTemplate):
    """``"4+5-3=[9-3=6*2][8-3=5*1]="``: the distinct answers, most frequent first (ties in the shown
    order), each with ``*`` and its count; the summary answers with the 1-based number of one."""

    name = "pick"
    copies = True

    @staticmethod
    def groups(candidates: Sequence[ShownCandidate]) -> list[tuple[str, int]]:
        """(answer, count) of the distinct shown answers in the order ``render`` numbers them."""
        counts: dict[str, int] = {}
        for c in candidates:  # first-seen order breaks ties (the decoder shuffles what it shows)
            answer = c.answer.replace("[", "").replace("]", "").replace("*", "").strip()
            counts[answer] = counts.get(answer, 0) + 1
        return sorted(counts.items(), key=lambda kv: -kv[1])

    def render(self, question: str, candidates: Sequence[ShownCandidate]) -> str:
        return question + "".join(f"[{a}*{n}]" for a, n in self.groups(candidates)) + "="

    def label(self, candidates: Sequence[ShownCandidate], answer: str) -> Optional[str]:
        """The completion that picks ``answer`` (its number), None when it is not shown."""
        for i, (a, _) in enumerate(self.groups(candidates), 1):
            if a == answer.strip():
                return str(i)
        return None

    def resolve(self, completion: str, candidates: Sequence[ShownCandidate]) -> Optional[str]:
        number = completion.strip()
        if not number.isdigit():
            return None
        groups = self.groups(candidates)
        i = int(number)
        return groups[i - 1][0] if 1 <= i <= len(groups) else None


class ChooseTemplate(PickTemplate):
    """``"[9-3=6*2][8-3=5*1]4+5-3="``: the numbered tally's answers with their counts, then the
    question, so the prompt ends like a plain task prompt; the summary writes its answer in the
    normal format, its decoding constrained to the shown answers (``SampleRequest.choices``). The
    model's own step-by-step skill picks among the shown answers at the token where they differ
    (the first step's result, then the last), and it cannot write a value no candidate holds."""

    name = "choose"
    copies = False
    constrains = True

    def render(self, question: str, candidates: Sequence[ShownCandidate]) -> str:
        return "".join(f"[{a}*{n}]" for a, n in self.groups(candidates)) + question

    def resolve(self, completion: str, candidates: Sequence[ShownCandidate]) -> Optional[str]:
        return completion

    def choices(self, candidates: Sequence[ShownCandidate]) -> list[str]:
        """The answers the summary may write."""
        return [a for a, _ in self.groups(candidates) if a]


VERBOSE = VerboseTemplate()
COMPACT = CompactTemplate()
TALLY = TallyTemplate()
TALLY_FIRST = TallyFirstTemplate()
PICK = PickTemplate()
CHOOSE = ChooseTemplate()
TEMPLATES = {t.name: t for t in (VERBOSE, COMPACT, TALLY, TALLY_FIRST, PICK, CHOOSE)}


def get_template(template) -> SummaryTemplate:
    """A template object, or one of ``TEMPLATES`` by name."""
    if isinstance(template, SummaryTemplate):
        return template
    if template in TEMPLATES:
        return TEMPLATES[template]
    raise ValueError(f"template: expected a SummaryTemplate or one of {sorted(TEMPLATES)}, got {template!r}")
