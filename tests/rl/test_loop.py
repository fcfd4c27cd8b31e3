"""The streaming loop against fake parts (no model): no batch barrier, bounded staleness,
online filtering, environment failures, and the sync (eta = 0) baseline."""
import asyncio
import random
from collections import Counter

import pytest

from longcat.rl.buffer import SampleBuffer, StalenessManager
from longcat.rl.loop import RolloutManager, StreamingLoop
from longcat.rl.protocols import Policy, RewardFn, Sample


class FakePolicy:
    def __init__(self):
        self.version = 0
        self.pins = Counter()

    def acquire_version(self):
        self.pins[self.version] += 1
        return self.version

    def release_version(self, v):
        self.pins[v] -= 1

    async def generate(self, prompt_ids, n, version):
        await asyncio.sleep(0)
        return [Sample(list(prompt_ids), [i], [-0.5], [version]) for i in range(n)]

    async def update_weights(self, state_dict, version):
        self.version = version


class Source:
    def get(self, uid):
        return uid, [uid]


def make_loop(reward_fn, *, batch=2, eta=1, concurrent=4, group=4, timeout=5.0):
    policy = FakePolicy()
    manager, buffer = RolloutManager(), SampleBuffer()
    staleness = StalenessManager(batch, eta, concurrent)
    loop = StreamingLoop(policy=policy, source=Source(), reward_fn=reward_fn, manager=manager, buffer=buffer,
                         staleness=staleness, group_size=group, controllers=2, reward_timeout=timeout,
                         log=lambda m: None)
    return loop, policy, manager, staleness


def run(loop, policy, staleness, steps, seen):
    async def on_batch(report):
        seen.append(report)
        await policy.update_weights(None, policy.version + 1)
        await staleness.set_version(policy.version)
        return report.step < steps

    asyncio.run(asyncio.wait_for(loop.run(on_batch), 30))


def test_protocols_hold():
    assert isinstance(FakePolicy(), Policy)

    async def reward(task, sample):
        return 1.0

    assert isinstance(reward, RewardFn)


def test_streaming_staleness_bound_and_filtering():
    rng = random.Random(0)

    async def reward(task, sample):
        await asyncio.sleep(rng.choice([0.0, 0.0, 0.0, 0.05]))  # a long tail
        return float(sample.completion_ids[0] % 2 == task % 2)  # prompt 0,2,.. vs odd: never degenerate

    loop, policy, manager, staleness = make_loop(reward, eta=1)
    seen = []
    run(loop, policy, staleness, 8, seen)
    assert len(seen) == 8
    assert all(0 <= s <= 1 for r in seen for s in r.staleness)
    assert any(s == 1 for r in seen for s in r.staleness), "with eta=1 some samples should come from the old version"
    trained = [g.uid for r in seen for g in r.groups]
    assert len(trained) == len(set(trained)) == 16
    for r in seen:
        for g in r.groups:
            assert {s.version for s in g.samples} == {g.version}


def test_sync_mode_is_a_batch_barrier():
    async def reward(task, sample):
        return float(sample.completion_ids[0] % 2)

    loop, policy, manager, staleness = make_loop(reward, eta=0, batch=2, concurrent=4)
    seen = []
    run(loop, policy, staleness, 5, seen)
    assert all(s == 0 for r in seen for s in r.staleness)


def test_degenerate_groups_are_filtered_and_replaced():
    async def reward(task, sample):
        return 1.0 if task % 3 == 0 else float(sample.completion_ids[0] % 2)  # every third prompt all-correct

    loop, policy, manager, staleness = make_loop(reward)
    seen = []
    run(loop, policy, staleness, 4, seen)
    trained = {g.uid for r in seen for g in r.groups}
    assert not any(u % 3 == 0 for u in trained)
    assert any(v == "filtered" and u % 3 == 0 for u, v in manager.ledger.items())


def test_environment_errors_and_timeouts_drop_samples_not_the_run():
    async def reward(task, sample):
        k = sample.completion_ids[0]
        if k == 0:
            raise RuntimeError("sandbox crashed")
        if k == 1 and task % 2 == 0:
            await asyncio.sleep(10)  # past the timeout
        return float(k % 2)

    loop, policy, manager, staleness = make_loop(reward, group=4, timeout=0.05)
    seen = []
    run(loop, policy, staleness, 3, seen)
    assert len(seen) == 3
    for r in seen:
        for g in r.groups:
            assert all(s.completion_ids[0] != 0 for s in g.samples)
    assert loop.stats.failed_samples > 0 or any("failed" == v for v in manager.ledger.values())


def test_staleness_manager_capacity_formula():
    sm = StalenessManager(batch_groups=4, max_staleness=2, max_concurrent=100)
    assert sm.capacity() == 12  # (eta + version + 1) * B
    sm.accepted, sm.running = 10, 2
    assert sm.capacity() == 0
    sm.version = 1
    assert sm.capacity() == 4
    sm = StalenessManager(4, 0, 3)
    assert sm.capacity() == 3  # the concurrency cap
    with pytest.raises(ValueError, match="max_staleness"):
        StalenessManager(4, -1, 3)


def test_a_solved_task_stops_with_a_clear_error_instead_of_waiting_forever():
    from longcat.rl.loop import FilterStarvation

    async def reward(task, sample):
        return 1.0  # every group all-correct: online filtering drops them all

    policy = FakePolicy()
    staleness = StalenessManager(2, 1, 4)
    loop = StreamingLoop(policy=policy, source=Source(), reward_fn=reward, manager=RolloutManager(),
                         buffer=SampleBuffer(), staleness=staleness, group_size=4, controllers=2,
                         log=lambda m: None, max_filtered_in_a_row=20)
    with pytest.raises(FilterStarvation, match="20 groups in a row"):
        run(loop, policy, staleness, 3, [])
