"""Reference agents for sanity checks of environments and tasks.

* ``GoldAgent`` replays the task's gold actions, recovering from tool noise like a careful agent
  (retries retryable errors and truncated reads), then tells the user the rubric values: it must
  score 100% on verified tasks, with or without noise.
* ``DoNothingAgent`` answers without acting: it must score 0% (self-verification guarantees it).
* ``RandomAgent`` calls random tools of the environment with schema-valid random arguments
  (values it has seen in earlier outputs half of the time): it should score near 0%.

An agent is a callable ``act(observation) -> action`` with ``begin(task, observation)``;
``run_episode(env, agent, task)`` drives one episode and returns (reward, info).
"""
from __future__ import annotations

import json
import random
from typing import Any, Mapping

from .noise import TRUNCATION_MARK, stable_seed
from .runtime import Environment

__all__ = ["GoldAgent", "DoNothingAgent", "RandomAgent", "run_episode", "AGENTS"]


class GoldAgent:
    """Replays the gold actions; retries a call whose observation is a retryable error or a
    truncated result; then reports the rubric values and ends."""

    def __init__(self, max_retries: int = 6):
        self.max_retries = max_retries

    def begin(self, task: Mapping, observation: Mapping) -> None:
        self.queue = [dict(a) for a in task["gold_actions"]]
        self.rubrics = [r["info"] for r in task.get("rubrics", [])]
        self.retries = 0
        self.last: dict | None = None
        self.reported = False

    def act(self, observation: Mapping) -> dict:
        if self.last is not None and observation.get("role") == "tool":
            text = observation.get("content", "")
            retry = (observation.get("isError") and "retry" in text.lower()) or \
                text.endswith(TRUNCATION_MARK)
            if retry and self.retries < self.max_retries:
                self.retries += 1
                return self.last
            self.retries = 0
            self.last = None
        if self.queue:
            a = self.queue.pop(0)
            self.last = {"type": "tool_call", "name": a["name"], "arguments": a["arguments"]}
            return self.last
        if not self.reported and self.rubrics:
            self.reported = True
            return {"type": "message",
                    "content": "Done. Here is what you asked for: "
                               + "; ".join(str(v) for v in self.rubrics) + "."}
        return {"type": "message", "content": "Everything you asked for is done."}


class DoNothingAgent:
    def begin(self, task: Mapping, observation: Mapping) -> None:
        pass

    def act(self, observation: Mapping) -> dict:
        return {"type": "message", "content": "I'm sorry, I can't help with that."}


class RandomAgent:
    """Random tool calls (``n_calls`` of them), then a closing message."""

    def __init__(self, seed: int = 0, n_calls: int = 8):
        self.seed = seed
        self.n_calls = n_calls

    def begin(self, task: Mapping, observation: Mapping) -> None:
        self.rng = random.Random(stable_seed("random-agent", self.seed, task.get("task_id")))
        self.tools = [t["function"] for t in observation["tools"]]
        self.seen: list = []
        self.left = self.n_calls

    def _value(self, schema: Mapping) -> Any:
        rng = self.rng
        t = schema.get("type")
        if isinstance(t, list):
            t = next((x for x in t if x != "null"), "string")
        enum = [v for v in schema.get("enum", []) if v is not None]
        if enum:
            return rng.choice(enum)
        pool = [v for v in self.seen if isinstance(v, {"integer": int, "number": (int, float),
                                                       "string": str}.get(t, str))
                and not isinstance(v, bool)]
        if pool and rng.random() < 0.5:
            return rng.choice(pool)
        if t == "integer":
            return rng.randint(int(schema.get("minimum", 1)), int(schema.get("maximum", 20)))
        if t == "number":
            return round(rng.uniform(float(schema.get("minimum", 1)), 100.0), 2)
        if t == "boolean":
            return rng.random() < 0.5
        return rng.choice(["abc", "test", "1", "2025-01-01", "pending", "X-000001"])

    def act(self, observation: Mapping) -> dict:
        if observation.get("role") == "tool" and not observation.get("isError"):
            try:
                data = json.loads(observation.get("content", ""))
            except ValueError:
                data = None
            rows = data if isinstance(data, list) else [data]
            for r in rows[:5]:
                if isinstance(r, dict):
                    self.seen += [v for v in r.values() if isinstance(v, (str, int, float))]
            self.seen = self.seen[-200:]
        if self.left <= 0 or not self.tools:
            return {"type": "message", "content": "I did what I could."}
        self.left -= 1
        fn = self.rng.choice(self.tools)
        props = fn["parameters"].get("properties", {})
        req = fn["parameters"].get("required", [])
        args = {k: self._value(props[k]) for k in req}
        return {"type": "tool_call", "name": fn["name"], "arguments": args}


AGENTS = {"gold": GoldAgent, "nothing": DoNothingAgent, "random": RandomAgent}


def run_episode(env: Environment, agent, task: Mapping, max_steps: int | None = None) -> tuple[float, dict]:
    """Runs one episode to the end; returns (reward, final info)."""
    obs = env.reset(task)
    agent.begin(task, obs)
    last = {"role": "user", "content": obs["messages"][-1]["content"]}
    limit = max_steps or env.max_steps
    for _ in range(limit):
        obs_, reward, done, info = env.step(agent.act(last))
        last = obs_
        if done:
            return reward, info
    return 0.0, {"truncated": True}
