"""The conversation layer: when an episode ends (explicit completion / ###STOP### / step limit,
never an acknowledgement), the UserSimulator and Agent protocols (contract tests for every
implementation), the LLM user and OpenAIAgent against a local OpenAI-compatible stub server,
episode logs with tool_call_ids whose replay reproduces the final database hash, partial credit
and pass^k."""
import json

import pytest

from chat_stub import ChatStub
from longcat.envs.agents import (DoNothingAgent, GoldAgent, OpenAIAgent, RandomAgent,
                                 WriteOnlyAgent, run_episode)
from longcat.envs.chat_api import ChatAPIError, chat_completion, completions_url
from longcat.envs.episodes import (Episode, pass_hat_k, pass_hat_k_mean, read_episodes,
                                   replay_episode)
from longcat.envs.growth import DomainContext, build_environment
from longcat.envs.noise import NoiseConfig
from longcat.envs.protocols import Agent, UserSimulator
from longcat.envs.runtime import STOP, Environment
from longcat.envs.tasks import SynthStats, synthesize_task
from longcat.envs.users import USER_GUIDELINES, LLMUser, ScriptedUser, is_completion


@pytest.fixture(scope="module")
def pairs():
    ctx = DomainContext("retail")
    uses, stats, out = {}, SynthStats(), []
    for i in range(3):
        env = build_environment(ctx, 5, i, uses)
        if env["verified"]:
            t = synthesize_task(ctx, env, 0, stats)
            if t is not None:
                out.append((env, t))
    assert len(out) >= 2
    return out


@pytest.mark.parametrize("text,final", [
    ("Sure, let me look into that for you.", False),
    ("I'll get that done for you right away.", False),
    ("One moment, I'm checking the order.", False),
    ("Your order is cancelled. Is there anything else?", False),
    ("All done: the order is cancelled.", True),
    ("Everything you asked for is done.", True),
    ("I'm sorry, I can't help with that.", True),
    ("The address has been updated successfully.", True),
])
def test_is_completion(text, final):
    assert is_completion(text) is final


def test_acknowledgement_never_ends_the_episode(pairs):
    env_rec, task = pairs[0]
    env = Environment(env_rec)
    env.reset(task)
    for text in ("Sure, let me look into that for you.", "Okay.", "Working on it."):
        obs, reward, done, _ = env.step({"type": "message", "content": text})
        assert not done and obs["role"] == "user" and STOP not in obs["content"]
    # an agent that only acknowledges runs into the step limit, with reward 0
    env = Environment(env_rec, max_steps=5)
    r, info = run_episode(env, _Acknowledger(), task)
    assert r == 0.0 and info.get("truncated") and info["steps"] == 5
    env.close()


class _Acknowledger:
    def begin(self, task, observation):
        pass

    def act(self, observation):
        return {"type": "message", "content": "Sure, let me look into that for you."}


def _gold_stub_responder(task, batch_first=2):
    """Plays the gold path as a model would: tool calls (the first ``batch_first`` in one
    reply), then a final message with the rubric values."""
    actions = list(task["gold_actions"])
    state = {"i": 0, "n": 0}

    def respond(body):
        state["n"] += 1
        i = state["i"]
        if i < len(actions):
            take = batch_first if i == 0 else 1
            calls = [{"id": f"c{i + j}", "type": "function",
                      "function": {"name": a["name"], "arguments": json.dumps(a["arguments"])}}
                     for j, a in enumerate(actions[i:i + take])]
            state["i"] = i + len(calls)
            return {"role": "assistant", "content": None, "tool_calls": calls}
        vals = "; ".join(str(r["info"]) for r in task.get("rubrics", []))
        return {"role": "assistant", "content": f"All done. {vals}"}
    return respond


def test_openai_agent_solves_gold_path_through_stub(pairs):
    env_rec, task = pairs[0]
    with ChatStub(_gold_stub_responder(task)) as stub:
        env = Environment(env_rec)
        r, info = run_episode(env, OpenAIAgent(stub.url, model="m"), task)
        assert r == 1.0, info
        # what the client sent: the tools, and every tool result matched to its call by id
        last = stub.requests[-1]
        assert last["model"] == "m" and {t["function"]["name"] for t in last["tools"]} \
            == set(env_rec["tools"])
        ids = set()
        for m in last["messages"]:
            for tc in m.get("tool_calls") or ():
                ids.add(tc["id"])
            if m["role"] == "tool":
                assert m["tool_call_id"] in ids
        n_tool = sum(m["role"] == "tool" for m in last["messages"])
        assert n_tool == len(task["gold_actions"])
        # the environment's own log uses the ids the model chose
        logged = [tc[0] for tc in env.episode().tool_calls()]
        assert logged == [f"c{i}" for i in range(len(task["gold_actions"]))]
        env.close()


def test_openai_agent_malformed_arguments_are_an_error_observation(pairs):
    env_rec, task = pairs[0]
    replies = iter([{"role": "assistant", "content": None, "tool_calls": [
        {"id": "b1", "type": "function", "function": {"name": task["gold_actions"][0]["name"],
                                                      "arguments": "{not json"}}]},
        {"role": "assistant", "content": "Sorry, I can't help with that."}])
    with ChatStub(lambda body: next(replies)) as stub:
        env = Environment(env_rec)
        h0 = None
        agent = OpenAIAgent(stub.url)
        obs = env.reset(task)
        h0 = env.db_hash()
        agent.begin(task, obs)
        o, _, done, _ = env.step(agent.act({"role": "user", "content": "x"}))
        assert o["isError"] and not done and env.db_hash() == h0
        o, r, done, _ = env.step(agent.act(o))
        assert done and r == 0.0
        env.close()


def test_chat_api_errors_are_clear():
    with pytest.raises(ValueError, match="base_url"):
        completions_url("localhost:8000")
    assert completions_url("http://h:1") == "http://h:1/v1/chat/completions"
    assert completions_url("http://h:1/v1/") == "http://h:1/v1/chat/completions"
    with ChatStub(lambda body: "not a message") as stub:
        with pytest.raises(ChatAPIError, match="choices"):
            chat_completion(stub.url, [{"role": "user", "content": "hi"}])


def test_llm_user_follows_guidelines_and_ends_only_on_stop(pairs):
    env_rec, task = pairs[0]
    replies = iter(["Okay, I'll wait.", "Great, thank you! ###STOP###"])
    with ChatStub(lambda body: {"role": "assistant", "content": next(replies)}) as stub:
        env = Environment(env_rec, user=LLMUser.factory(stub.url, model="u"))
        obs = env.reset(task)
        o, _, done, _ = env.step({"type": "message", "content": "Let me check that."})
        assert not done and o["content"] == "Okay, I'll wait."
        o, r, done, info = env.step({"type": "message", "content": "All done."})
        assert done and "###STOP###" in o["content"] and "reward_info" in info
        sys_prompt = stub.requests[0]["messages"][0]["content"]
        assert USER_GUIDELINES.splitlines()[0] in sys_prompt
        for v in task.get("hidden_info", {}).values():
            assert str(v) in sys_prompt
        # roles are flipped: the agent speaks as "user", the simulated user as "assistant"
        roles = [m["role"] for m in stub.requests[1]["messages"]]
        assert roles == ["system", "assistant", "user", "assistant", "user"]
        assert stub.requests[0]["messages"][1]["content"] == obs["messages"][-1]["content"]
        env.close()


def _contract_agents(stub_url):
    return [GoldAgent(), DoNothingAgent(), RandomAgent(seed=2), WriteOnlyAgent(),
            OpenAIAgent(stub_url)]


def test_agent_contract(pairs):
    """Every agent: fits the protocol, returns well-formed actions, finishes an episode."""
    env_rec, task = pairs[0]
    with ChatStub(_gold_stub_responder(task)) as stub:
        for agent in _contract_agents(stub.url):
            assert isinstance(agent, Agent)
            env = Environment(env_rec, max_steps=40)
            obs = env.reset(task)
            agent.begin(task, obs)
            last, done = {"role": "user", "content": obs["messages"][-1]["content"]}, False
            while not done:
                a = agent.act(last)
                assert a["type"] in ("tool_call", "message"), (type(agent).__name__, a)
                if a["type"] == "tool_call":
                    assert isinstance(a["name"], str) and isinstance(a["arguments"], dict)
                else:
                    assert isinstance(a["content"], str)
                last, r, done, info = env.step(a)
            assert r in (0.0, 1.0) and 0.0 <= info["partial_credit"] <= 1.0
            env.close()


def test_user_contract(pairs):
    env_rec, task = pairs[0]
    with ChatStub(lambda body: {"role": "assistant", "content": "Fine. ###STOP###"}) as stub:
        for make in (ScriptedUser, LLMUser.factory(stub.url)):
            u = make(task, task["instruction"], task.get("hidden_info", {}))
            assert isinstance(u, UserSimulator) and u.first_message == task["instruction"]
            text, done = u.reply("All done, the request is complete.")
            assert isinstance(text, str) and done is True


def test_ladder_and_partial_credit(pairs):
    for env_rec, task in pairs:
        env = Environment(env_rec)
        r, info = run_episode(env, GoldAgent(), task)
        assert r == 1.0 and info["partial_credit"] == 1.0
        r, info = run_episode(env, DoNothingAgent(), task)
        p = info["reward_info"]
        assert r == 0.0 and p["tables"] == 0.0 and p["write_recall"] == 0.0
        r, info = run_episode(env, WriteOnlyAgent(), task)
        assert info["reward_info"]["write_recall"] == 1.0
        env.close()


def test_episode_log_replay_reproduces_final_hash(pairs, tmp_path):
    log = tmp_path / "episodes.jsonl"
    noise = NoiseConfig(["transient", "paginated", "user_turns"], 1.0, seed=7)
    for env_rec, task in pairs:
        env = Environment(env_rec, noise=noise)
        r, _ = run_episode(env, GoldAgent(), task, log=str(log))
        assert r == 1.0
        env.close()
        run_episode(Environment(env_rec), RandomAgent(seed=3), task, log=str(log))
    eps = read_episodes(log)
    assert len(eps) == 2 * len(pairs)
    tasks = {t["task_id"]: (e, t) for e, t in pairs}
    for ep in eps:
        # OpenAI chat format: each tool message answers the assistant call with its id
        open_ids = set()
        for m in ep.messages:
            assert m["role"] in ("system", "user", "assistant", "tool")
            for tc in m.get("tool_calls") or ():
                open_ids.add(tc["id"])
                json.loads(tc["function"]["arguments"])
            if m["role"] == "tool":
                assert m["tool_call_id"] in open_ids
        env_rec, task = tasks[ep.task_id]
        n = NoiseConfig(**ep.noise) if ep.noise else None
        env = Environment(env_rec, noise=n)
        assert replay_episode(env, task, ep) == ep.final_db_hash
        env.close()
    assert Episode.from_dict(eps[0].to_dict()) == eps[0]
    with pytest.raises(ValueError, match="missing keys"):
        Episode.from_dict({"task_id": "x"})


def test_pass_hat_k():
    assert pass_hat_k(4, 4, 3) == 1.0 and pass_hat_k(0, 4, 1) == 0.0
    assert pass_hat_k(3, 4, 2) == pytest.approx(3 / 6)
    assert pass_hat_k(2, 4, 1) == 0.5
    assert pass_hat_k_mean({"a": [1.0, 1.0], "b": [1.0, 0.0]}, 2) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="k"):
        pass_hat_k(1, 2, 3)
    with pytest.raises(ValueError, match="successes"):
        pass_hat_k(3, 2, 1)
