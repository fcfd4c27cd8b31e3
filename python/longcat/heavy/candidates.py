"""Candidates: one sampled trajectory each, and what the summary step is shown of them.

The summary reads answer content only (PaCoRe, NeMo-Skills): the text after the last
``</think>``; a candidate whose thinking never closed, or that was cut by its token limit, is
unfinished and dropped. The survivors are shuffled (no order bias) and each is cut to a token
budget, keeping its end, where the answer is.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from longcat.heavy.templates import ShownCandidate

THINK_START, THINK_END = "<think>", "</think>"
ELLIPSIS = "..."


@dataclass
class Candidate:
    """One trajectory. ``token_logprobs[i]``: the logprobs reported for generated token i (the
    sampled token's first, then its top alternatives), None when not asked for.
    ``tool_results``: compact ``"name(args) -> result"`` lines of the tools it called.
    ``error``: why an endpoint gave no text for it (then ``text`` is empty)."""

    text: str
    finish_reason: Optional[str] = "stop"
    num_tokens: int = 0
    token_logprobs: Optional[list[list[float]]] = None
    token_ids: Optional[list[int]] = None
    tool_results: list[str] = field(default_factory=list)
    error: Optional[str] = None

    @property
    def finished(self) -> bool:
        """Ended on its own: not cut by the token limit, not failed, thinking closed."""
        if self.error is not None or self.finish_reason not in ("stop", "tool_calls"):
            return False
        return not (THINK_START in self.text and THINK_END not in self.text)

    @property
    def answer_content(self) -> str:
        return strip_thinking(self.text)


def strip_thinking(text: str) -> str:
    """The answer part of ``text``: everything after the last ``</think>`` (all of it when there
    is no thinking block; empty when the thinking never closed)."""
    if THINK_END in text:
        return text.rsplit(THINK_END, 1)[1].strip()
    if THINK_START in text:
        return ""
    return text.strip()


def truncate_tail(text: str, budget: int, count_tokens: Callable[[str], int]) -> str:
    """``text`` cut to at most ``budget`` tokens, keeping its end (marked with "...")."""
    if count_tokens(text) <= budget:
        return text
    lo, hi = 0, len(text)  # smallest start whose tail fits (token counts shrink with the tail)
    while lo < hi:
        mid = (lo + hi) // 2
        if count_tokens(ELLIPSIS + text[mid:]) <= budget:
            hi = mid
        else:
            lo = mid + 1
    return ELLIPSIS + text[lo:] if lo < len(text) else ""


@dataclass
class Selection:
    shown: list[ShownCandidate]
    num_dropped: int          # unfinished or failed candidates left out
    num_truncated: int


def select_for_summary(candidates: Sequence[Candidate], *, per_candidate_budget: int, total_budget: int,
                       count_tokens: Callable[[str], int], rng: Optional[random.Random] = None) -> Selection:
    """The finished candidates' answers, shuffled with ``rng`` (None keeps the order), each cut to
    ``min(per_candidate_budget, total_budget // number shown)`` tokens."""
    kept = [c for c in candidates if c.finished]
    if rng is not None:
        kept = list(kept)
        rng.shuffle(kept)
    budget = min(per_candidate_budget, total_budget // max(1, len(kept)))
    shown, truncated = [], 0
    for c in kept:
        answer = truncate_tail(c.answer_content, budget, count_tokens)
        truncated += answer != c.answer_content
        shown.append(ShownCandidate(answer, tuple(c.tool_results)))
    return Selection(shown, len(candidates) - len(kept), truncated)
