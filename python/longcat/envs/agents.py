"""Reference agents for sanity checks of environments and tasks.

* ``GoldAgent`` replays the task's gold actions, recovering from tool noise like a careful agent
  (retries retryable errors and truncated reads), then tells the user the rubric values: it must
  score 100% on verified tasks, with or without noise.
* ``DoNothingAgent`` answers without acting: it must score 0% (self-verification guarantees it).
* ``RandomAgent`` calls random tools of the environment with schema-valid random arguments
  (values it has seen in earlier outputs half of the time): it should score near 0%.
* ``WriteOnlyAgent`` replays only the gold WRITE actions (no lookup, no authentication) and
  reports nothing: the shortcut a goal-level task must defeat.
* ``CarefulAgent`` / ``NaiveAgent`` (``grounded``) follow the gold plan with only what the
  conversation gave them (asking, retrying, re-reading -- or not): the pair that measures noise.
* ``OpenAIAgent`` drives a model behind any OpenAI-compatible endpoint with the environment's
  tools (function calling); several tool calls in one reply are executed one per step.

An agent follows ``protocols.Agent``: ``begin(task, observation)``, then ``act(observation) ->
action``; ``run_episode(env, agent, task)`` drives one episode and returns (reward, info), and
with ``log=path`` appends the episode to a JSONL log (``episodes.write_episode``).
"""
from __future__ import annotations

import json
import random
from typing import Any, Mapping

from .grounded import CarefulAgent, NaiveAgent
from .noise import TRUNCATION_MARK, stable_seed
from .runtime import Environment

__all__ = ["GoldAgent", "CarefulAgent", "NaiveAgent", "DoNothingAgent", "RandomAgent", "WriteOnlyAgent",
           "OpenAIAgent",
           "run_episode", "AGENTS"]


class GoldAgent:
    """The careful reference agent: replays the gold actions; retries a call whose observation
    is a retryable error or a truncated result; with ``verify`` (default) re-reads the record
    after each write (through the environment's ``get`` tool of its entity; again until two
    answers agree when the change looks missing, since a read may be stale) and repeats the
    write when its change is missing (silent no-op); then reports the rubric values and ends.
    ``verify=False`` is the naive variant that trusts every success message."""

    VERIFY_KINDS = ("create", "update_fields", "set_status", "cancel", "delete", "adjust")

    def __init__(self, max_retries: int = 6, verify: bool = True):
        self.max_retries = max_retries
        self.verify = verify

    def begin(self, task: Mapping, observation: Mapping) -> None:
        self.queue = [dict(a) for a in task["gold_actions"]]
        self.rubrics = [r["info"] for r in task.get("rubrics", [])]
        self.refusal = (task.get("refusal") or {}).get("reason")
        self.retries = 0
        self.last: dict | None = None
        self.reported = False
        self.checking: dict | None = None     # {"write", "get", "expect", "result", "again"}
        self.domain = None
        if self.verify:
            from .spec import load_domain

            self.domain = load_domain(task["domain"])
            self.available = [t["function"]["name"] for t in observation.get("tools", [])]

    def _check_call(self, write: Mapping, text: str) -> dict | None:
        """The read that shows whether ``write`` took effect, with what to expect."""
        from .noise import extract_json, normalize_keys
        from .runtime import get_tool_for

        t = self.domain.tools.get(write["name"]) if self.domain else None
        if t is None or t.mode != "write" or t.kind not in self.VERIFY_KINDS or not t.entity:
            return None
        get = get_tool_for(self.domain, self.available, t.entity)
        if get is None:
            return None
        pk = self.domain.entities[t.entity].primary_key
        try:
            payload = normalize_keys(extract_json(text))
        except ValueError:
            payload = None
        key = write["arguments"].get(t.options.get("key_param")) if t.kind != "create" else \
            (payload or {}).get(pk) if isinstance(payload, dict) else None
        if key is None:
            return None
        gkp = self.domain.tools[get].options.get("key_param", pk)
        expect = "gone" if t.kind == "delete" else "row"
        return {"write": dict(write), "get": {"type": "tool_call", "name": get,
                                              "arguments": {gkp: key}},
                "expect": expect, "result": payload if isinstance(payload, dict) else None,
                "again": 0}

    def _took_effect(self, obs: Mapping) -> bool:
        from .noise import extract_json, normalize_keys

        c = self.checking
        if c["expect"] == "gone":
            return bool(obs.get("isError"))
        if obs.get("isError"):
            return False
        try:
            now = normalize_keys(extract_json(obs.get("content", "")))
        except ValueError:
            return True   # unreadable: trust the write rather than repeat it
        want = c["result"] or {}
        return all(now.get(k) == v for k, v in want.items() if isinstance(now, dict))

    def act(self, observation: Mapping) -> dict:
        from .noise import TRUNCATION_MARK

        if self.last is not None and observation.get("role") == "tool":
            text = observation.get("content", "")
            retry = (observation.get("isError") and "retry" in text.lower()) or \
                text.endswith(TRUNCATION_MARK)
            if retry and self.retries < self.max_retries:
                self.retries += 1
                return self.last
            self.retries = 0
            if self.checking is not None and self.last is self.checking["get"]:
                c = self.checking
                text = observation.get("content", "")
                if not self._took_effect(observation) and c.get("prev") != text and \
                        c.get("reads", 0) < 4:
                    # one answer is not enough (a stale or inconsistent read): read again
                    # until two answers agree
                    c["prev"], c["reads"] = text, c.get("reads", 0) + 1
                    return self.last
                if not self._took_effect(observation) and c["again"] < 2:
                    c["again"] += 1               # the change is missing: do it again
                    c["prev"] = None
                    self.last = {"type": "tool_call", "name": c["write"]["name"],
                                 "arguments": c["write"]["arguments"]}
                    self.queue.insert(0, None)    # then check once more
                    return self.last
                self.checking = None
            elif self.verify and not observation.get("isError") and self.last.get("name"):
                check = self._check_call(self.last, text) if self.checking is None else None
                if self.checking is not None:     # a repeated write: check it again
                    check = self.checking
                if check is not None:
                    self.checking = check
                    self.last = check["get"]
                    if self.queue and self.queue[0] is None:
                        self.queue.pop(0)
                    return self.last
            self.last = None
        while self.queue and self.queue[0] is None:
            self.queue.pop(0)
        if self.queue:
            a = self.queue.pop(0)
            self.last = {"type": "tool_call", "name": a["name"], "arguments": a["arguments"]}
            return self.last
        refused = f" One part I cannot do: {self.refusal}." if getattr(self, "refusal", None) \
            else ""
        if not self.reported and self.rubrics:
            self.reported = True
            return {"type": "message",
                    "content": "Done. Here is what you asked for: "
                               + "; ".join(str(v) for v in self.rubrics) + "." + refused}
        return {"type": "message", "content": "Everything you asked for is done." + refused}


class WriteOnlyAgent(GoldAgent):
    """A naive executor: the writes the user asked for (``requested_actions``: the gold writes,
    plus the forbidden one of a refusal task), with GoldAgent's retries, no lookup, no
    authentication, no policy check; then a closing message."""

    def begin(self, task: Mapping, observation: Mapping) -> None:
        from .spec import load_domain

        super().begin(task, observation)
        tools = load_domain(task["domain"]).tools
        asked = task.get("requested_actions") or task["gold_actions"]
        self.queue = [dict(a) for a in asked if a["name"] in tools
                      and tools[a["name"]].mode == "write"]
        self.rubrics = []


class OpenAIAgent:
    """A model behind an OpenAI-compatible ``/v1/chat/completions`` endpoint (``longcat
    serve``, vLLM, ...) acting with the environment's tools. It keeps the conversation in
    OpenAI's format: the environment's system prompt and user turns, its own replies (with
    ``tool_calls``) and one ``tool`` message per call, matched by ``tool_call_id``."""

    def __init__(self, base_url: str, model: str = "default", *, temperature: float = 0.0,
                 api_key: str | None = None, max_tokens: int | None = 1024):
        from .chat_api import completions_url

        completions_url(base_url)
        self.base_url, self.model, self.temperature = base_url, model, temperature
        self.api_key, self.max_tokens = api_key, max_tokens

    def begin(self, task: Mapping, observation: Mapping) -> None:
        self.messages = [{"role": m["role"], "content": m["content"]}
                         for m in observation["messages"]]
        self.tools = list(observation["tools"])
        self.pending: list[dict] = []
        self.started = False

    def _observe(self, observation: Mapping) -> None:
        role = observation.get("role")
        if role == "tool":
            self.messages.append({"role": "tool", "content": observation.get("content", ""),
                                  "tool_call_id": observation.get("tool_call_id", "")})
        else:  # the user's reply, or the environment's error about a malformed action
            self.messages.append({"role": "user", "content": observation.get("content", "")})

    def act(self, observation: Mapping) -> dict:
        from .chat_api import chat_completion

        if self.started:
            self._observe(observation)
        self.started = True
        if self.pending:
            return self.pending.pop(0)
        msg = chat_completion(self.base_url, self.messages, model=self.model, tools=self.tools,
                              temperature=self.temperature, api_key=self.api_key,
                              max_tokens=self.max_tokens)
        calls = [tc for tc in (msg.get("tool_calls") or []) if isinstance(tc, dict)]
        if not calls:
            content = msg.get("content") or ""
            self.messages.append({"role": "assistant", "content": content})
            return {"type": "message", "content": content}
        for i, tc in enumerate(calls):
            tc.setdefault("id", f"call_{len(self.messages)}_{i}")
        self.messages.append({"role": "assistant", "content": msg.get("content"),
                              "tool_calls": calls})
        actions = []
        for tc in calls:
            fn = tc.get("function") or {}
            raw = fn.get("arguments")
            try:
                args = json.loads(raw) if isinstance(raw, str) else (raw or {})
            except ValueError:
                args = raw   # the environment answers malformed arguments with an error
            actions.append({"type": "tool_call", "id": tc["id"], "name": fn.get("name"),
                            "arguments": args})
        self.pending = actions[1:]
        return actions[0]


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


AGENTS = {"gold": GoldAgent, "careful": CarefulAgent, "naive": NaiveAgent,
          "nothing": DoNothingAgent,
          "random": RandomAgent, "write-only": WriteOnlyAgent}


def run_episode(env: Environment, agent, task: Mapping, max_steps: int | None = None,
                log: str | None = None) -> tuple[float, dict]:
    """Runs one episode to the end; returns (reward, final info). ``log``: a JSONL file the
    episode is appended to (``episodes.write_episode``)."""
    obs = env.reset(task)
    agent.begin(task, obs)
    last = {"role": "user", "content": obs["messages"][-1]["content"]}
    limit = max_steps or env.max_steps
    reward, info = 0.0, {"truncated": True}
    for _ in range(limit):
        obs_, r, done, i = env.step(agent.act(last))
        last = obs_
        if done:
            reward, info = r, i
            break
    if log is not None:
        from .episodes import write_episode

        write_episode(log, env.episode())
    return reward, info
