"""The Ray backend of EnvService on a local Ray cluster started by the test: the same API, and
a killed actor is replaced with its environments restored from their committed steps."""
import asyncio

import pytest

from longcat.bench.envs_service import make_pairs
from longcat.envs.runtime import Environment

ray = pytest.importorskip("ray")


def test_ray_backend_episode_and_actor_loss():
    from longcat.envs.service import EnvService

    rec, task = make_pairs(domains=("retail",), per_domain=2)[0]
    gold = [{"type": "tool_call", "name": a["name"], "arguments": a["arguments"]}
            for a in task["gold_actions"]]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        async def go():
            async with EnvService(workers=1, backend="ray", live_per_worker=1,
                                  step_timeout=60) as svc:
                hs = [await svc.open(rec, task) for _ in range(2)]
                obs = [await svc.reset(h) for h in hs]
                first = [await svc.step(h, gold[0]) for h in hs]
                pid = svc.kill_worker(0)
                after = await svc.step(hs[0], {"type": "message", "content": "my email?"})
                hashes = [await svc.db_hash(h) for h in hs]
                logs = [svc.committed(h) for h in hs]
                m = svc.metrics()
                for h in hs:
                    await svc.close(h)
                return obs, first, pid, after, hashes, logs, m
        obs, first, pid, after, hashes, logs, m = asyncio.run(go())
    finally:
        ray.shutdown()
    env = Environment(rec)
    assert obs[0] == env.reset(task)
    assert list(first[0]) == list(env.step(gold[0]))
    assert isinstance(pid, int) and m["worker_restarts"] == 1
    assert "error" not in after[3]
    for actions, got in zip(logs, hashes):
        env.reset(task)
        for a in actions:
            env.step(a)
        assert env.db_hash() == got
    assert [len(a) for a in logs] == [2, 1]
