"""Goal-level tasks: no tool names in what the user says, authentication the evaluator
enforces, partial refusals a naive executor fails, fused chains; the careful reference agent
(gold) still solves every task and self-verification holds."""
import pytest

from longcat.envs import tasks as T
from longcat.envs.agents import DoNothingAgent, GoldAgent, WriteOnlyAgent, run_episode
from longcat.envs.growth import DomainContext, build_environment
from longcat.envs.runtime import Environment


@pytest.fixture(scope="module")
def tasks():
    old = T.REFUSAL_RATE
    T.REFUSAL_RATE = 1.0            # every authenticated task gets a forbidden extra request
    try:
        out = []
        for dom in ("banking", "retail", "food_delivery"):
            ctx = DomainContext(dom)
            uses, stats = {}, T.SynthStats()
            for i in range(6):
                env = build_environment(ctx, 1, i, uses)
                if env["verified"]:
                    t = T.synthesize_task(ctx, env, 0, stats)
                    if t is not None:
                        out.append((env, t, ctx.domain))
    finally:
        T.REFUSAL_RATE = old
    assert sum(bool(t["auth"]) for _, t, _ in out) >= 3
    assert sum(bool(t["refusal"]) for _, t, _ in out) >= 1
    assert sum(len(t["chains"]) > 1 for _, t, _ in out) >= 1
    return out


def test_instructions_never_name_tools(tasks):
    for _, t, d in tasks:
        for name in d.tools:
            if "_" in name:      # (a humanized name may be plain English: "open account")
                assert name not in t["instruction"], (name, t["instruction"])


def test_ladder_gold_naive_nothing(tasks):
    for env_rec, t, _ in tasks:
        env = Environment(env_rec)
        r, info = run_episode(env, GoldAgent(), t)
        assert r == 1.0, (t["task_id"], info)
        assert run_episode(env, DoNothingAgent(), t)[0] == 0.0
        r, info = run_episode(env, WriteOnlyAgent(), t)
        if t["auth"] or t["refusal"]:
            assert r == 0.0, t["task_id"]   # skips authentication / obeys a forbidden request
        env.close()


def test_skipping_authentication_fails(tasks):
    for env_rec, t, d in tasks:
        if not t["auth"]:
            continue
        ids = set(t["auth"]["identifiers"])
        kept = [a for a in t["gold_actions"]
                if not (d.tools[a["name"]].entity == t["auth"]["entity"]
                        and d.tools[a["name"]].mode == "read"
                        and any(str(v) in ids for v in a["arguments"].values()))]
        no_auth = dict(t, gold_actions=kept)
        env = Environment(env_rec)
        r, info = run_episode(env, GoldAgent(), no_auth)
        assert r == 0.0 and info["reward_info"]["db"] and not info["reward_info"]["auth"]
        env.close()


def test_refusal_is_a_policy_break_the_tools_allow(tasks):
    for env_rec, t, d in tasks:
        if not t["refusal"]:
            continue
        env = Environment(env_rec)
        env.reset(t)
        for a in t["gold_actions"]:
            env.step({"type": "tool_call", "name": a["name"], "arguments": a["arguments"]})
        assert env.db_hash() == t["expected_db_hash"]
        bad = t["refusal"]["action"]
        obs, *_ = env.step({"type": "tool_call", "name": bad["name"], "arguments": bad["arguments"]})
        assert not obs["isError"] and env.db_hash() != t["expected_db_hash"]
        assert "belongs to another" in t["refusal"]["reason"]
        env.close()


def test_gold_has_reads_and_verification(tasks):
    for _, t, d in tasks:
        modes = [d.tools[a["name"]].mode for a in t["gold_actions"]]
        if t["auth"]:
            assert modes[0] == "read"
            first = t["gold_actions"][0]
            assert d.tools[first["name"]].entity == t["auth"]["entity"]
            assert any(str(v) in t["auth"]["identifiers"] for v in first["arguments"].values())
        assert "write" in modes
        assert all(t["verification"].values())


@pytest.mark.parametrize("name", ["retail", "airline", "banking", "utilities"])
def test_policy_is_derived_from_the_spec(name):
    from longcat.envs.policy import domain_policy
    from longcat.envs.spec import load_domain

    d = load_domain(name)
    text = domain_policy(d)
    assert len(text.split()) >= 300
    for t in d.tools.values():
        if t.mode == "write":
            assert f"`{t.name}`" in text
            for c in t.pre:
                if c.message and "not found" not in c.message:
                    assert c.message in text
    if T._person_entity(d) is not None:
        assert "## Authentication" in text and "another" in text


def test_system_prompt_carries_the_policy(tasks):
    from longcat.envs.policy import domain_policy

    env_rec, t, d = tasks[0]
    env = Environment(env_rec)
    obs = env.reset(t)
    assert domain_policy(d) in obs["system_prompt"]
    env.close()
