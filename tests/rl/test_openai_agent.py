"""The multi-turn environment task through an OpenAI-compatible endpoint: ``longcat serve``
(in-process, on a free port) serves a random tiny checkpoint; the RL run's episodes generate each
assistant turn through ``/v1/completions`` with the chat stop token as ``stop_token_ids`` (vLLM's
and SGLang's extension), and the trainer pushes its weights after every step."""
import httpx
import pytest
import torch

from longcat.engine import AsyncEngine
from longcat.engine.chat import chat_stop_token_ids
from longcat.rl import train
from longcat.rl.metrics import read_metrics
from longcat.serve import ServerThread, build_app

MODEL = "agent-policy"


@pytest.fixture(scope="module")
def served(envs_world):
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the server's engine and the trainer share 2 cores
    engine = AsyncEngine.from_pretrained(str(envs_world / "init"), max_model_len=4096, max_num_seqs=16)
    with ServerThread(build_app(engine, MODEL)) as s:
        yield s, engine
    torch.set_num_threads(n)


def test_stop_token_ids_end_a_completion_at_that_token(served):
    server, engine = served
    prompt = [1, 5, 6, 7]
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 6, "temperature": 0, "ignore_eos": True,
            "return_token_ids": True}
    free = httpx.post(server.base_url + "/v1/completions", json=body).json()["choices"][0]
    first = free["token_ids"][0]
    stopped = httpx.post(server.base_url + "/v1/completions",
                         json={**body, "stop_token_ids": [first]}).json()["choices"][0]
    assert stopped["token_ids"] == [first] and stopped["finish_reason"] == "stop"
    bad = httpx.post(server.base_url + "/v1/completions", json={**body, "stop_token_ids": [-1]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "stop_token_ids"


def test_envs_task_trains_through_the_endpoint(served, envs_world, tmp_path, monkeypatch):
    server, engine = served
    bodies = []
    post = httpx.AsyncClient.post

    async def recording_post(self, url, *a, **kw):
        bodies.append((url, kw.get("json")))
        return await post(self, url, *a, **kw)

    monkeypatch.setattr(httpx.AsyncClient, "post", recording_post)
    recipe = {"name": "agent-openai", "task": {"name": "envs"}, "model": {"checkpoint": str(envs_world / "init")},
              "envs": {"build": str(envs_world / "envs"), "max_turns": 2, "max_model_len": 4096,
                       "reward": "partial"},
              "rollout": {"group_size": 2, "max_new_tokens": 8, "controllers": 2, "max_concurrent": 2},
              "algorithm": {"filter_degenerate": False},
              "train": {"steps": 2, "batch_groups": 1, "lr": 1e-5, "checkpoint_every": 1, "max_staleness": 0},
              "policy": {"kind": "openai", "base_url": server.base_url, "weights_dir": str(tmp_path / "w")}}
    res = train(recipe, str(tmp_path / "run"), progress=False)
    assert res.steps == 2 and res.stopped is None
    rows = read_metrics(res.metrics_path)
    assert [r["version"] for r in rows] == [1, 2]
    assert all(r["failed_samples"] == 0 and r["errors"] == [] for r in rows), [r["errors"] for r in rows]
    assert sum(r["episodes"] for r in rows) >= 2 * 2 and all(r["turns_mean"] >= 1 for r in rows)
    assert all(r["context_full"] == 0 for r in rows)  # every prompt fit: turns were generated
    assert httpx.get(server.base_url + "/health").json()["policy_version"] == 2
    # every turn went out with the chat stop token as stop_token_ids, so the server ends turns there
    turns = [b for url, b in bodies if url == "/v1/completions"]
    assert turns and all(b["stop_token_ids"] == chat_stop_token_ids(engine.tokenizer) for b in turns)
