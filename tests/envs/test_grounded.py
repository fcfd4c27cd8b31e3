"""The grounded reference agents (longcat.envs.grounded): they act only on what the
conversation gave them. The careful one solves every kept task (a self-verification check)
and keeps solving it under every noise type; the naive one loses tasks under each type (the
measured table: ``longcat envs noise-table``)."""
import pytest

from longcat.envs import tasks as T
from longcat.envs.agents import CarefulAgent, NaiveAgent, run_episode
from longcat.envs.growth import DomainContext, build_environment
from longcat.envs.noise import NOISE_TYPES, NoiseConfig
from longcat.envs.runtime import Environment


@pytest.fixture(scope="module")
def tasks():
    out = []
    for dom in ("retail", "banking", "telecom", "real_estate"):
        ctx = DomainContext(dom)
        uses, stats = {}, T.SynthStats()
        for i in range(6):
            env = build_environment(ctx, 2, i, uses)
            if env["verified"]:
                t = T.synthesize_task(ctx, env, 0, stats)
                if t is not None:
                    out.append((env, t))
    assert len(out) >= 15
    return out


def _score(env_rec, task, agent, noise=None):
    env = Environment(env_rec, noise=noise, max_steps=150)
    try:
        return run_episode(env, agent, task)[0]
    finally:
        env.close()


def test_kept_tasks_are_solvable_from_the_conversation(tasks):
    for env_rec, t in tasks:
        assert t["verification"]["solvable_from_conversation"]
        assert _score(env_rec, t, CarefulAgent()) == 1.0, t["task_id"]


def test_a_value_nobody_gives_makes_a_task_unsolvable(tasks):
    """Drop what the user knows from the task: the careful agent can no longer ask for it,
    so the check fails (the same check drops such tasks in synthesis)."""
    env_rec, t = next((e, t) for e, t in tasks if t["known_info"])
    k, v = next(iter(t["known_info"].items()))
    broken = dict(t, known_info={}, hidden_info={},
                  instruction=t["instruction"].replace(str(v), "something"))
    assert not T.solvable_from_conversation(env_rec, broken)


# paginated is left out: paged lists hide a needed record from the naive agent on only ~2% of
# tasks (most lists a task reads have one or two records), too few for this small sample
@pytest.mark.parametrize("kind", [k for k in NOISE_TYPES if k != "paginated"])
def test_each_noise_lowers_naive_never_careful(tasks, kind):
    noise = NoiseConfig([kind], 1.0, seed=0)
    lost = solved = 0
    for env_rec, t in tasks:
        assert _score(env_rec, t, CarefulAgent(), noise) == 1.0, (kind, t["task_id"])
        if _score(env_rec, t, NaiveAgent()) == 1.0:
            solved += 1
            lost += _score(env_rec, t, NaiveAgent(), noise) < 1.0
    assert solved > 0 and lost > 0, (kind, solved)


def test_careful_agent_under_all_noise_at_once(tasks):
    for env_rec, t in tasks[:8]:
        assert _score(env_rec, t, CarefulAgent(), NoiseConfig.all(0.5, seed=4)) == 1.0, \
            t["task_id"]
