"""Database instantiation, verified environment building and reverse task synthesis on the real
domains (retail, airline): environments are executable, tasks pass their own self-verification
and the reference agents score as they must (gold 100%, do-nothing 0%, random ~0%)."""
import json

import pytest

from longcat.envs.agents import DoNothingAgent, GoldAgent, RandomAgent, run_episode
from longcat.envs.datagen import ValueGen, generate_rows, hint_for
from longcat.envs.growth import DomainContext, build_environment
from longcat.envs.runtime import Environment
from longcat.envs.tasks import SynthStats, communicated, synthesize_task, to_tau2

DOMAINS = ["retail", "airline"]
N_ENVS = 5


@pytest.fixture(scope="module", params=DOMAINS)
def built(request):
    ctx = DomainContext(request.param)
    uses, stats = {}, SynthStats()
    envs, tasks = [], []
    for i in range(N_ENVS):
        env = build_environment(ctx, 0, i, uses)
        envs.append(env)
        if env["verified"]:
            t = synthesize_task(ctx, env, 0, stats)
            if t is not None:
                tasks.append((env, t))
    return ctx, envs, tasks, stats


def test_generate_rows_keys_and_references():
    from longcat.envs.spec import load_domain

    d = load_domain("retail")
    data = generate_rows(d, seed=5, rows=6)
    for en, rows in data.items():
        e = d.entities[en]
        pks = [r[e.primary_key] for r in rows]
        assert len(pks) == len(set(pks)), en
        for fn, f in e.fields.items():
            vals = [r[fn] for r in rows if r[fn] is not None]
            if f.unique:
                assert len(vals) == len(set(vals)), (en, fn)
            if f.ref:
                targets = {r[f.ref[1]] for r in data[f.ref[0]]}
                assert set(vals) <= targets, (en, fn)
            if f.type == "enum":
                assert set(vals) <= set(f.values), (en, fn)
            if not f.nullable:
                assert all(r[fn] is not None for r in rows), (en, fn)
    assert generate_rows(d, seed=5, rows=6) == data
    assert generate_rows(d, seed=6, rows=6) != data


def test_generated_rows_do_not_depend_on_the_clock():
    """Faker's date/time providers read the wall clock; the generator must not."""
    import time
    from longcat.envs.spec import load_domain

    doms = [load_domain(n) for n in DOMAINS]
    a = [generate_rows(d, 3) for d in doms]
    time.sleep(1.1)
    assert [generate_rows(d, 3) for d in doms] == a


def test_value_gen_hints():
    vg = ValueGen(1)
    assert "@" in vg.value("string", name="contact_email")
    assert hint_for("updated_at") == "datetime"
    assert hint_for("updated") is None and hint_for("ship_date") == "date"
    assert vg.value("integer", minimum=3, maximum=3) == 3
    assert vg.value("string", enum=["a"]) == "a"
    p = vg.persona()
    assert {"name", "email", "style", "facts"} <= set(p)


def test_environments_are_verified_and_executable(built):
    ctx, envs, _, _ = built
    verified = [e for e in envs if e["verified"]]
    assert len(verified) >= N_ENVS - 1
    for e in verified:
        assert len(e["tools"]) >= 20
        assert set(e["tools"]) <= set(ctx.domain.tools)
        assert e["chain_calls"][0] is not None
        # every chain call replays on the environment's initial state
        env = Environment(e)
        for calls in e["chain_calls"]:
            if calls is None:
                continue
            env._restore_initial()
            for name, args in calls:
                res = env.runtime.call(name, args)
                assert not res.is_error, (name, args, res.text)
        env.close()


def test_build_is_deterministic():
    a = build_environment(DomainContext("airline"), 7, 3, {})
    b = build_environment(DomainContext("airline"), 7, 3, {})
    assert json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)
    c = build_environment(DomainContext("airline"), 8, 3, {})
    assert c["tools"] != a["tools"] or c["patch"] != a["patch"]


def test_tasks_and_self_verification(built):
    ctx, envs, tasks, stats = built
    assert len(tasks) >= N_ENVS - 2
    assert stats.kept == len(tasks)
    assert stats.candidates == stats.kept + sum(stats.dropped.values())
    for env, t in tasks:
        assert t["expected_db_hash"] != t["initial_db_hash"]
        assert t["affected_tables"] and set(t["expected_table_hashes"]) == set(t["affected_tables"])
        assert any(ctx.domain.tools[a["name"]].mode == "write" for a in t["gold_actions"])
        gold_values = [v for a in t["gold_actions"] for v in a["arguments"].values()]
        for k, v in t["hidden_info"].items():
            assert v in gold_values
        assert t["user_profile"]["name"] in t["instruction"]
        tau = to_tau2(t)
        assert tau["evaluation_criteria"]["actions"][0]["name"] == t["gold_actions"][0]["name"]
        assert tau["user_scenario"]["instructions"]["domain"] == ctx.domain.name


def test_reference_agents(built):
    _, _, tasks, _ = built
    scores = {"gold": [], "nothing": [], "random": []}
    for env_rec, t in tasks:
        env = Environment(env_rec)
        scores["gold"].append(run_episode(env, GoldAgent(), t)[0])
        scores["nothing"].append(run_episode(env, DoNothingAgent(), t)[0])
        scores["random"].append(run_episode(env, RandomAgent(seed=1), t)[0])
        env.close()
    assert all(r == 1.0 for r in scores["gold"])
    assert all(r == 0.0 for r in scores["nothing"])
    assert sum(scores["random"]) / len(scores["random"]) <= 0.2


def test_perturbed_gold_fails(built):
    """The checks synthesis ran, redone through the runtime: a missing write and a changed
    argument both lose the reward."""
    ctx, _, tasks, _ = built
    env_rec, t = tasks[0]
    env = Environment(env_rec)
    writes = [i for i, a in enumerate(t["gold_actions"])
              if ctx.domain.tools[a["name"]].mode == "write"]

    def play(actions):
        env.reset(t)
        for a in actions:
            env.step({"type": "tool_call", "name": a["name"], "arguments": a["arguments"]})
        msg = "Done: " + "; ".join(str(r["info"]) for r in t["rubrics"])
        return env.step({"type": "message", "content": msg})[1]

    assert play(t["gold_actions"]) == 1.0
    missing = [a for i, a in enumerate(t["gold_actions"]) if i != writes[-1]]
    assert play(missing) == 0.0
    # a different value for the last write's first free (or key) argument
    last = t["gold_actions"][writes[-1]]
    from longcat.envs.tasks import _perturb_value
    import random
    tool = ctx.domain.tools[last["name"]]
    changed = None
    ctx.open_state(env_rec["template_seed"], env_rec["patch"])
    for pn, v in last["arguments"].items():
        nv = _perturb_value(ctx, tool, pn, v, random.Random(0))
        if nv is not None:
            changed = {**last, "arguments": {**last["arguments"], pn: nv}}
            break
    assert changed is not None
    bad = list(t["gold_actions"])
    bad[writes[-1]] = changed
    assert play(bad) == 0.0
    env.close()


def test_dropped_tasks_are_counted(built):
    ctx, envs, _, _ = built
    chains = [(e, [[n, a] for n, a in e["chain_calls"][0] if ctx.domain.tools[n].mode == "read"])
              for e in envs if e["verified"]]
    env, reads = next(((e, r) for e, r in chains if r), (None, None))
    assert reads, "the fixture must hold a verified environment whose seed chain has a read"
    fake = dict(env, chain_calls=[reads])
    stats = SynthStats()
    assert synthesize_task(ctx, fake, 0, stats) is None
    assert stats.dropped == {"no state change": 1} and stats.kept == 0
    stats2 = SynthStats()
    assert synthesize_task(ctx, dict(env, chain_calls=[None]), 0, stats2) is None
    assert stats2.dropped == {"chain not executable": 1}


def test_communicated():
    assert communicated(12.5, ["The total is $12.50."])
    assert communicated(1200, ["It is 1,200 points"])
    assert communicated("Pending", ["status: pending"])
    assert not communicated(35, ["You have 36 points"])
    assert not communicated("gold", ["silver"])
