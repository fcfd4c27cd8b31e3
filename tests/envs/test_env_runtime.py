"""The agent-facing runtime (longcat.envs.runtime.Environment): reset/step contract, the scripted
user, bad actions as error observations with the database unchanged, snapshot/restore, and the
noise guarantee: the gold path with a retrying agent still earns full reward under every noise
type. (Named test_env_runtime.py: tests/test_runtime.py already exists at the top level.)"""
import json

import pytest

from longcat.envs.agents import GoldAgent, run_episode
from longcat.envs.growth import DomainContext, build_environment
from longcat.envs.noise import NOISE_TYPES, NoiseConfig
from longcat.envs.runtime import STOP, Environment, ScriptedUser
from longcat.envs.tasks import SynthStats, synthesize_task


@pytest.fixture(scope="module")
def pairs():
    out = []
    for dom in ("retail", "airline"):
        ctx = DomainContext(dom)
        uses, stats = {}, SynthStats()
        for i in range(4):
            env = build_environment(ctx, 11, i, uses)
            if env["verified"]:
                t = synthesize_task(ctx, env, 0, stats)
                if t is not None:
                    out.append((env, t))
    assert len(out) >= 5
    return out


@pytest.fixture
def env_task(pairs):
    env_rec, task = pairs[0]
    env = Environment(env_rec)
    yield env, task
    env.close()


def test_reset_observation(env_task):
    env, task = env_task
    obs = env.reset(task)
    assert obs["system_prompt"] == obs["messages"][0]["content"]
    assert obs["messages"][1] == {"role": "user", "content": task["instruction"]}
    names = [t["function"]["name"] for t in obs["tools"]]
    assert names == env.tools
    for t in obs["tools"]:
        assert t["type"] == "function"
        assert t["function"]["parameters"]["type"] == "object"
    mcp = env.tool_schemas("mcp")
    assert [m["name"] for m in mcp] == env.tools and all("inputSchema" in m for m in mcp)
    with pytest.raises(ValueError, match="format"):
        env.tool_schemas("xml")


def test_step_tool_call_and_message(env_task):
    env, task = env_task
    env.reset(task)
    a = task["gold_actions"][0]
    obs, reward, done, info = env.step({"type": "tool_call", "name": a["name"],
                                        "arguments": a["arguments"]})
    assert obs["role"] == "tool" and not obs["isError"] and not done and reward == 0.0
    json.loads(obs["content"])
    assert info["tool_calls"] == 1
    obs, reward, done, info = env.step({"type": "message", "content": "All done."})
    assert obs["role"] == "user" and STOP in obs["content"] and done
    assert reward == 0.0 and info["reward_info"]["db"] is False
    with pytest.raises(RuntimeError, match="episode ended"):
        env.step({"type": "message", "content": "hello?"})


BAD_ACTIONS = [
    {"type": "tool_call", "name": "no_such_tool", "arguments": {}},
    {"type": "tool_call", "name": None, "arguments": {}},
    {"type": "tool_call", "name": "__FIRST__", "arguments": "{not json"},
    {"type": "tool_call", "name": "__FIRST__", "arguments": [1, 2]},
    {"type": "tool_call", "name": "__FIRST__", "arguments": {"zzz": 1}},
    {"type": "tool_call", "name": "__WRITE__", "arguments": "__SQL__"},
    {"type": "tool_call", "name": "__WRITE__", "arguments": "__HUGE__"},
    {"type": "tool_call", "name": "__WRITE__", "arguments": "__WRONG_TYPES__"},
    {"type": "tool_call", "name": "__HIDDEN__", "arguments": {}},
    {"type": "dance"},
    "not an action",
    {"type": "message", "content": 42},
]


@pytest.mark.parametrize("bad", range(len(BAD_ACTIONS)))
def test_bad_actions_are_error_observations_and_change_nothing(env_task, bad):
    env, task = env_task
    env.reset(task)
    action = json.loads(json.dumps(BAD_ACTIONS[bad]))
    write = next(a for a in task["gold_actions"] if env.domain.tools[a["name"]].mode == "write")
    wtool = env.domain.tools[write["name"]]
    if isinstance(action, dict):
        if action.get("name") == "__FIRST__":
            action["name"] = task["gold_actions"][0]["name"]
        if action.get("name") == "__WRITE__":
            action["name"] = write["name"]
        if action.get("name") == "__HIDDEN__":
            hidden = [t for t in env.domain.tools if t not in env.tools]
            assert hidden, "the fixture environment must leave some of the domain's tools out"
            action["name"] = hidden[0]
        strings = [p for p, s in wtool.parameters_schema["properties"].items()
                   if s.get("type") == "string"]
        if action.get("arguments") == "__SQL__":
            assert strings, "the fixture task's write tool must take a string parameter"
            action["arguments"] = {**write["arguments"],
                                   strings[0]: "x'; DROP TABLE users; --"}
        elif action.get("arguments") == "__HUGE__":
            action["arguments"] = {**write["arguments"], (strings or ["x"])[0]: "A" * 100_000}
        elif action.get("arguments") == "__WRONG_TYPES__":
            action["arguments"] = {k: [v] for k, v in write["arguments"].items()}
    before = env.db_hash()
    obs, reward, done, info = env.step(action)
    sql = isinstance(action, dict) and isinstance(action.get("arguments"), dict) and \
        any("DROP TABLE" in str(v) for v in action["arguments"].values())
    if sql and not obs.get("isError"):
        # a SQL-looking string is a legal string value: stored verbatim, never executed
        assert all(env.conn.execute("SELECT count(*) FROM sqlite_master").fetchone())
        return
    assert obs.get("isError") is True, obs
    assert env.db_hash() == before
    assert not done
    # the environment keeps working
    a = task["gold_actions"][0]
    obs, *_ = env.step({"type": "tool_call", "name": a["name"], "arguments": a["arguments"]})
    assert not obs["isError"]


def test_step_before_reset_and_bad_records(pairs):
    env_rec, task = pairs[0]
    env = Environment(env_rec)
    with pytest.raises(RuntimeError, match="reset"):
        env.step({"type": "message", "content": "hi"})
    with pytest.raises(ValueError, match="task"):
        env.reset({"nope": 1})
    with pytest.raises(ValueError, match="belongs to environment"):
        env.reset({**task, "env_id": "other-env"})
    with pytest.raises(ValueError, match="env"):
        Environment({"tools": []})
    with pytest.raises(ValueError, match="not in domain"):
        Environment({**env_rec, "tools": ["no_such_tool"]})
    with pytest.raises(ValueError, match="max_steps"):
        Environment(env_rec, max_steps=0)
    env.close()


def test_snapshot_restore(env_task):
    env, task = env_task
    env.reset(task)
    h0 = env.db_hash()
    snap = env.snapshot()
    for a in task["gold_actions"]:
        env.step({"type": "tool_call", "name": a["name"], "arguments": a["arguments"]})
    assert env.db_hash() == task["expected_db_hash"] != h0
    env.restore(snap)
    assert env.db_hash() == h0
    env.reset(task)
    assert env.db_hash() == task["initial_db_hash"]


def test_scripted_user_reveals_hidden_info():
    task = {"user_profile": {"name": "Ana Lee"}, "known_info": {"email": "ana@x.org"}}
    u = ScriptedUser(task, "hi", {"reason": "ordered by mistake", "order_id": "#W1"})
    reply, done = u.reply("What is the reason for the cancellation?")
    assert "ordered by mistake" in reply and not done and u.revealed == {"reason"}
    reply, done = u.reply("And which order id?")
    assert "#W1" in reply
    reply, done = u.reply("What's your email?")
    assert "ana@x.org" in reply
    reply, done = u.reply("Anything else I can do?")
    assert not done and "anything more" in reply
    reply, done = u.reply("All done, goodbye.")
    assert done and STOP in reply


def test_gold_reaches_full_reward_through_the_runtime(pairs):
    for env_rec, task in pairs:
        env = Environment(env_rec)
        r, info = run_episode(env, GoldAgent(), task)
        assert r == 1.0, (task["task_id"], info)
        env.close()


@pytest.mark.parametrize("kind", NOISE_TYPES)
def test_gold_with_retries_survives_every_noise_type(pairs, kind):
    injected = 0
    for env_rec, task in pairs:
        env = Environment(env_rec, noise=NoiseConfig([kind], 1.0, seed=3))
        r, info = run_episode(env, GoldAgent(), task)
        assert r == 1.0, (kind, task["task_id"], info)
        if kind in ("transient", "malformed", "truncated", "paginated", "renamed", "silent_noop",
                    "inconsistent", "stale"):
            injected += sum(env.tool_call.injected.values())
        elif kind == "user_turns":
            injected += env.noisy_user_turns
        else:
            injected += env.user.first_message != task["instruction"]
        env.close()
    assert injected > 0, f"{kind} never fired"


def test_all_noise_together_and_determinism(pairs):
    env_rec, task = pairs[1]
    texts = []
    for _ in range(2):
        env = Environment(env_rec, noise=NoiseConfig.all(0.8, seed=5))
        obs = env.reset(task)
        texts.append(obs["messages"][1]["content"])
        r, _ = run_episode(env, GoldAgent(), task)
        assert r == 1.0
        env.close()
    assert texts[0] == texts[1] != task["instruction"]


def test_ambiguity_noise_keeps_task_solvable(pairs):
    """A known value moved into held-back info is revealed when the agent asks for it."""
    env_rec, task = next(((e, t) for e, t in pairs if t["known_info"]), (None, None))
    assert task is not None, "the fixture must hold a task whose user knows some values"
    env = Environment(env_rec, noise=NoiseConfig(["ambiguity"], 1.0, seed=0))
    obs = env.reset(task)
    k, v = next(iter(task["known_info"].items()))
    assert str(v) not in obs["messages"][1]["content"]
    reply, *_ = env.step({"type": "message", "content": f"What is your {k.replace('_', ' ')}?"})
    assert str(v) in reply["content"]
    env.close()


def test_noise_never_truncates_or_pages_a_write(pairs):
    """Re-running a write is not a safe recovery: truncation and pagination are READ-only."""
    from longcat.envs.noise import TRUNCATION_MARK

    n_writes = 0
    for env_rec, task in pairs:
        env = Environment(env_rec, noise=NoiseConfig(["truncated", "paginated"], 1.0, seed=0))
        obs = env.reset(task)
        reads = {t["function"]["name"] for t in obs["tools"]
                 if env.domain.tools[t["function"]["name"]].mode == "read"}
        for t in obs["tools"]:
            has_cursor = "cursor" in t["function"]["parameters"]["properties"]
            assert has_cursor == (t["function"]["name"] in reads)
        for a in task["gold_actions"]:
            o, *_ = env.step({"type": "tool_call", "name": a["name"], "arguments": a["arguments"]})
            if env.domain.tools[a["name"]].mode == "write":
                n_writes += 1
                assert not o["content"].endswith(TRUNCATION_MARK)
                assert "next_cursor" not in o["content"]
        env.close()
    assert n_writes > 0


@pytest.mark.parametrize("kind", ["transient", "silent_noop", "inconsistent", "malformed",
                                  "truncated", "renamed"])
def test_noise_lowers_the_naive_agent_not_the_careful_one(pairs, kind):
    """Per noise type: the careful grounded agent keeps every task it solves clean; the naive
    one loses some it solves clean (the full table: ``longcat envs noise-table``)."""
    from longcat.envs.agents import CarefulAgent, NaiveAgent

    lost_careful, lost_naive, solved_naive = 0, 0, 0
    for env_rec, task in pairs:
        clean = Environment(env_rec)
        noisy = Environment(env_rec, noise=NoiseConfig([kind], 1.0, seed=3))
        if run_episode(clean, CarefulAgent(), task)[0] == 1.0:
            lost_careful += run_episode(noisy, CarefulAgent(), task)[0] < 1.0
        if run_episode(clean, NaiveAgent(), task)[0] == 1.0:
            solved_naive += 1
            lost_naive += run_episode(noisy, NaiveAgent(), task)[0] < 1.0
        clean.close()
        noisy.close()
    assert lost_careful == 0
    assert solved_naive > 0 and lost_naive > 0, (kind, solved_naive)


def test_gold_agent_is_not_fooled_by_a_stale_check(pairs):
    """The replaying agent re-reads after a write; a stale first answer must not make it
    repeat the write."""
    for env_rec, task in pairs:
        env = Environment(env_rec, noise=NoiseConfig(["stale", "inconsistent"], 1.0, seed=1))
        assert run_episode(env, GoldAgent(), task)[0] == 1.0, task["task_id"]
        env.close()
