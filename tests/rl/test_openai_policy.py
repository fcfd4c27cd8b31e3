"""OpenAIPolicy against an in-process ``longcat serve`` app on a free local port: a short
arith-tiny run generates through the endpoint, pushes weights after every step (the server
reports the new versions, and at the end serves exactly the trained weights), and a push waits
for the trajectories pinned to the old version."""
import asyncio
import os

import httpx
import pytest
import torch

from longcat.models import LongcatFlashConfig, LongcatFlashForCausalLM
from longcat.rl import load_recipe, train
from longcat.rl.openai_policy import OpenAIPolicy, WeightSyncError
from longcat.rl.tasks import arith_tokenizer
from longcat.rl.trainer import Batch, completion_logprobs

MODEL = "arith-policy"


@pytest.fixture(scope="module", autouse=True)
def one_thread():  # the server's engine and the trainer share 2 busy cores
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def server(arith_server):
    return arith_server


def _recipe(base_url, weights_dir):
    return {"name": "arith-openai", "seed": 0, "model": {"preset": "tiny"},
            "task": {"max_operand": 9, "ops": "+-", "n_terms": 2},
            "warm_start": {"steps": 0},
            "rollout": {"group_size": 4, "max_new_tokens": 4, "controllers": 2, "max_concurrent": 8},
            "train": {"steps": 3, "batch_groups": 4, "lr": 1e-3, "max_staleness": 0, "checkpoint_every": 10},
            "policy": {"kind": "openai", "base_url": base_url, "weights_dir": str(weights_dir)}}


def test_arith_run_through_the_endpoint_trains_and_pushes_versions(server, tmp_path):
    res = train(_recipe(server.base_url, tmp_path / "w"), str(tmp_path / "run"), progress=False,
                reward_fn=_parity)
    assert res.steps == 3 and res.stopped is None
    health = httpx.get(server.base_url + "/health").json()
    assert health["policy_version"] == 3  # version 0 at start, then one push per step
    rows = [__import__("json").loads(x) for x in open(res.metrics_path)]
    assert [r["version"] for r in rows] == [1, 2, 3]
    # Synchronous steps (max_staleness 0): every sample came from the trainer's current weights,
    # so the server's logprobs equal the trainer's on the same tokens: the weights really synced.
    assert all(r["logp_gap"] < 1e-3 for r in rows), [r["logp_gap"] for r in rows]
    assert os.listdir(tmp_path / "w") == ["policy-v3.safetensors"]  # older pushes cleaned up
    # The server now serves exactly the trained weights: its logprobs match the final checkpoint.
    tok = arith_tokenizer()
    prompt = tok("3+4=")["input_ids"]
    out = httpx.post(server.base_url + "/v1/completions", json={
        "model": MODEL, "prompt": prompt, "max_tokens": 3, "logprobs": 0, "return_token_ids": True,
        "ignore_eos": True}).json()["choices"][0]
    assert out["policy_versions"] == [3, 3, 3]
    model = LongcatFlashForCausalLM.from_pretrained(res.checkpoint_dir, dtype=torch.float32).eval()
    ids = torch.tensor([prompt + out["token_ids"]])
    batch = Batch(ids, torch.ones_like(ids), torch.ones(1, 3), torch.tensor([len(prompt)]), torch.zeros(1, 3),
                  torch.zeros(1))
    with torch.no_grad():
        ref = completion_logprobs(model, batch)[0]
    torch.testing.assert_close(torch.tensor(out["logprobs"]["token_logprobs"]), ref, atol=1e-4, rtol=1e-4)


async def _parity(task, sample):  # varies within groups whatever the model knows
    return float(sample.completion_ids[0] % 2) if sample.completion_ids else 0.0


def test_push_waits_for_pinned_trajectories(server, tmp_path):
    model = LongcatFlashForCausalLM(LongcatFlashConfig.from_preset("tiny"), dtype=torch.float32)
    weights = model.hf_state_dict()

    async def main():
        policy = OpenAIPolicy(server.base_url, sampling={"max_tokens": 2}, version=10, state_dict=weights,
                              weights_dir=str(tmp_path))
        try:
            assert policy.model == MODEL  # found through /v1/models
            v = policy.acquire_version()
            push = asyncio.create_task(policy.update_weights(weights, 11))
            await asyncio.sleep(0.2)
            assert not push.done()             # the pinned trajectory runs first, on version 10
            assert policy.acquire_version() == 11  # a trajectory that starts meanwhile waits for 11
            samples = await policy.generate([4, 5, 6], 2, v)
            assert [s.versions for s in samples] == [[10, 10], [10, 10]]
            assert all(len(s.logprobs) == len(s.completion_ids) == 2 for s in samples)
            policy.release_version(v)
            await asyncio.wait_for(push, 30)
            later = await policy.generate([4, 5, 6], 1, 11)
            assert later[0].versions == [11, 11] and policy.version == 11
            policy.release_version(11)
            with pytest.raises(ValueError, match="version"):
                await policy.update_weights(weights, 11)
            bad = {k: v for k, v in list(weights.items())[1:]}  # a tensor missing: the server refuses
            with pytest.raises(WeightSyncError, match="update_weights"):
                await policy.update_weights(bad, 12)
            assert policy.version == 11
        finally:
            await policy.close()

    asyncio.run(main())


def test_bad_arguments(server):
    with pytest.raises(ValueError, match="base_url"):
        OpenAIPolicy("localhost:8000")
    with pytest.raises(ValueError, match="sampling"):
        OpenAIPolicy(server.base_url, MODEL, sampling={"temp": 1.0})
    with pytest.raises(ValueError, match="policy.base_url"):
        load_recipe({"policy": {"kind": "openai"}})
    with pytest.raises(ValueError, match="policy.base_url.*conflicts"):
        load_recipe({"policy": {"base_url": "http://127.0.0.1:1"}})
    with pytest.raises(ValueError, match="policy.kind"):
        load_recipe({"policy": {"kind": "vllm"}})
