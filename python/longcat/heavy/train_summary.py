"""A short supervised fine-tune of the summary step on the model's own candidates.

A policy trained only on the task (e.g. the ``rl/arith-tiny.yaml`` checkpoint) has never seen a
summary prompt (``"12+7=[19][18]="``), so Heavy Thinking with it does worse than a single sample.
This fine-tune starts from such a checkpoint and:

1. draws training problems that the bench never evaluates: ``make_problems`` with another seed,
   then every prompt that ``longcat bench heavy`` evaluates (its seed, quick and full sizes, at
   ``eval_max_operand`` and at its default limit 99) is removed by string match. With operands
   <= 9 there are only 200 distinct problems and the bench reads about 126 of them, so set
   ``max_operand`` above ``eval_max_operand`` for more training problems;
2. samples ``samples_per_problem`` candidates per problem from the starting model (at
   ``temperature``: use the bench's candidate temperature);
3. builds summary examples: a random subset of 1..``max_candidates`` of those candidates in the
   ``COMPACT`` layout, target the true answer. When the true answer is not among the shown
   candidates, ``when_absent="skip"`` (default) drops the example, since the summary can only gain
   over voting by picking the right candidate, and writing an answer no candidate holds is the
   task skill, which the plain examples train; ``"truth"`` keeps it with the true answer;
4. trains on a mix of summary examples (``summary_fraction``) and plain task examples
   (``"12+7="`` -> ``"19"``, optionally only with operands <= ``task_max_operand``), so the task
   skill does not degrade;
5. reports the summary loss and the task loss on held-out training-side problems (also disjoint
   from the bench) before and after, and saves the checkpoint with ``summary_tune.json`` and the
   training problems' candidates, ``candidates.jsonl`` (the bank RL on the summary step reads,
   ``longcat.heavy.rl_summary``).

``answer_format="worked"`` makes every target (task and summary) the answer worked step by step
(``"4+5-3="`` -> ``"9-3=6"``), so candidates show an intermediate result the summary can check
(``9-3=6`` is right or wrong on its own), which a vote over final answers cannot use.
``summary_fraction=0`` is a plain task fine-tune (no candidates sampled), e.g. to teach that format
before the summary is tuned.

Measured on the ``rl/arith-tiny`` checkpoint (operands <= 9): Heavy Thinking went from 0.005-0.115
to 0.29-0.385 accuracy, still below self-consistency at equal tokens. With ~66 training problems
the model memorises their answers (train loss 0.22, held-out summary loss 0.70) instead of
learning to pick the right candidate. On the three-term family (``n_terms=3``, about 4,000
distinct problems, 1,306 training problems) the memorising is gone (held-out summary loss 0.69-0.83)
and Heavy Thinking rose with more summary training: after three rounds of this fine-tune (850
steps) it sat above self-consistency at equal tokens in 2 of 6 settings (K=4, one round: 0.355
vs 0.312; K=2: +0.002), both inside about one standard error on 200 problems, and below one
greedy answer (0.45): the tiny model's summary still often answers a value no candidate holds,
and the fine-tune costs task skill (greedy accuracy 0.615 -> 0.45).

With the worked format (a 600-step task fine-tune from the arith-tiny RL checkpoint, then 400 steps
of this fine-tune at candidate temperature 0.7; 600 bench problems) Heavy Thinking fell clearly
below self-consistency (0.10-0.17 against 0.25-0.30, every paired interval below zero): the tiny
summary must write a whole worked answer, and in a probe its text was one of the candidates 5 times
in 150 and its own last step held 16 times in 150.

``template="pick"`` trains the summary to write the number of the shown answer whose every step
is right (the decoder copies it); ``template="choose"`` trains it to write that answer itself after
a tally-first prompt, decoding constrained to the shown answers. Measured on the bench's 600
three-term problems (candidates at T=0.7): ``pick`` (600 steps from a worked-answer model) learned
that the most frequent answer is usually right and overruled it 2-10 times in 600, so Heavy
Thinking equalled self-consistency minus its own tokens (0 of 6 settings above at equal tokens);
``choose`` (500 + 500 steps from the pick checkpoint) was above self-consistency at equal tokens in 6 of 6
settings (4 by more than two paired standard errors; K=4, one round: 0.813 against 0.779), mostly
by answering what the model's greedy answer is (0.800; the same text in about 90% of problems),
plus about 40% of the problems where greedy and the vote are both wrong and a right answer is shown.
"""
from __future__ import annotations

import json
import random
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

from longcat.heavy.backends import EngineBackend, SampleRequest
from longcat.heavy.candidates import Candidate
from longcat.heavy.templates import COMPACT, ShownCandidate, get_template
from longcat.heavy.warmstart import fit, mean_loss
from longcat.tasks.arith import ArithProblem, make_problems, parse_answer, worked_answer

WHEN_ABSENT = ("skip", "truth")
CANDIDATES_FILE = "candidates.jsonl"  # next to the checkpoint: the training problems' sampled candidates
ANSWER_FORMATS = ("plain", "worked")  # "19", or worked step by step ("4+5-3=" -> "9-3=6")
SUMMARY_LAYOUTS = ("compact", "tally", "tally-first", "pick", "choose")  # the one-line layouts a tiny completion model learns


@dataclass(frozen=True)
class SummaryTuneConfig:
    steps: int = 300
    batch_size: int = 32
    lr: float = 3e-4
    seed: int = 1                    # training problems use make_problems(seed=1_000_000 + seed)
    max_operand: int = 9
    eval_max_operand: int = 9        # the bench's LONGCAT_HEAVY_MAX_OPERAND whose problems are kept out
    task_max_operand: Optional[int] = None  # plain task examples only from problems with operands <= this
    ops: str = "+-"
    n_terms: int = 2                 # terms per expression (the bench's family must match)
    template: str = "compact"        # summary layout, one of SUMMARY_LAYOUTS (longcat.heavy.templates)
    n_problems: int = 2000           # drawn before the bench's prompts are removed
    holdout_fraction: float = 0.15   # of the remaining distinct problems, for the before/after losses
    samples_per_problem: int = 16
    max_candidates: int = 8
    summary_fraction: float = 0.5    # share of summary examples in each batch
    when_absent: str = "skip"
    answer_format: str = "plain"     # the target of task and summary examples, one of ANSWER_FORMATS
    temperature: float = 1.0
    max_tokens: int = 12             # worked 3-term answers take up to 8 characters + EOS

    def __post_init__(self):
        for name in ("steps", "batch_size", "max_operand", "eval_max_operand", "n_problems", "samples_per_problem", "max_candidates",
                     "max_tokens", "n_terms"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"SummaryTuneConfig.{name}: expected an int >= 1, got {v!r}")
        for name in ("summary_fraction", "holdout_fraction"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ValueError(f"SummaryTuneConfig.{name}: expected a number in [0, 1], got {v!r}")
        if self.task_max_operand is not None and (isinstance(self.task_max_operand, bool) or not isinstance(
                self.task_max_operand, int) or self.task_max_operand < 1):
            raise ValueError(f"SummaryTuneConfig.task_max_operand: expected None or an int >= 1, "
                             f"got {self.task_max_operand!r}")
        if self.template not in SUMMARY_LAYOUTS:
            raise ValueError(f"SummaryTuneConfig.template: expected one of {SUMMARY_LAYOUTS}, got {self.template!r}")
        if self.answer_format not in ANSWER_FORMATS:
            raise ValueError(f"SummaryTuneConfig.answer_format: expected one of {ANSWER_FORMATS}, "
                             f"got {self.answer_format!r}")
        if self.answer_format == "worked" and "*" in self.ops:
            raise ValueError(f"SummaryTuneConfig.ops: the worked answer format reduces left to right, so only "
                             f"'+' and '-', got {self.ops!r}")
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) \
                or not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"SummaryTuneConfig.temperature: expected a number in [0, 2], got {self.temperature!r}")
        if self.when_absent not in WHEN_ABSENT:
            raise ValueError(f"SummaryTuneConfig.when_absent: expected one of {WHEN_ABSENT}, got {self.when_absent!r}")
        if self.template in ("pick", "choose") and self.when_absent != "skip":
            raise ValueError(f"SummaryTuneConfig.when_absent: the {self.template!r} layout can only give a shown answer, so "
                             f"only 'skip', got {self.when_absent!r}")
        if not isinstance(self.lr, (int, float)) or self.lr <= 0:
            raise ValueError(f"SummaryTuneConfig.lr: expected a number > 0, got {self.lr!r}")


def bench_prompts(eval_max_operand: int, ops: str = "+-", n_terms: int = 2) -> set[str]:
    """Every prompt ``longcat bench heavy`` evaluates (quick or full) with operands up to
    ``eval_max_operand`` and at its default limit, 99, with ``n_terms`` terms."""
    from longcat.bench.heavy import EVAL_N, EVAL_N_QUICK, EVAL_SEED

    return {p.prompt for m in {eval_max_operand, 99} for n in (EVAL_N, EVAL_N_QUICK)
            for p in make_problems(n, seed=EVAL_SEED, max_operand=m, ops=ops, n_terms=n_terms)}


def training_problems(cfg: SummaryTuneConfig) -> tuple[list[ArithProblem], list[ArithProblem]]:
    """(train, holdout): distinct problems, none of which the bench evaluates."""
    excluded = bench_prompts(cfg.eval_max_operand, cfg.ops, cfg.n_terms)
    seen, distinct = set(excluded), []
    for p in make_problems(cfg.n_problems, seed=1_000_000 + cfg.seed, max_operand=cfg.max_operand, ops=cfg.ops,
                           n_terms=cfg.n_terms):
        if p.prompt not in seen:
            seen.add(p.prompt)
            distinct.append(p)
    if len(distinct) < 2:
        raise ValueError(f"SummaryTuneConfig.n_problems / max_operand: only {len(distinct)} problem(s) left after "
                         f"removing the bench's; expected >= 2 (raise max_operand or n_problems)")
    n_hold = max(1, round(len(distinct) * cfg.holdout_fraction)) if cfg.holdout_fraction > 0 else 0
    n_hold = min(n_hold, len(distinct) - 1)
    return distinct[n_hold:], distinct[:n_hold]


def summary_examples(problems: Sequence[ArithProblem], candidates: Sequence[Sequence[Candidate]],
                     draws_per_problem: int, max_candidates: int, when_absent: str,
                     rng: random.Random, template=COMPACT, answer_format: str = "plain"
                     ) -> tuple[list[tuple[str, str]], int]:
    """(prompt, target) pairs in ``template``'s layout (default ``COMPACT``), each from a random subset of a problem's
    finished candidates, and how many draws were skipped (``when_absent="skip"`` and the true
    answer not shown, or no finished candidate at all). The target is the true answer in
    ``answer_format`` (the summary answers like a normal answer); with a template that ``copies``
    (``pick``) it is the number of the shown answer equal to that text (a worked answer whose every
    step holds), and a draw that shows none is skipped."""
    if when_absent not in WHEN_ABSENT:
        raise ValueError(f"when_absent: expected one of {WHEN_ABSENT}, got {when_absent!r}")
    if len(candidates) != len(problems):
        raise ValueError(f"candidates: expected one list per problem ({len(problems)}), got {len(candidates)}")
    pairs, skipped = [], 0
    for p, cands in zip(problems, candidates):
        answers = [c.answer_content for c in cands if c.finished]
        if not answers:
            skipped += draws_per_problem
            continue
        for _ in range(draws_per_problem):
            shown = rng.sample(answers, rng.randint(1, min(max_candidates, len(answers))))
            shown_c = [ShownCandidate(a) for a in shown]
            if template.copies:  # pick the shown answer that equals the true one, every step included
                label = template.label(shown_c, target(p, answer_format))
                if label is None:
                    skipped += 1
                else:
                    pairs.append((template.render(p.prompt, shown_c), label))
                continue
            if template.constrains and target(p, answer_format) not in [a.strip() for a in shown]:
                skipped += 1  # a constrained summary can only write a shown answer: the right one verbatim
                continue
            if when_absent == "skip" and not any(parse_answer(a) == p.answer for a in shown):
                skipped += 1
                continue
            pairs.append((template.render(p.prompt, shown_c), target(p, answer_format)))
    return pairs, skipped


def target(problem: ArithProblem, answer_format: str) -> str:
    """The completion a task or summary example trains on: the answer, plain or worked."""
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"answer_format: expected one of {ANSWER_FORMATS}, got {answer_format!r}")
    return worked_answer(problem.prompt) if answer_format == "worked" else str(problem.answer)


def sample_candidates(backend, problems: Sequence[ArithProblem], cfg: SummaryTuneConfig) -> list[list[Candidate]]:
    """``samples_per_problem`` candidates per problem from ``backend`` (one ``n=`` request each)."""
    requests = [SampleRequest(p.prompt, n=cfg.samples_per_problem, temperature=cfg.temperature, seed=cfg.seed * 7 + i,
                              max_tokens=cfg.max_tokens) for i, p in enumerate(problems)]
    return [b.candidates for b in backend.sample(requests)]


def train_summary(base_model: str | Path, out_dir: str | Path, cfg: SummaryTuneConfig = SummaryTuneConfig(),
                  device: str = "cpu", log=print, backend=None) -> dict:
    """Fine-tunes ``base_model`` (a checkpoint folder, left untouched) into ``out_dir``; returns the
    record also written to ``out_dir/summary_tune.json`` (losses before/after, data counts).
    ``backend``: where the candidates come from (default: the built-in engine on ``base_model``)."""
    from transformers import AutoTokenizer

    from longcat.models import LongcatFlashForCausalLM

    say = log or (lambda *_: None)
    base, out = Path(base_model), Path(out_dir)
    if not (base / "config.json").is_file():
        raise ValueError(f"base_model: expected a checkpoint folder with config.json, got {str(base)!r}")
    if out.resolve() == base.resolve():
        raise ValueError(f"out_dir: expected a folder other than base_model, got {str(out)!r}")
    start = time.perf_counter()
    rng = random.Random(cfg.seed)
    train, holdout = training_problems(cfg)
    task_only = cfg.summary_fraction == 0  # a task fine-tune (e.g. to teach the worked format): no candidates
    if task_only:
        cands, own_acc = [[] for _ in train + holdout], None
    else:
        if backend is None:
            backend = EngineBackend(str(base), max_num_seqs=256, max_model_len=128)
        cands = sample_candidates(backend, train + holdout, cfg)
        backend = None  # frees the engine's KV cache before training
        own_acc = sum(parse_answer(c.text) == p.answer for p, cs in zip(train + holdout, cands) for c in cs
                      if c.finished) / (len(cands) * cfg.samples_per_problem)
    fmt = cfg.answer_format
    draws = max(1, cfg.steps * cfg.batch_size // max(1, len(train)))
    template = get_template(cfg.template)
    pool, skipped, held_summary = [], 0, []
    if not task_only:
        pool, skipped = summary_examples(train, cands[:len(train)], draws, cfg.max_candidates, cfg.when_absent, rng,
                                         template, fmt)
        held_summary, _ = summary_examples(holdout, cands[len(train):], 8, cfg.max_candidates, cfg.when_absent,
                                           random.Random(cfg.seed + 1), template, fmt)
    held_task = [(p.prompt, target(p, fmt)) for p in holdout]
    if not pool and not task_only:
        raise ValueError("no summary example: the model's candidates never hold the true answer on the training "
                         "problems (use when_absent='truth', or start from a model that solves part of them)")
    say(f"summary fine-tune: {len(train)} train / {len(holdout)} held-out problems (none of the bench's), "
        f"own accuracy {'-' if own_acc is None else f'{own_acc:.2f}'}, {len(pool)} summary examples ({skipped} draws skipped: answer absent)")

    # Plain task examples keep the task skill; task_max_operand keeps them in the range the model
    # is evaluated on, so wider summary problems do not retrain the task on unfamiliar operands.
    task_problems = [p for p in train if cfg.task_max_operand is None
                     or max(map(int, re.findall(r"\d+", p.prompt))) <= cfg.task_max_operand]
    if not task_problems:
        raise ValueError(f"SummaryTuneConfig.task_max_operand: no training problem has operands <= "
                         f"{cfg.task_max_operand}")

    def next_pairs():
        n_sum = sum(rng.random() < cfg.summary_fraction for _ in range(cfg.batch_size))
        plain = [(p.prompt, target(p, fmt)) for p in rng.choices(task_problems, k=cfg.batch_size - n_sum)]
        return [rng.choice(pool) for _ in range(n_sum)] + plain

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = LongcatFlashForCausalLM.from_pretrained(base, device=device)
    before = {"summary": mean_loss(model, tokenizer, held_summary, device) if held_summary else None,
              "task": mean_loss(model, tokenizer, held_task, device) if held_task else None}
    losses = fit(model, tokenizer, next_pairs, steps=cfg.steps, lr=cfg.lr, seed=cfg.seed, device=device, log=log,
                 label="summary fine-tune")
    after = {"summary": mean_loss(model, tokenizer, held_summary, device) if held_summary else None,
             "task": mean_loss(model, tokenizer, held_task, device) if held_task else None}
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(base, out)  # tokenizer and config; the weights are overwritten next
    model.save_pretrained(out)
    record = {"config": asdict(cfg), "base_model": str(base), "train_problems": len(train),
              "holdout_problems": len(holdout), "own_accuracy": own_acc, "summary_examples": len(pool),
              "skipped_absent": skipped, "heldout_summary_examples": len(held_summary),
              "loss_before": before, "loss_after": after, "final_train_loss": sum(losses[-10:]) / len(losses[-10:]),
              "seconds": time.perf_counter() - start}
    (out / "summary_tune.json").write_text(json.dumps(record, indent=2) + "\n")
    if not task_only:  # the candidate bank: RL on the summary step (longcat.heavy.rl_summary) reads it
        with open(out / CANDIDATES_FILE, "w") as f:
            for p, cs in zip(train, cands):
                f.write(json.dumps({"prompt": p.prompt, "answer": p.answer,
                                    "candidates": [c.answer_content for c in cs if c.finished]}) + "\n")
    say(f"summary fine-tune done in {record['seconds']:.0f} s: held-out summary loss {before['summary']} -> "
        f"{after['summary']}, task loss {before['task']} -> {after['task']}")
    return record
