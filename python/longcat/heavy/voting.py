"""Baselines that aggregate without a summary model: self-consistency (majority vote over parsed
answers, Wang et al. 2022) and DeepConf-style confidence-weighted voting (Fu et al. 2025).

DeepConf's token confidence is the negative mean logprob of the top-k alternatives at that
position (high when the distribution is peaked); a trace's confidence is its lowest group
confidence, a group being a sliding window of ``window`` tokens (the whole trace when shorter).
Voting keeps the ``keep_fraction`` most confident traces and weights each vote by its confidence.
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Callable, Hashable, Optional, Sequence

from longcat.heavy.candidates import Candidate

AnswerFn = Callable[[str], Optional[Hashable]]


def majority_vote(candidates: Sequence[Candidate], answer_fn: AnswerFn) -> Optional[Hashable]:
    """The most frequent parsed answer of the finished candidates (ties: the one seen first);
    None when no candidate parses."""
    votes = Counter()
    first: dict = {}
    for i, c in enumerate(candidates):
        a = answer_fn(c.text) if c.finished else None
        if a is not None:
            votes[a] += 1
            first.setdefault(a, i)
    if not votes:
        return None
    return max(votes, key=lambda a: (votes[a], -first[a]))


def token_confidence(logprobs: Sequence[float]) -> float:
    """DeepConf's token confidence: minus the mean of the reported logprobs at one position."""
    return -sum(logprobs) / len(logprobs) if logprobs else 0.0


def trace_confidence(candidate: Candidate, window: int = 2048) -> float:
    """The lowest mean token confidence over sliding windows of ``window`` tokens."""
    if window < 1:
        raise ValueError(f"trace_confidence: window must be >= 1, got {window}")
    if not candidate.token_logprobs:
        raise ValueError("trace_confidence: the candidate has no token logprobs (sample with logprobs=k)")
    conf = [token_confidence(lp) for lp in candidate.token_logprobs]
    w = min(window, len(conf))
    run = sum(conf[:w])
    lowest = run
    for i in range(w, len(conf)):
        run += conf[i] - conf[i - w]
        lowest = min(lowest, run)
    return lowest / w


def confidence_vote(candidates: Sequence[Candidate], answer_fn: AnswerFn, keep_fraction: float = 0.9,
                    window: int = 2048) -> Optional[Hashable]:
    """Confidence-weighted vote over the ``keep_fraction`` most confident finished candidates that
    parse (at least one kept); None when none parses."""
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"confidence_vote: keep_fraction must be in (0, 1], got {keep_fraction}")
    scored = []
    for c in candidates:
        a = answer_fn(c.text) if c.finished else None
        if a is not None:
            scored.append((trace_confidence(c, window), a))
    if not scored:
        return None
    scored.sort(key=lambda s: -s[0])
    kept = scored[:max(1, math.ceil(keep_fraction * len(scored)))]
    weight: dict = defaultdict(float)
    for conf, a in kept:
        weight[a] += conf
    return max(weight, key=lambda a: weight[a])
