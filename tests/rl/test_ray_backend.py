"""The Ray backend on a local Ray cluster started by the test (2 CPUs): a few steps of arith-tiny
with generators, reward workers and the trainer as actors (same metrics and checkpoints as the
local backend), and a generator actor killed mid-trajectory: its prompts are re-queued and
trained later, none lost or trained twice, and a fresh actor takes its place."""
import asyncio
import json
import os
import re

import pytest
import torch

from longcat.models import LongcatFlashConfig, LongcatFlashForCausalLM
from longcat.rl import train
from longcat.rl.buffer import SampleBuffer, StalenessManager
from longcat.rl.checkpoint import latest_checkpoint, load_state
from longcat.rl.loop import RolloutManager, StreamingLoop

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()
    torch.set_num_threads(n)


# A reward the Ray workers can import (a module's function), varying within groups whatever the
# model knows; a function of this test file cannot be loaded by them (checked below).
from longcat.bench.rl import parity_reward as _parity  # noqa: E402


async def _local_only(task, sample):
    return 0.0


def test_arith_tiny_steps_on_ray(cluster, tmp_path):
    recipe = {"name": "arith-ray", "seed": 0, "model": {"preset": "tiny"},
              "task": {"max_operand": 9, "ops": "+-", "n_terms": 2},
              "warm_start": {"steps": 0},
              "rollout": {"group_size": 4, "max_new_tokens": 3, "controllers": 2, "max_concurrent": 4},
              "train": {"steps": 3, "batch_groups": 2, "lr": 1e-3, "max_staleness": 1, "checkpoint_every": 2}}
    res = train(recipe, str(tmp_path), progress=False, backend="ray", reward_fn=_parity)
    assert res.steps == 3 and res.stopped is None and res.generator_busy_s > 0
    rows = [json.loads(x) for x in open(res.metrics_path)]
    assert [r["version"] for r in rows] == [1, 2, 3]
    assert all(max(map(int, r["staleness_hist"])) <= 1 for r in rows)
    assert all(r["logp_gap"] < 1.0 for r in rows)  # the actors' logprobs are the policy's
    state = load_state(latest_checkpoint(str(tmp_path)))
    trained = [u for u, o in state["manager"]["ledger"].items() if o == "trained"]
    assert state["step"] == 3 and len(trained) == 3 * 2
    # The driver's model holds the trainer actor's weights: the checkpoint is the trained policy.
    assert os.path.isfile(os.path.join(res.checkpoint_dir, "config.json"))
    with pytest.raises(ValueError, match="backend"):
        train(recipe, str(tmp_path / "y"), backend="slurm")
    with pytest.raises(ValueError, match="importable"):
        from longcat.rl.ray_backend import RayReward
        RayReward(_local_only, workers=1)


def test_killed_generator_requeues_its_prompts(cluster):
    from longcat.rl.ray_backend import RayPolicy

    torch.manual_seed(0)
    model = LongcatFlashForCausalLM(LongcatFlashConfig.from_preset("tiny"), dtype=torch.float32)
    logs = []

    class Source:
        def get(self, uid):
            return uid, [3 + uid % 7, 4, 5]

    async def main():
        policy = RayPolicy(model, generators=2, sampling={"max_tokens": 12, "ignore_eos": True},
                           engine_args={"max_model_len": 32, "max_num_seqs": 16, "seed": 1})
        manager, buffer = RolloutManager(), SampleBuffer()
        staleness = StalenessManager(2, 1, 4)
        loop = StreamingLoop(policy=policy, source=Source(), reward_fn=_parity, manager=manager, buffer=buffer,
                             staleness=staleness, group_size=4, controllers=2, log=logs.append)
        trained = []

        async def killer():
            # Kill actor 0 the moment it holds a trajectory; on a loaded machine the trajectory
            # may finish before the kill lands (the actor is then replaced with nothing lost), so
            # kill again until a trajectory in flight is lost.
            while policy.lost == 0:
                while policy._load[0] == 0:
                    await asyncio.sleep(0.001)
                policy.kill_generator(0)
                await asyncio.sleep(0.2)

        async def on_batch(report):
            if report.step == 1:
                asyncio.get_running_loop().create_task(killer())
            trained.extend(g.uid for g in report.groups)
            for g in report.groups:
                manager.record(g.uid, "trained")
            new = policy.version + 1
            await policy.update_weights(model.hf_state_dict(), new)
            await staleness.set_version(new)
            return report.step < 6 or policy.lost == 0 or any(u not in manager.ledger for u in lost())

        def lost():
            return [int(m.group(1)) for m in (re.match(r"re-queued prompt (\d+)", x) for x in logs) if m]

        try:
            await asyncio.wait_for(loop.run(on_batch), 120)
        finally:
            await policy.close()
        return policy, manager, buffer, trained, lost()

    policy, manager, buffer, trained, lost = asyncio.run(main())
    assert policy.replaced >= 1 and policy.lost >= 1 and lost  # the in-flight trajectories failed ...
    # ... and their prompts came back and were trained (or filtered out as an all-equal group)
    ends = {u: manager.ledger.get(u) for u in lost}
    assert all(e == "filtered" or (e == "trained" and u in trained) for u, e in ends.items()), ends
    assert len(trained) == len(set(trained))  # none trained twice
    # Every prompt id issued ends in one place: the ledger, the buffer, re-queued or in flight.
    accounted = set(manager.ledger) | {g.uid for g in buffer.groups} | set(manager.requeued) | manager.inflight
    assert set(range(manager.next_uid)) == accounted
