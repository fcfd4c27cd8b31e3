"""Typed EnvRecord / Task: round trips with the dict records, mapping access for code written
for dicts, the runtime accepting either form, and clear errors."""
import json

import pytest

from longcat.envs.agents import GoldAgent, run_episode
from longcat.envs.growth import DomainContext, build_environment
from longcat.envs.records import EnvRecord, Task
from longcat.envs.runtime import Environment
from longcat.envs.tasks import SynthStats, synthesize_task


@pytest.fixture(scope="module")
def pair():
    ctx = DomainContext("retail")
    for i in range(4):
        env = build_environment(ctx, 9, i, {})
        t = synthesize_task(ctx, env, 0, SynthStats()) if env["verified"] else None
        if t is not None:
            return json.loads(json.dumps(env)), json.loads(json.dumps(t))
    pytest.fail("no task")


def test_round_trip_and_mapping_access(pair):
    env, task = pair
    E, T = EnvRecord.from_dict(env), Task.from_dict(task)
    assert E.to_dict() == env and T.to_dict() == task
    assert dict(T) == task and set(T) == set(task) and len(T) == len(task)
    assert T["gold_actions"] == task["gold_actions"] and T.get("nope", 3) == 3
    assert T.instruction == task["instruction"] and E.tools == env["tools"]
    assert Task.from_dict(T) is T


def test_runtime_accepts_typed_records(pair):
    env, task = pair
    e = Environment(EnvRecord.from_dict(env))
    assert run_episode(e, GoldAgent(), Task.from_dict(task))[0] == 1.0
    e.close()


def test_missing_keys_are_named():
    with pytest.raises(ValueError, match=r"Task: missing keys \['env_id'"):
        Task.from_dict({"task_id": "x"})
    with pytest.raises(ValueError, match="EnvRecord: expected a mapping"):
        EnvRecord.from_dict([1, 2])
