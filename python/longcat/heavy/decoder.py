"""The Heavy Thinking decoder: width (K trajectories) then depth (summary rounds).

Round 0 samples ``k`` candidates per question at ``temperature`` (one ``n=k`` request: the
prompt is computed once). Each summary round shows the summary model the finished candidates'
answers (thinking removed, shuffled, cut to the token budgets) in a ``SummaryTemplate`` and
samples again; intermediate rounds sample ``k`` summaries at ``temperature``, which become the
next round's candidates (RSA / PaCoRe), and the last round samples one at
``summary_temperature``. Its answer, in the normal answer format, is the result.

For chat prompts the summary prompt replaces the last user message (earlier turns stay, as in
PaCoRe); ``longcat.heavy.memory`` keeps a conversation whose history holds only summary answers
and lets candidates call tools.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field, fields
from typing import Callable, Hashable, Optional, Sequence

from longcat.heavy.backends import Backend, Prompt, SampleBatch, SampleRequest
from longcat.heavy.candidates import Candidate, select_for_summary, strip_thinking
from longcat.heavy.templates import SummaryTemplate, get_template

AnswerFn = Callable[[str], Optional[Hashable]]


def default_answer(text: str) -> Optional[str]:
    """The answer content with whitespace collapsed (None when empty or unfinished)."""
    answer = " ".join(strip_thinking(text).split())
    return answer or None


class BudgetError(ValueError):
    """A token budget leaves no room for any candidate."""


@dataclass
class HeavyConfig:
    """``k``: trajectories per question (width); ``rounds``: summary rounds (depth, >= 1).
    ``max_tokens`` / ``summary_max_tokens``: generation limits of a candidate / a summary.
    ``candidate_budget``: most tokens of one candidate's answer the summary sees;
    ``context_budget``: most tokens of all shown answers together (each gets an equal share).
    ``seed``: candidate i of a question samples with ``seed + i`` (the engine derives its streams
    from the request seed); the shuffles use it too. ``logprobs``: top alternatives per token
    (needed by confidence voting; None to skip). ``unfinished_ok``: when every candidate of a
    question hit ``max_tokens``, summarise anyway (shown nothing, ``all_unparseable`` set) instead
    of raising ``BudgetError`` (a benchmark scores that question as the summary answers it)."""

    k: int = 4
    rounds: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    summary_temperature: float = 0.0
    seed: Optional[int] = 0
    max_tokens: int = 1024
    summary_max_tokens: int = 1024
    candidate_budget: int = 2048
    context_budget: int = 16384
    template: str | SummaryTemplate = "verbose"
    shuffle: bool = True
    logprobs: Optional[int] = None
    unfinished_ok: bool = False

    def __post_init__(self):
        def need_int(name, low):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"HeavyConfig.{name}: expected an int >= {low}, got {v!r}")

        for name, low in (("k", 1), ("rounds", 1), ("max_tokens", 1), ("summary_max_tokens", 1),
                          ("candidate_budget", 1), ("context_budget", 1)):
            need_int(name, low)
        for name in ("temperature", "summary_temperature"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"HeavyConfig.{name}: expected a number >= 0, got {v!r}")
        if self.context_budget < self.k:
            raise BudgetError(f"HeavyConfig.context_budget: {self.context_budget} tokens cannot show k={self.k} "
                              f"candidates (each needs at least 1 token); expected >= {self.k}")
        if self.logprobs is not None and (isinstance(self.logprobs, bool) or self.logprobs < 0):
            raise ValueError(f"HeavyConfig.logprobs: expected None or an int >= 0, got {self.logprobs!r}")
        self.template = get_template(self.template)


@dataclass
class SummaryEpisode:
    """The summary step as a trainable episode (the RL hook): the prompt it saw (question +
    shown candidates), what it wrote, and ``reward`` (correctness, set by ``score_episodes``).
    Token ids and per-token logprobs are filled in when the backend reports them (the engine
    does), so a policy-gradient loop can train on it directly."""

    question: Prompt
    prompt: Prompt
    candidates: list[str]
    completion: str
    round: int
    prompt_token_ids: Optional[list[int]] = None
    completion_token_ids: Optional[list[int]] = None
    completion_logprobs: Optional[list[float]] = None
    reward: Optional[float] = None


@dataclass
class HeavyResult:
    """``answer_text``: the final summary's answer content (the text to append to a
    conversation); ``answer``: ``answer_fn`` of it. ``rounds[0]`` are the width candidates,
    ``rounds[r]`` the summaries of round r. ``all_unparseable``: no candidate shown to the last
    summary parsed (the summary answered anyway). ``num_failed``: candidates an endpoint did
    not deliver; ``num_dropped``: unfinished candidates left out of a summary; ``num_unresolved``:
    summaries of a picking template (``PickTemplate``) that named no shown answer."""

    question: Prompt
    answer_text: str
    answer: Optional[Hashable]
    rounds: list[list[Candidate]]
    episodes: list[SummaryEpisode]
    generated_tokens: int = 0
    prompt_tokens: int = 0
    num_failed: int = 0
    num_dropped: int = 0
    num_truncated: int = 0
    num_unresolved: int = 0
    all_unparseable: bool = False
    errors: list[str] = field(default_factory=list)

    @property
    def candidates(self) -> list[Candidate]:
        return self.rounds[0]


def score_episodes(episodes: Sequence[SummaryEpisode], reward_fn: Callable[[str], float]) -> list[SummaryEpisode]:
    """Sets each episode's reward to ``reward_fn(completion)`` (e.g. ``arith.score`` bound to its
    problem) and returns them."""
    for e in episodes:
        e.reward = float(reward_fn(e.completion))
    return episodes


class HeavyThinker:
    """Heavy Thinking over a ``Backend`` (``EngineBackend`` or ``OpenAIBackend``).
    ``summary_backend``: another policy for the summary step (default: the same one)."""

    def __init__(self, backend: Backend, config: Optional[HeavyConfig] = None, *,
                 answer_fn: AnswerFn = default_answer, summary_backend: Optional[Backend] = None, **overrides):
        if config is None:
            config = HeavyConfig(**overrides)
        elif overrides:
            known = {f.name for f in fields(HeavyConfig)}
            bad = sorted(set(overrides) - known)
            if bad:
                raise TypeError(f"HeavyThinker: unknown config field(s) {bad}")
            config = HeavyConfig(**{**{f.name: getattr(config, f.name) for f in fields(config)}, **overrides})
        self.config = config
        self.backend = backend
        self.summary_backend = summary_backend or backend
        self.answer_fn = answer_fn

    # ---- stages ------------------------------------------------------------------------------

    def width_requests(self, questions: Sequence[Prompt], tools: Optional[list[dict]] = None) -> list[SampleRequest]:
        c = self.config
        return [SampleRequest(q, c.k, c.temperature, c.top_p, c.seed, c.max_tokens, c.logprobs, tools)
                for q in questions]

    def sample_candidates(self, questions: Sequence[Prompt]) -> list[SampleBatch]:
        """Round 0: ``k`` candidates per question."""
        return self.backend.sample(self.width_requests(questions))

    def summary_prompt(self, question: Prompt, shown) -> Prompt:
        if isinstance(question, str):
            return self.config.template.render(question, shown)
        if not question or question[-1].get("role") != "user":
            raise ValueError("question: a conversation must end with a user message")
        last = question[-1]["content"]
        return list(question[:-1]) + [{"role": "user", "content": self.config.template.render(last, shown)}]

    def _copy_picked(self, summary: Candidate, shown, res: "HeavyResult") -> Candidate:
        """A picking summary (``template.copies``) as the answer it names, written verbatim. Its
        tokens count as generated (the number, then the copied answer, as a decode constrained to
        copy would spend); one that names no shown answer is unfinished (``num_unresolved``)."""
        answer = self.config.template.resolve(strip_thinking(summary.text), shown) if summary.finished else None
        if answer is None:
            res.num_unresolved += 1
            return Candidate(summary.text, "unresolved", summary.num_tokens, token_ids=summary.token_ids)
        return Candidate(answer, summary.finish_reason, summary.num_tokens + self.summary_backend.count_tokens(answer))

    # ---- the whole decode ------------------------------------------------------------------

    def think(self, question: Prompt, candidates: Optional[Sequence[Candidate]] = None) -> HeavyResult:
        """Heavy Thinking on one question (text, or chat messages ending with a user turn)."""
        return self.think_batch([question], None if candidates is None else [candidates])[0]

    def think_batch(self, questions: Sequence[Prompt],
                    candidates: Optional[Sequence[Sequence[Candidate] | SampleBatch]] = None) -> list[HeavyResult]:
        """Heavy Thinking on many questions, each stage batched over all of them.
        ``candidates``: given width candidates per question, a list or a ``SampleBatch`` (skips
        round 0, e.g. to reuse the samples a baseline voted on, or candidates that used tools);
        their tokens still count in ``generated_tokens``."""
        c = self.config
        if not questions:
            return []
        if candidates is None:
            batches = self.sample_candidates(questions)
        else:
            if len(candidates) != len(questions):
                raise ValueError(f"candidates: expected one list per question ({len(questions)}), "
                                 f"got {len(candidates)}")
            batches = [cs if isinstance(cs, SampleBatch) else SampleBatch(list(cs)) for cs in candidates]
        results = []
        for q, b in zip(questions, batches):
            if not c.unfinished_ok and b.candidates and not any(x.finished for x in b.candidates) and all(
                    x.finish_reason == "length" for x in b.candidates):
                raise BudgetError(f"max_tokens: all {len(b.candidates)} candidates hit the limit of "
                                  f"{c.max_tokens} tokens before finishing; raise max_tokens")
            results.append(HeavyResult(q, "", None, [b.candidates], [],
                                       sum(x.num_tokens for x in b.candidates), b.prompt_tokens,
                                       b.num_failed, errors=list(b.errors)))
        for r in range(1, c.rounds + 1):
            last = r == c.rounds
            requests, shown_of = [], []
            for i, res in enumerate(results):
                rng = random.Random(f"{c.seed}/{i}/{r}") if c.shuffle else None  # str seeds: stable across runs
                sel = select_for_summary(res.rounds[-1], per_candidate_budget=c.candidate_budget,
                                         total_budget=c.context_budget, count_tokens=self.summary_backend.count_tokens,
                                         rng=rng)
                res.num_dropped += sel.num_dropped
                res.num_truncated += sel.num_truncated
                if last:
                    res.all_unparseable = not any(self.answer_fn(s.answer) is not None for s in sel.shown)
                shown_of.append(sel.shown)
                seed = None if c.seed is None else c.seed + 7919 * r
                choices = c.template.choices(sel.shown) if c.template.constrains else None
                requests.append(SampleRequest(self.summary_prompt(res.question, sel.shown), 1 if last else c.k,
                                              c.summary_temperature if last else c.temperature, c.top_p, seed,
                                              c.summary_max_tokens, 0 if c.logprobs is None else c.logprobs,
                                              choices=choices or None))
            for res, req, shown, batch in zip(results, requests, shown_of, self.summary_backend.sample(requests)):
                written = batch.candidates
                if c.template.copies:
                    written = [self._copy_picked(x, shown, res) for x in batch.candidates]
                res.rounds.append(written)
                res.generated_tokens += sum(x.num_tokens for x in written)
                res.prompt_tokens += batch.prompt_tokens
                res.num_failed += batch.num_failed
                res.errors += batch.errors
                for x in batch.candidates:
                    res.episodes.append(SummaryEpisode(
                        res.question, req.prompt, [s.answer for s in shown], x.text, r, batch.prompt_token_ids,
                        x.token_ids, None if x.token_logprobs is None else [lp[0] for lp in x.token_logprobs]))
        for res in results:
            final = res.rounds[-1][0]
            res.answer_text = strip_thinking(final.text)
            res.answer = self.answer_fn(final.text) if final.finished else None
        return results
