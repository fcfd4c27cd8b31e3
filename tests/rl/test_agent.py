"""Multi-turn environment rollouts (``longcat.rl.agent``) against a scripted policy: the episode
reaches the environment's reward, non-assistant tokens are masked out, context management
triggers inside a rollout, a failing or slow environment drops only its trajectory, and the
noise curriculum is driven per step and restored on resume."""
import asyncio
import json

import pytest
import torch

from longcat.data import envs_adapter as ea
from longcat.models.tokenizer import CHAT_STOP_TOKEN
from longcat.rl.agent import SUMMARY_REQUEST, AgentEpisodes
from longcat.rl.buffer import SampleBuffer, StalenessManager
from longcat.rl.context import SUMMARY_PREFIX, ContextConfig
from longcat.rl.loop import RolloutManager, StreamingLoop
from longcat.rl.protocols import Sample
from longcat.rl.trainer import build_batch


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A few built environments, the longcat tokenizer, and a task the reference agent solves."""
    from transformers import AutoTokenizer

    from longcat.data.synth import ReferencePolicy, policy_rules
    from longcat.models.random_init import init_checkpoint

    root = tmp_path_factory.mktemp("agent")
    ea.build_envs(root / "envs", count=8, seed=0, tasks_per_env=2, progress=False)
    envs, tasks = ea.load_build(root / "envs")
    init_checkpoint(root / "init", "tiny", seed=0)  # a random tiny policy and the longcat tokenizer
    tok = AutoTokenizer.from_pretrained(root / "init")
    for task in sorted(tasks, key=lambda t: (ea.tier_of(t), t["task_id"])):
        if ea.tier_of(task) < 2:
            continue
        env = ea.make_env(envs[task["env_id"]])
        ep = ea.run_episode(env, task, ReferencePolicy(task, "grounded", env.tools,
                                                       policy_rules(ea.domain_policy(task["domain"]))))
        env.close()
        if ep.reward == 1.0:
            replies = [m for m in ep.messages if m["role"] == "assistant"]
            return {"envs": envs, "tasks": tasks, "tok": tok, "task": task, "replies": replies, "root": root}
    pytest.fail("the reference agent solved no task of two or more calls in an 8-environment build: "
                "the build or the reference agent regressed")


def assistant_text(msg: dict) -> str:
    """What a model writes for ``msg`` (the template's assistant body, without its opener)."""
    from longcat.models.tokenizer import render_chat

    full = render_chat([msg], None)
    opener = "<|im_start|>assistant\n"
    return full[full.index(opener) + len(opener):full.rindex(CHAT_STOP_TOKEN)]


class ScriptedPolicy:
    """Replays the reference agent's assistant turns: turn k of the prompt gets reply k; a
    summary request gets a fixed summary. Records every prompt it was given."""

    def __init__(self, tok, replies, version=0, fail_on_turn=None, delay=0.0):
        self.tok, self.replies, self._version = tok, replies, version
        self.prompts, self.generated = [], []
        self.fail_on_turn, self.delay = fail_on_turn, delay

    @property
    def version(self):
        return self._version

    def acquire_version(self):
        return self._version

    def release_version(self, version):
        pass

    async def update_weights(self, state_dict, version):
        self._version = version

    async def generate(self, prompt_ids, n, version):
        await asyncio.sleep(self.delay)
        self.prompts.append(list(prompt_ids))
        text = self.tok.decode(prompt_ids, skip_special_tokens=False)
        if SUMMARY_REQUEST in text.rsplit("<|im_start|>user", 1)[-1]:
            body = "I looked up the records."
        else:
            # turns since the last reset: the prompt's assistant openers, minus the generation prompt
            turn = text.count("<|im_start|>assistant") - 1
            summarized = SUMMARY_PREFIX.strip() in text
            k = turn + (self.offset if summarized else 0)
            if self.fail_on_turn is not None and k == self.fail_on_turn:
                raise RuntimeError("engine lost")
            body = assistant_text(self.replies[min(k, len(self.replies) - 1)])
        ids = list(self.tok(body, add_special_tokens=False)["input_ids"]) + \
            [self.tok.convert_tokens_to_ids(CHAT_STOP_TOKEN)]
        self.generated.append(ids)
        return [Sample(list(prompt_ids), ids, [-0.5] * len(ids), [version] * len(ids), body, "stop")]

    offset = 0


def episodes(world, policy, **kw):
    return AgentEpisodes(world["envs"], policy, world["tok"], max_new_tokens=128, max_model_len=4096, **kw)


def test_scripted_rollout_reaches_the_reward_and_masks_non_assistant_tokens(world):
    policy = ScriptedPolicy(world["tok"], world["replies"])
    run = episodes(world, policy, reward="success")
    segs = asyncio.run(run(world["task"], uid=0, index=0, version=3))
    assert len(segs) == 1
    s = segs[0]
    assert s.reward == 1.0
    assert len(s.loss_mask) == len(s.completion_ids) == len(s.logprobs) == len(s.versions)
    assert set(s.versions) == {3}
    # the trained tokens are exactly what the policy generated, turn after turn, with its logprobs
    trained = [t for t, m in zip(s.completion_ids, s.loss_mask) if m]
    assert trained == [t for ids in policy.generated for t in ids]
    assert all(lp == -0.5 for lp, m in zip(s.logprobs, s.loss_mask) if m)
    # the masked tokens carry the environment's side: tool results and user turns
    masked = world["tok"].decode([t for t, m in zip(s.completion_ids, s.loss_mask) if not m],
                                 skip_special_tokens=False)
    assert "<tool_response>" in masked and "<|im_start|>tool" in masked
    assert "<tool_call>" not in masked
    # token-in token-out: each turn's prompt is a prefix of the final sequence
    full = s.prompt_ids + s.completion_ids
    for p in policy.prompts:
        assert full[:len(p)] == p
    # the trainer sees the mask: only assistant tokens count
    batch = build_batch([type("G", (), {"samples": [s, Sample(s.prompt_ids, [], [], [], reward=0.0)]})()], True)
    assert int(batch.completion_mask[0].sum()) == sum(s.loss_mask)
    assert run.take_stats()["episodes"] == 1


def test_partial_credit_reward_when_the_episode_fails(world):
    # the policy stops after its first reply (tells the user it is done): some gold calls are missing
    policy = ScriptedPolicy(world["tok"], [{"role": "assistant", "content": "Everything you asked for is done."}])
    seg, = asyncio.run(episodes(world, policy, reward="partial")(world["task"], 0, 0, 0))
    assert 0.0 <= seg.reward < 1.0
    seg_success, = asyncio.run(episodes(world, ScriptedPolicy(world["tok"], world["replies"]),
                                        reward="partial")(world["task"], 0, 0, 0))
    assert seg_success.reward == 1.0


def test_context_discard_inside_a_rollout(world):
    policy = ScriptedPolicy(world["tok"], world["replies"])
    run = episodes(world, policy, context=ContextConfig(max_turns=1), max_turns=4)
    segs = asyncio.run(run(world["task"], 0, 0, 0))
    stats = run.take_stats()
    assert stats["discards"] >= 1
    assert len(segs) == stats["discards"] + 1  # one segment per context, all with the episode's reward
    assert len({s.reward for s in segs}) == 1
    # after a discard the prompt is the system prompt and the question again: the first prompt
    first = policy.prompts[0]
    assert all(p == first for p in policy.prompts)


def test_context_summary_inside_a_rollout(world):
    policy = ScriptedPolicy(world["tok"], world["replies"])
    policy.offset = 1  # after the summary, continue with the reference's next reply
    first = len(policy.tok(ea.brief_system_prompt(ea.make_env(world["envs"][world["task"]["env_id"]])))["input_ids"])
    run = episodes(world, policy, context=ContextConfig(summarize_at=first + 60))
    segs = asyncio.run(run(world["task"], 0, 0, 0))
    stats = run.take_stats()
    assert stats["summaries"] >= 1
    texts = [world["tok"].decode(s.prompt_ids, skip_special_tokens=False) for s in segs]
    # the summary is generated (and trained on) from a prompt that asks for it ...
    assert any(SUMMARY_REQUEST in t for t in texts)
    # ... and a later context starts from the system prompt, the question and that summary
    assert any(SUMMARY_PREFIX.strip() in t and "I looked up the records." in t for t in texts)
    for s in segs:
        assert sum(s.loss_mask) > 0


def _loop(world, policy, run, groups=2, group_size=2):
    from longcat.rl.agent import EnvTaskSource

    source = EnvTaskSource([world["task"]], world["tok"])
    logs = []
    loop = StreamingLoop(policy=policy, source=source, reward_fn=None, manager=RolloutManager(), buffer=SampleBuffer(),
                         staleness=StalenessManager(groups, 1, 2), group_size=group_size, controllers=1,
                         log=logs.append, episodes=run)
    return loop, logs


def test_a_raising_or_slow_environment_drops_the_trajectory_and_the_loop_goes_on(world):
    calls = {"n": 0}
    policy = ScriptedPolicy(world["tok"], world["replies"])
    good = episodes(world, policy, reward="partial")

    async def flaky(task, uid, index, version):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("environment worker died")
        if calls["n"] == 2:
            await asyncio.sleep(5)  # past the timeout
        segs = await good(task, uid, index, version)
        for s in segs:  # alternate rewards so groups are not filtered as degenerate
            s.reward = float(index % 2)
        return segs

    flaky.timeout = 0.5
    loop, logs = _loop(world, policy, flaky)
    batches = []

    async def on_batch(report):
        batches.append(report)
        return len(batches) < 2

    asyncio.run(asyncio.wait_for(loop.run(on_batch), 60))
    assert len(batches) == 2
    assert any("ConnectionError: environment worker died" in m for m in logs)
    assert any("timed out" in m for m in logs)
    for rep in batches:
        for g in rep.groups:
            assert {s.trajectory for s in g.samples} == {0, 1}
            assert all(s.loss_mask is not None for s in g.samples)


def test_an_engine_failure_mid_episode_drops_only_that_episode(world):
    policy = ScriptedPolicy(world["tok"], world["replies"], fail_on_turn=1)
    run = episodes(world, policy)
    loop, logs = _loop(world, policy, run)

    async def go():
        c = loop.controllers[0]
        return await c._episode(world["task"], 0, 0, 0)

    assert asyncio.run(go()) is None
    assert "RuntimeError: engine lost" in logs[-1]
    assert loop.stats.failed_samples == 1


AGENT = {"name": "agent-test", "task": {"name": "envs"}, "model": {"preset": "tiny"},
         "envs": {"count": 6, "tasks_per_env": 2, "max_turns": 2, "max_model_len": 1536, "reward": "partial"},
         "context": {"max_turns": 1},
         "curriculum": {"enabled": True, "start_intensity": 0.2, "max_intensity": 0.6, "step": 0.2, "min_updates": 1},
         "rollout": {"group_size": 2, "max_new_tokens": 8, "controllers": 1, "max_concurrent": 1},
         "algorithm": {"filter_degenerate": False},
         "train": {"steps": 2, "batch_groups": 1, "lr": 1.0e-5, "checkpoint_every": 1, "max_staleness": 0}}


@pytest.mark.parametrize("patch,key", [
    ({"envs": {"rewrd": "partial"}}, "envs.rewrd"),
    ({"context": {"summarize": 100}}, "context.summarize"),
    ({"curriculum": {"enabled": True, "speed": 1}}, "curriculum.speed"),
    ({"envs": {"reward": "dense"}}, "envs.reward"),
    ({"envs": {"noise": ["typos", "hail"]}}, "envs.noise"),
    ({"envs": {"noise": ["typos"]}}, "envs.noise"),  # conflicts with the curriculum
    ({"context": {"summarize_at": 1530}}, "context.summarize_at"),  # no room left for the summary
    ({"warm_start": {"steps": 10}}, "warm_start.steps"),
    ({"curriculum": {"max_intensity": 1.5}}, "curriculum"),
])
def test_agent_recipe_bad_keys_name_the_key(patch, key):
    from longcat.rl import load_recipe

    data = json.loads(json.dumps(AGENT))
    for section, values in patch.items():
        data.setdefault(section, {}).update(values)
    with pytest.raises(ValueError, match=f"'{key}"):
        load_recipe(data)


def test_agent_sections_need_the_envs_task():
    from longcat.rl import load_recipe

    with pytest.raises(ValueError, match="'context.max_turns' only applies to task.name 'envs'"):
        load_recipe({"context": {"max_turns": 3}})


def test_the_curriculum_raises_noise_as_the_gap_closes_and_resumes_losslessly(world, tmp_path):
    # A random tiny policy fails clean and noisy episodes alike: the gap is closed, so every step
    # (min_updates 1) raises the intensity; the state is in the checkpoint and a resumed run goes on
    # from it instead of starting over.
    from longcat.rl import train
    from longcat.rl.checkpoint import latest_checkpoint, load_state
    from longcat.rl.metrics import read_metrics

    recipe = json.loads(json.dumps(AGENT))
    recipe["model"]["checkpoint"] = str(world["root"] / "init")
    recipe["envs"]["build"] = str(world["root"] / "envs")
    out = tmp_path / "run"
    first = train(recipe, out, max_steps=1, progress=False)
    assert first.steps == 1
    state = load_state(latest_checkpoint(str(out)))["agent"]["curriculum"]
    rows = read_metrics(first.metrics_path)
    assert rows[0]["curriculum"]["intensity"] == pytest.approx(state["intensity"])
    # one group of two episodes per step (synchronous); seed 0 makes one of each prompt's two noisy
    assert (rows[0]["episodes"], rows[0]["clean_episodes"], rows[0]["noisy_episodes"]) == (2, 1, 1)
    second = train(recipe, out, max_steps=2, progress=False)
    assert second.resumed_from is not None and second.steps == 2
    rows = read_metrics(second.metrics_path)
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:  # both kinds of episodes every step, so the curriculum measured a gap each time
        assert r["clean_episodes"] and r["noisy_episodes"]
    # closed gap -> one step harder per step: 0.2 -> 0.4 at step 1, and the resumed step 2 goes on
    # from 0.4 to 0.6 (a fresh curriculum would be back at 0.4)
    assert [round(r["curriculum"]["intensity"], 6) for r in rows] == [0.4, 0.6]
