"""Dynamic rollout budget allocation (report section 4.3.1), from live pass rates.

A group of ``n`` samples of a task with pass rate ``p`` teaches something only when it is not
all-correct or all-wrong, with probability ``q = 1 - p**n - (1 - p)**n``, and its advantages carry
a signal proportional to the reward variance ``p (1 - p)``. The value of giving a task ``k`` groups
is ``V(k) = p (1 - p) (1 - (1 - q)**k)`` (the chance that at least one is informative): concave in
``k``, so handing out the budget one group at a time to the largest marginal gain (a heap) is
optimal for the batch's total value. ``oversampling`` is the cheaper approximation used under
asynchrony: launch ``1 / q`` groups per wanted informative group, capped."""
from __future__ import annotations

import heapq
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
