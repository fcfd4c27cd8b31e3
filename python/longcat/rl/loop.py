"""The streaming loop (DORA): RolloutControllers generate and score groups one prompt at a time,
finished groups stream into the sample buffer, and the trainer steps as soon as it holds a batch,
while generation goes on under older versions (bounded by the staleness manager's admission).
No batch barrier unless ``max_staleness == 0`` (then this is the synchronous baseline).

``RolloutManager`` keeps metadata only: the next prompt id, the ids in flight or re-queued and the
ledger of what became of every id (trained, filtered, failed), which is what a lossless resume
and its test check."""
from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from longcat.rl.budget import RolloutBudget
from longcat.rl.buffer import SampleBuffer, StalenessManager
from longcat.rl.losses import is_degenerate
from longcat.rl.protocols import Group, Policy, PromptSource, RewardFn, RolloutLost


class RolloutManager:
    """Prompt ids: issued in order, re-queued ids first; every id ends in exactly one ledger entry."""

    def __init__(self, next_uid: int = 0, requeued: Optional[list[int]] = None, ledger: Optional[dict] = None):
        self.next_uid = next_uid
        self.requeued: deque[int] = deque(requeued or [])
        self.inflight: set[int] = set()
        self.ledger: dict[int, str] = dict(ledger or {})

    def take(self) -> int:
        uid = self.requeued.popleft() if self.requeued else self._fresh()
        self.inflight.add(uid)
        return uid

    def _fresh(self) -> int:
        uid = self.next_uid
        self.next_uid += 1
        return uid

    def done(self, uid: int, outcome: Optional[str]) -> None:
        """``outcome`` None: the group was buffered (its ledger entry comes when trained)."""
        self.inflight.discard(uid)
        if outcome is not None:
            self.record(uid, outcome)

    def record(self, uid: int, outcome: str) -> None:
        if uid in self.ledger:
            raise RuntimeError(f"prompt {uid} already has outcome {self.ledger[uid]!r}, now {outcome!r}")
        self.ledger[uid] = outcome

    def requeue(self, uid: int) -> None:
        self.inflight.discard(uid)
        self.requeued.append(uid)

    def state(self) -> dict:
        # In-flight prompts are re-queued on resume: their partial work is not in the checkpoint.
        return {"next_uid": self.next_uid, "requeued": list(self.requeued) + sorted(self.inflight),
                "ledger": dict(self.ledger)}


class PromptPlanner:
    """Which prompt next, with how many rollouts: ``group_size`` each without a budget; with one,
    prompts are planned ``budget.window`` at a time (greedy) or one by one (oversample), and a
    prompt the budget gives nothing ends in the ledger as ``unallocated``. Planned prompts stay in
    the manager's in-flight set until they finish, so a checkpoint re-queues them."""

    def __init__(self, manager: RolloutManager, source: PromptSource, group_size: int,
                 budget: Optional[RolloutBudget] = None):
        self.manager, self.source, self.group_size, self.budget = manager, source, group_size, budget
        self.queue: deque[tuple[int, int]] = deque()

    def next(self) -> tuple[int, int]:
        if self.budget is None:
            return self.manager.take(), self.group_size
        while not self.queue:
            uids = [self.manager.take() for _ in range(self.budget.window if self.budget.mode == "greedy" else 1)]
            sizes = self.budget.plan([self.budget.key(self.source.get(u)[1]) for u in uids])
            for uid, n in zip(uids, sizes):
                if n == 0:
                    self.manager.done(uid, "unallocated")
                else:
                    self.queue.append((uid, n))
        return self.queue.popleft()


@dataclass
class RolloutStats:
    groups: int = 0
    filtered: int = 0
    failed_samples: int = 0
    failed_groups: int = 0
    lost: int = 0                 # trajectories whose generator died (their prompts re-queued)
    filtered_in_a_row: int = 0
    samples: int = 0
    tokens: int = 0
    rewards: list = field(default_factory=list)  # rewards of scored samples since the last step
    errors: list = field(default_factory=list)


class FilterStarvation(RuntimeError):
    """Online filtering dropped every group for too long: the task is solved (or unsolvable) for
    this policy, and the trainer would wait forever."""


class RolloutController:
    """One virtual rollout group: ``workers`` concurrent trajectories, each a loop of admit ->
    prompt -> generate (one pinned version) -> score every sample -> buffer or filter. With
    ``episodes`` (multi-turn), generation and scoring are one episode per sample, under the
    pinned version; its segments share one reward and one ``trajectory`` index."""

    def __init__(self, index: int, *, policy: Policy, source: PromptSource, reward_fn: RewardFn,
                 manager: RolloutManager, staleness: StalenessManager, buffer: SampleBuffer, stats: RolloutStats,
                 group_size: int, reward_timeout: float, filter_degenerate: bool, log: Callable[[str], None],
                 max_filtered_in_a_row: int = 1000, planner: Optional[PromptPlanner] = None, episodes=None):
        self.index = index
        self.episodes = episodes  # multi-turn: an async (task, uid, index, version) -> segments (longcat.rl.agent)
        self.policy, self.source, self.reward_fn = policy, source, reward_fn
        self.manager, self.staleness, self.buffer, self.stats = manager, staleness, buffer, stats
        self.group_size, self.reward_timeout, self.filter_degenerate = group_size, reward_timeout, filter_degenerate
        self.log = log
        self.max_filtered_in_a_row = max_filtered_in_a_row
        self.planner = planner if planner is not None else PromptPlanner(manager, source, group_size)

    async def run(self, workers: int) -> None:
        await asyncio.gather(*(self._worker() for _ in range(workers)))

    async def _worker(self) -> None:
        while True:
            await self.staleness.admit()
            uid, n = self.planner.next()
            accepted = False
            try:
                group = await self._rollout(uid, n)
                accepted = group is not None
                if accepted:
                    await self.buffer.put(group)
            except asyncio.CancelledError:
                self.manager.requeue(uid)  # stopped mid-flight: the prompt goes back, nothing lost
                await self.staleness.finish(False)
                raise
            except RolloutLost as e:  # its generator died: the prompt goes back to the queue
                self.manager.requeue(uid)
                self.stats.lost += 1
                self.log(f"re-queued prompt {uid}: {e}")
            await self.staleness.finish(accepted)

    async def _score(self, task: Any, sample) -> Optional[float]:
        try:
            return float(await asyncio.wait_for(self.reward_fn(task, sample), self.reward_timeout))
        except asyncio.TimeoutError:
            sample.error = f"reward timed out after {self.reward_timeout}s"
        except Exception as e:  # an environment failure drops the trajectory, never the run
            sample.error = f"{type(e).__name__}: {e}"
        self.stats.failed_samples += 1
        self.stats.errors.append(sample.error)
        self.log(f"dropped a sample of prompt: {sample.error}")
        return None

    async def _episode(self, task: Any, uid: int, index: int, version: int) -> Optional[list]:
        """One multi-turn episode's segments (reward set), or None when the environment raised or
        the episode ran past its timeout: the trajectory is dropped and logged, the loop goes on."""
        timeout = getattr(self.episodes, "timeout", self.reward_timeout)
        try:
            return await asyncio.wait_for(self.episodes(task, uid, index, version), timeout)
        except RolloutLost:  # its generator died: the whole group is re-queued, not dropped
            raise
        except asyncio.TimeoutError:
            error = f"episode timed out after {timeout}s"
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
        self.stats.failed_samples += 1
        self.stats.errors.append(error)
        self.log(f"dropped an episode of prompt {uid}: {error}")
        return None

    async def _rollout(self, uid: int, n: int) -> Optional[Group]:
        task, prompt_ids = self.source.get(uid)
        version = self.policy.acquire_version()
        try:
            if self.episodes is not None:
                # Every episode ends before the version is released (a lost one re-queues the group).
                trajectories = await asyncio.gather(*(self._episode(task, uid, i, version) for i in range(n)),
                                                    return_exceptions=True)
                for t in trajectories:
                    if isinstance(t, BaseException):
                        raise t
            else:
                samples = await self.policy.generate(prompt_ids, n, version)
        finally:
            self.policy.release_version(version)
        if self.episodes is None:
            rewards = await asyncio.gather(*(self._score(task, s) for s in samples))
            for s, r in zip(samples, rewards):
                s.reward = r
            trajectories = [[s] if s.reward is not None else None for s in samples]
        kept = [t for t in trajectories if t is not None]
        for j, t in enumerate(kept):
            for s in t:
                s.trajectory = j if self.episodes is not None else None
        self.stats.samples += len(trajectories)
        self.stats.tokens += sum(len(s.completion_ids) if s.loss_mask is None else sum(s.loss_mask)
                                 for t in kept for s in t)
        rewards = [t[0].reward for t in kept]
        self.stats.rewards += rewards
        if self.planner.budget is not None:  # every scored group, filtered ones too: they say the most
            self.planner.budget.observe(prompt_ids, rewards)
        kept = [s for t in kept for s in t]
        if len(rewards) < 2:
            self.stats.failed_groups += 1
            self.manager.done(uid, "failed")
            return None
        if self.filter_degenerate and is_degenerate(rewards):
            self.stats.filtered += 1
            self.stats.filtered_in_a_row += 1
            self.manager.done(uid, "filtered")
            if self.stats.filtered_in_a_row >= self.max_filtered_in_a_row:
                raise FilterStarvation(
                    f"online filtering dropped {self.stats.filtered_in_a_row} groups in a row (every sample of each "
                    f"got reward {kept[0].reward}): the task is solved or unsolvable for this policy, so no batch "
                    "can form; the last checkpoint is intact")
            return None
        self.stats.filtered_in_a_row = 0
        self.stats.groups += 1
        self.manager.done(uid, None)
        return Group(uid, version, kept, task, {"controller": self.index})


@dataclass
class StepReport:
    step: int
    groups: list[Group]
    staleness: list[int]
    dropped_stale: int


class StreamingLoop:
    """Runs controllers and hands the trainer batches. ``on_batch(report) -> bool`` is awaited for
    each batch (it trains, pushes weights, logs, checkpoints) and returns False to stop."""

    def __init__(self, *, policy: Policy, source: PromptSource, reward_fn: RewardFn, manager: RolloutManager,
                 buffer: SampleBuffer, staleness: StalenessManager, group_size: int, controllers: int,
                 reward_timeout: float = 30.0, filter_degenerate: bool = True, log: Callable[[str], None] = print,
                 max_filtered_in_a_row: int = 1000, budget: Optional[RolloutBudget] = None, episodes=None):
        self.policy, self.manager, self.buffer, self.staleness = policy, manager, buffer, staleness
        self.stats = RolloutStats()
        self.planner = PromptPlanner(manager, source, group_size, budget)
        workers = staleness.max_concurrent
        self._workers = [workers // controllers + (i < workers % controllers) for i in range(controllers)]
        self.controllers = [RolloutController(i, policy=policy, source=source, reward_fn=reward_fn, manager=manager,
                                              staleness=staleness, buffer=buffer, stats=self.stats,
                                              group_size=group_size, reward_timeout=reward_timeout,
                                              filter_degenerate=filter_degenerate, log=log,
                                              max_filtered_in_a_row=max_filtered_in_a_row, planner=self.planner,
                                              episodes=episodes)
                            for i in range(controllers)]
        self.idle_wait_s = 0.0  # trainer time spent waiting for a batch

    async def run(self, on_batch, start_step: int = 0) -> None:
        tasks = [asyncio.create_task(c.run(w)) for c, w in zip(self.controllers, self._workers) if w > 0]
        B, step = self.staleness.batch_groups, start_step
        try:
            while True:
                t0 = time.perf_counter()
                waiter = asyncio.create_task(self.buffer.wait_for(B))
                done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
                if waiter not in done:  # a controller died: surface its error
                    waiter.cancel()
                    for t in done:
                        t.result()
                self.idle_wait_s += time.perf_counter() - t0
                groups = self.buffer.take(B)
                version = self.policy.version
                fresh = [g for g in groups if version - g.version <= self.staleness.max_staleness]
                stale = [g for g in groups if g not in fresh]
                for g in stale:  # beyond the bound (admission makes this rare): regenerate it
                    self.manager.requeue(g.uid)
                if stale:
                    await self.staleness.forget(len(stale))
                    self.buffer.restore_front(fresh)
                    continue
                staleness = [version - g.version for g in groups for _ in g.samples]
                step += 1
                if not await on_batch(StepReport(step, groups, staleness, len(stale))):
                    break
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


__all__ = ["PromptPlanner", "RolloutManager", "RolloutController", "RolloutStats", "StreamingLoop", "StepReport"]
