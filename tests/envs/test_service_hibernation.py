"""Hibernation of the environment service: ``Environment.suspend`` / ``resume`` continue an
episode exactly (database, conversation, tool noise), a host wakes an environment from its
suspended state without replaying its actions, restored environments wake lazily, environments
without ``suspend`` still wake by replay, and local workers are pinned to CPUs."""
import asyncio

import pytest

from longcat.bench.envs_service import action_for, digest, make_pairs
from longcat.envs.noise import NoiseConfig
from longcat.envs.runtime import Environment, Suspended
from longcat.envs.service import EnvService
from longcat.envs.service.host import EnvHost
from longcat.envs.service.workers import pin_to_cpus, usable_cpus

NOISES = [None, NoiseConfig.all(0.7, seed=3)]
END = {"type": "message", "content": "All done: your request is complete."}


@pytest.fixture(scope="module")
def pairs():
    return make_pairs(domains=("retail", "airline"), per_domain=2)


def episode_actions(task, h, n=7):
    return [action_for(task, h, 0, k) for k in range(n)] + [END]


@pytest.mark.parametrize("noise", NOISES, ids=["plain", "noisy"])
def test_suspend_resume_continues_exactly(pairs, noise):
    """An episode suspended after every step and resumed on another object sees what an
    uninterrupted one sees: observations, rewards, database, the logged episode."""
    for i, (rec, task) in enumerate(pairs):
        ref = Environment(rec, noise=noise)
        a, b = Environment(rec, noise=noise), Environment(rec, noise=noise)
        assert a.reset(task) == ref.reset(task)
        for act in episode_actions(task, i):
            b.resume(a.suspend())
            a, b = b, a
            assert digest(a.step(act)) == digest(ref.step(act))
            assert a.db_hash() == ref.db_hash()
        assert a.done and ref.done
        assert a.episode().to_dict() == ref.episode().to_dict()
        for env in (ref, a, b):
            env.close()


def test_a_suspended_state_is_immutable_and_compact(pairs):
    rec, task = pairs[0]
    env = Environment(rec)
    env.reset(task)
    at_reset = env.suspend()
    assert at_reset.own_bytes < 8 * 1024   # the shared initial image is not counted
    acts = episode_actions(task, 1, 4)[:4]
    outs = [digest(env.step(a)) for a in acts]
    later = env.suspend()
    assert later.base is at_reset.base
    assert later.own_bytes < 64 * 1024 and later.length == at_reset.length
    # resuming the same state twice continues the same way both times
    for _ in range(2):
        other = Environment(rec)
        other.resume(at_reset)
        assert [digest(other.step(a)) for a in acts] == outs
        other.close()
    env.close()


def test_resume_refuses_a_foreign_state(pairs):
    (rec, task), (rec2, _) = pairs[0], pairs[-1]
    env = Environment(rec)
    env.reset(task)
    s = env.suspend()
    with pytest.raises(ValueError, match="state: expected a Suspended"):
        env.resume({"not": "a state"})
    with pytest.raises(ValueError, match="state: suspended from environment"):
        Environment(rec2).resume(s)
    with pytest.raises(ValueError, match="state: suspended with noise"):
        Environment(rec, noise=NOISES[1]).resume(s)
    assert isinstance(s, Suspended)


def test_clone_behaves_like_a_new_environment(pairs):
    for i, (rec, task) in enumerate(pairs):
        orig, fresh = Environment(rec), Environment(rec)
        orig.reset(task)
        orig.step(action_for(task, i, 0, 0))   # the clone does not copy the episode
        c = orig.clone()
        assert c.done and c.task is None and c.db_hash() == fresh.db_hash()
        assert c.reset(task) == fresh.reset(task)
        for act in episode_actions(task, i):
            assert digest(c.step(act)) == digest(fresh.step(act))
        assert c.db_hash() == fresh.db_hash()


class _Counting:
    """Factory wrapper that counts steps: every step beyond those asked for is a replay."""

    def __init__(self, public_api_only=False):
        self.steps = 0
        self.public_api_only = public_api_only

    def __call__(self, record, noise=None):
        counter = self

        class Counted(Environment):
            def step(self, action):
                counter.steps += 1
                return super().step(action)
        if not self.public_api_only:
            return Counted(record, noise=noise)

        class PublicOnly:   # reset / step / db_hash / done / close, no suspend
            def __init__(self):
                self._env = Counted(record, noise=noise)

            def __getattr__(self, name):
                if name in ("suspend", "resume", "clone"):
                    raise AttributeError(name)
                return getattr(self._env, name)
        return PublicOnly()


def _host(pairs, factory, live=1):
    host = EnvHost(live=live)
    host.factory = factory
    for i, (r, t) in enumerate(pairs):
        host.objects[f"r{i}"], host.objects[f"t{i}"] = r, t
    return host


def _drive(host, pairs, n_envs, rounds, log=None):
    """Opens n_envs (restored from ``log`` when given), steps them round-robin; returns the
    per-handle observations and final hashes."""
    outs = {}
    for h in range(n_envs):
        i = h % len(pairs)
        lg = None if log is None else log[h]
        assert host.handle(("open", h, f"r{i}", None, f"t{i}", None, None, (), lg))[0] == "ok"
        if log is None:
            assert host.handle(("reset", h))[0] == "ok"
        outs[h] = []
    for k in range(rounds):
        for h in range(n_envs):
            task = pairs[h % len(pairs)][1]
            start = 0 if log is None else len(log[h])
            r = host.handle(("step", h, action_for(task, h, 0, start + k)))
            assert r[0] == "ok", r
            outs[h].append(digest(r[1]))
    return outs, {h: host.handle(("hash", h))[1] for h in range(n_envs)}


def _sequential(pairs, h, actions):
    rec, task = pairs[h % len(pairs)]
    env = Environment(rec)
    env.reset(task)
    outs = [digest(env.step(a)) for a in actions]
    return outs, env.db_hash()


def test_host_wakes_without_replaying(pairs):
    """One awake slot, 6 environments stepped in turn: every step wakes one, yet each action
    runs exactly once (the wake resumes the suspended state), and every environment ends in
    the state of its own sequential replay."""
    count = _Counting()
    host = _host(pairs, count)
    n, rounds = 6, 4
    outs, hashes = _drive(host, pairs, n, rounds)
    assert count.steps == n * rounds
    for h in range(n):
        acts = [action_for(pairs[h % len(pairs)][1], h, 0, k) for k in range(rounds)]
        assert (outs[h], hashes[h]) == _sequential(pairs, h, acts)
    st = host.handle(("stats",))[1]
    assert st["live"] == 1 and st["suspended"] == n - 1 and st["suspended_bytes"] > 0


def test_restored_environments_wake_lazily_once(pairs):
    """As after a worker crash: environments arrive with their logs; nothing runs at open, each
    replays its log once on its first use and never again."""
    count = _Counting()
    host = _host(pairs, count)
    n, prior, rounds = 5, 3, 3
    logs = {h: [action_for(pairs[h % len(pairs)][1], h, 0, k) for k in range(prior)]
            for h in range(n)}
    for h in range(n):
        i = h % len(pairs)
        host.handle(("open", h, f"r{i}", None, f"t{i}", None, None, (), logs[h]))
    assert count.steps == 0
    host.envs.clear()
    host.refs.clear()
    outs, hashes = _drive(host, pairs, n, rounds, log=logs)
    assert count.steps == n * (prior + rounds)
    for h in range(n):
        acts = logs[h] + [action_for(pairs[h % len(pairs)][1], h, 0, prior + k)
                          for k in range(rounds)]
        want_outs, want_hash = _sequential(pairs, h, acts)
        assert outs[h] == want_outs[prior:] and hashes[h] == want_hash


def test_environments_without_suspend_wake_by_replay(pairs):
    count = _Counting(public_api_only=True)
    host = _host(pairs, count)
    n, rounds = 4, 3
    outs, hashes = _drive(host, pairs, n, rounds)
    assert count.steps > n * rounds   # replays happened
    for h in range(n):
        acts = [action_for(pairs[h % len(pairs)][1], h, 0, k) for k in range(rounds)]
        assert (outs[h], hashes[h]) == _sequential(pairs, h, acts)


def test_workers_are_pinned_to_cpus():
    cpus = usable_cpus()
    assert pin_to_cpus([]) is False and pin_to_cpus(None) is False
    assert pin_to_cpus([10**6]) is False            # refused: stays where it was
    assert usable_cpus() == cpus

    async def go(pin):
        async with EnvService(workers=2, live_per_worker=2, pin_workers=pin) as svc:
            return [s["cpus"] for s in await svc.worker_stats()]
    pinned = asyncio.run(go(True))
    assert pinned == [[cpus[0]], [cpus[1 % len(cpus)]]]
    assert asyncio.run(go(False)) == [cpus, cpus]
    with pytest.raises(ValueError, match="pin_workers: expected True or False"):
        EnvService(workers=1, pin_workers="yes")
