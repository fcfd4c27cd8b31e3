"""An environment worker of the Ray backend killed mid-episode: that episode fails with an error
naming the worker (the loop drops it, as any environment failure), the worker is replaced, and
the next episode runs to its reward."""
import asyncio
import time

import pytest

pytest.importorskip("ray")


class TalkingPolicy:
    """Says the same sentence every turn; ``before_turn()`` runs before each (fault injection)."""

    def __init__(self, tok, before_turn=lambda: None):
        self.before_turn = before_turn
        from longcat.models.tokenizer import CHAT_STOP_TOKEN

        self.ids = tok("Could you tell me more about it?" + CHAT_STOP_TOKEN, add_special_tokens=False)["input_ids"]
        self.text = "Could you tell me more about it?"

    async def generate(self, prompt_ids, n, version):
        from longcat.rl.protocols import Sample

        self.before_turn()
        return [Sample(list(prompt_ids), list(self.ids), [-1.0] * len(self.ids), [version] * len(self.ids),
                       self.text, "stop")]


def test_a_killed_env_worker_drops_its_episode_and_is_replaced(ray_cluster, envs_world):
    ray, world = ray_cluster, envs_world
    from transformers import AutoTokenizer

    from longcat.data import envs_adapter as ea
    from longcat.rl.agent import AgentEpisodes
    from longcat.rl.ray_backend import RayEnvHost

    envs, tasks = ea.load_build(world / "envs")
    tok = AutoTokenizer.from_pretrained(world / "init")
    host = RayEnvHost(envs, workers=2)
    kills = []

    def kill_once():  # the first turn of the first episode: its environment is open on a worker
        if not kills:
            kills.append(next(i for i, n in enumerate(host._open) if n))
            actor = host.actors[kills[0]]
            host.kill_worker(kills[0])
            for _ in range(100):  # ray.kill lands asynchronously: wait until the worker is gone
                try:
                    ray.get(actor.ping.remote(), timeout=5)
                except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                    break
                time.sleep(0.1)

    episodes = AgentEpisodes(envs, TalkingPolicy(tok, kill_once), tok, max_turns=4, max_model_len=4096,
                             max_new_tokens=16, env_host=host)

    async def main():
        with pytest.raises(RuntimeError, match="environment worker . died"):
            await episodes(tasks[0], 0, 0, 0)
        return await episodes(tasks[1], 1, 0, 0)

    try:
        out = asyncio.run(main())
    finally:
        host.close_all()
    assert host.replaced == 1 and kills and episodes.events["context_full"] == 0
    assert out and all(s.reward is not None and s.reward >= 0 for s in out)  # the next episode ran to its end
    assert sum(s.loss_mask.count(1) for s in out) > 0
