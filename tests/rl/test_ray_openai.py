"""The Ray backend with an OpenAI-compatible policy: the trainer actor's weights are pushed to an
in-process ``longcat serve`` after every step, the server generates the rollouts, reward workers
score them."""
import json

import httpx
import pytest

from longcat.rl import train

pytest.importorskip("ray")

from longcat.bench.rl import parity_reward  # noqa: E402  (importable by the reward workers)


@pytest.fixture(scope="module")
def server(arith_server):
    return arith_server


def test_openai_policy_with_ray_trainer_and_reward_workers(ray_cluster, server, tmp_path):
    recipe = {"name": "arith-openai-ray", "seed": 0, "model": {"preset": "tiny"},
              "task": {"max_operand": 9, "ops": "+-", "n_terms": 2}, "warm_start": {"steps": 0},
              "rollout": {"group_size": 4, "max_new_tokens": 4, "controllers": 2, "max_concurrent": 4},
              "train": {"steps": 2, "batch_groups": 2, "lr": 1e-3, "max_staleness": 0, "checkpoint_every": 10},
              "policy": {"kind": "openai", "base_url": server.base_url, "weights_dir": str(tmp_path / "w")}}
    res = train(recipe, str(tmp_path / "run"), progress=False, backend="ray", reward_fn=parity_reward)
    assert res.steps == 2 and res.stopped is None
    assert httpx.get(server.base_url + "/health").json()["policy_version"] == 2  # one push per step
    rows = [json.loads(x) for x in open(res.metrics_path)]
    assert [r["version"] for r in rows] == [1, 2]
    # Synchronous steps: the server generated with the trainer actor's current weights, so its
    # logprobs match the trainer's on the same tokens (a stale or missing push would not).
    assert all(r["logp_gap"] < 1e-3 for r in rows), [r["logp_gap"] for r in rows]
