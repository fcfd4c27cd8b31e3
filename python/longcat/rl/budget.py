"""Dynamic rollout budget allocation (report section 4.3.1), from live pass rates.

A group of ``n`` samples of a task with pass rate ``p`` teaches something only when it is not
all-correct or all-wrong, with probability ``q = 1 - p**n - (1 - p)**n``, and its advantages carry
a signal proportional to the reward variance ``p (1 - p)``. The value of giving a task ``k`` groups
is ``V(k) = p (1 - p) (1 - (1 - q)**k)`` (the chance that at least one is informative): concave in
``k``, so handing out the budget one group at a time to the largest marginal gain (a heap) is
optimal for the batch's total value. ``oversampling`` is the cheaper approximation used under
asynchrony: launch ``1 / q`` groups per wanted informative group, capped. ``RolloutBudget`` is
what the streaming loop uses (recipe section ``budget``): rollouts per prompt from live pass rates."""
from __future__ import annotations

import heapq
import math
from typing import Mapping


class PassRates:
    """Running pass rate per task: successes and trials with a Beta(1, 1) prior, recent results
    weighted more (each update first multiplies the old counts by ``decay``)."""

    def __init__(self, decay: float = 0.9):
        if not 0 < decay <= 1:
            raise ValueError(f"PassRates: 'decay' must be in (0, 1], got {decay!r}")
        self.decay = decay
        self.counts: dict = {}

    def update(self, task, rewards) -> None:
        s, n = self.counts.get(task, (0.0, 0.0))
        s, n = s * self.decay + sum(float(r > 0) for r in rewards), n * self.decay + len(rewards)
        self.counts[task] = (s, n)

    def rate(self, task) -> float:
        s, n = self.counts.get(task, (0.0, 0.0))
        return (s + 1) / (n + 2)


def informative_prob(p: float, group_size: int) -> float:
    return 1.0 - p ** group_size - (1.0 - p) ** group_size


def task_value(p: float, groups: int, group_size: int) -> float:
    if not 0 <= p <= 1:
        raise ValueError(f"task_value: pass rate 'p' must be in [0, 1], got {p!r}")
    return p * (1 - p) * (1 - (1 - informative_prob(p, group_size)) ** groups)


def allocate(pass_rates: Mapping, budget: int, group_size: int, max_groups_per_task: int | None = None) -> dict:
    """Groups per task (a dict over ``pass_rates``' keys) summing to at most ``budget``: heap-greedy
    on marginal value; tasks worth nothing (pass rate 0 or 1) get none."""
    if budget < 0 or group_size < 1:
        raise ValueError(f"allocate: expected budget >= 0 and group_size >= 1, got {budget}, {group_size}")
    alloc = {t: 0 for t in pass_rates}
    heap = []
    for i, (t, p) in enumerate(pass_rates.items()):
        gain = task_value(p, 1, group_size)
        if gain > 0:
            heap.append((-gain, i, t))
    heapq.heapify(heap)
    for _ in range(budget):
        if not heap:
            break
        _, i, t = heapq.heappop(heap)
        alloc[t] += 1
        k, p = alloc[t], pass_rates[t]
        if max_groups_per_task is None or k < max_groups_per_task:
            gain = task_value(p, k + 1, group_size) - task_value(p, k, group_size)
            if gain > 0:
                heapq.heappush(heap, (-gain, i, t))
    return alloc


def oversampling(p: float, group_size: int, max_factor: float = 4.0) -> float:
    """Groups to launch per informative group wanted: ``1 / q``, within [1, max_factor]."""
    q = informative_prob(p, group_size)
    return max_factor if q <= 1.0 / max_factor else max(1.0, 1.0 / q)


PASS_RATE_BUCKETS = (0.2, 0.4, 0.6, 0.8)  # upper edges; the last bucket is [0.8, 1]


def pass_rate_bucket(p: float) -> str:
    lo = 0.0
    for hi in PASS_RATE_BUCKETS:
        if p < hi:
            return f"{lo:.1f}-{hi:.1f}"
        lo = hi
    return f"{lo:.1f}-1.0"


class RolloutBudget:
    """Rollouts per prompt for the streaming loop, from pass rates tracked per prompt (keyed by the
    prompt's token ids, so a prompt that comes back is recognised).

    ``greedy``: prompts are planned ``window`` at a time under a fixed budget of ``window *
    group_size`` samples, handed out in chunks of ``unit`` samples by ``allocate`` (at most
    ``max_group_size`` per prompt); a prompt given nothing is skipped. ``oversample``: each prompt
    gets ``group_size * oversampling(p)`` samples (at most ``max_group_size``), no prompt skipped.
    ``take_stats()`` returns what was planned since its last call (one trainer step's log)."""

    MODES = ("greedy", "oversample")

    def __init__(self, mode: str, group_size: int, *, window: int = 8, unit: int = 2,
                 max_group_size: int | None = None, decay: float = 0.9, max_factor: float = 4.0,
                 counts: dict | None = None):
        if mode not in self.MODES:
            raise ValueError(f"RolloutBudget: 'mode' must be one of {self.MODES}, got {mode!r}")
        max_group_size = 2 * group_size if max_group_size is None else max_group_size
        if group_size < 2 or unit < 2 or window < 1 or max_group_size < max(unit, group_size if mode == "oversample" else 2):
            raise ValueError(f"RolloutBudget: expected group_size >= 2, unit >= 2, window >= 1 and max_group_size >= "
                             f"unit (and >= group_size for oversample), got group_size={group_size}, unit={unit}, "
                             f"window={window}, max_group_size={max_group_size}")
        self.mode, self.group_size, self.window, self.unit = mode, group_size, window, unit
        self.max_group_size, self.max_factor = max_group_size, max_factor
        self.rates = PassRates(decay)
        self.rates.counts.update(counts or {})
        self._planned: list[tuple[float, int]] = []  # (pass rate, samples) since take_stats
        self._budget = 0

    @staticmethod
    def key(prompt_ids) -> tuple:
        return tuple(prompt_ids)

    def plan(self, keys: list) -> list[int]:
        """Samples to generate for each prompt key (0: skip it)."""
        ps = [self.rates.rate(k) for k in keys]
        if self.mode == "greedy":
            budget = len(keys) * self.group_size
            chunks = allocate(dict(enumerate(ps)), budget // self.unit, self.unit,
                              max_groups_per_task=self.max_group_size // self.unit)
            sizes = [chunks[i] * self.unit for i in range(len(keys))]
        else:
            budget = None
            sizes = [min(self.max_group_size, math.ceil(self.group_size * oversampling(p, self.group_size,
                                                                                       self.max_factor)))
                     for p in ps]
        self._budget += sum(sizes) if budget is None else budget
        self._planned += list(zip(ps, sizes))
        return sizes

    def observe(self, prompt_ids, rewards) -> None:
        if rewards:
            self.rates.update(self.key(prompt_ids), rewards)

    def take_stats(self) -> dict:
        sizes = [n for _, n in self._planned]
        buckets: dict[str, int] = {}
        for p, _ in self._planned:
            b = pass_rate_bucket(p)
            buckets[b] = buckets.get(b, 0) + 1
        row = {"budget_mode": self.mode, "budget_prompts": len(sizes),
               "budget_skipped": sum(n == 0 for n in sizes), "budget_samples": sum(sizes),
               "budget_limit": self._budget,
               "rollouts_mean": sum(sizes) / len(sizes) if sizes else 0.0,
               "rollouts_min": min(sizes, default=0), "rollouts_max": max(sizes, default=0),
               "pass_rate_buckets": buckets, "pass_rate_tracked": len(self.rates.counts)}
        self._planned, self._budget = [], 0
        return row
