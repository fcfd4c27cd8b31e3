"""The runtime an agent (or the RL loop) talks to: ``Environment.reset(task)`` / ``step(action)``.

An environment is rebuilt from its record (``longcat envs build`` writes them): the domain spec,
the template database (regenerated from its seed, cached per process) plus the recorded repairs,
and the environment's subset of tools. Episodes are tau2-bench-like:

* ``reset(task) -> observation``: ``{"system_prompt", "tools" (OpenAI function-calling schemas),
  "messages": [system, first user message]}``;
* ``step(action) -> (observation, reward, done, info)``, where ``action`` is
  ``{"type": "tool_call", "name": ..., "arguments": {...}}`` or ``{"type": "message",
  "content": ...}``. A tool call answers ``{"role": "tool", "name", "content", "isError"}``; a
  message is answered by the scripted user (``{"role": "user", "content"}``).
* The episode ends when the user is satisfied (the agent's message asks nothing), when the
  agent or the user writes ``###STOP###``, or after ``max_steps`` steps. The reward (given once,
  at the end) is 1.0 when the final database equals the expected state (whole-database sha256)
  and every rubric value was told to the user, else 0.0; ``info["reward_info"]`` has the parts.

Bad actions (unknown type, unknown or hidden tool, malformed arguments, SQL-looking strings,
huge payloads) become error observations; the database is unchanged by a failed call.

The scripted user answers from the task: it reveals a held-back value when the agent's message
names it (its parameter name or words), states what it knows when asked who it is, and
otherwise says it has nothing to add. ``noise`` (a ``NoiseConfig``) adds instruction noise to
the first user message and tool noise to tool results.
"""
from __future__ import annotations

from typing import Any, Mapping

from .noise import CURSOR_ARG, NoiseConfig, ToolNoise, noisy_instruction
from .tasks import _label, communicated

__all__ = ["Environment", "ScriptedUser", "openai_tool_schema", "mcp_tool_schema", "STOP"]

STOP = "###STOP###"
MAX_MESSAGE_CHARS = 20000


def openai_tool_schema(tool) -> dict:
    """OpenAI function-calling form of a ``spec.Tool`` (``schemas.openai_tool``)."""
    from .schemas import openai_tool

    return openai_tool(tool)


def mcp_tool_schema(tool) -> dict:
    """MCP ``Tool`` form (``inputSchema``, annotations) of a ``spec.Tool``."""
    from .schemas import mcp_tool

    return mcp_tool(tool)


_GENERIC = {"name", "type", "status", "date", "time", "number", "code", "kind", "amount", "at"}


def _words(name: str) -> list[str]:
    base = name.lower()
    forms = {base, base.replace("_", " "), _label(name).lower()}
    if base.endswith("_id"):
        forms.add(base[:-3].replace("_", " ") + " id")
        forms.add(base[:-3].replace("_", " ") + " number")
    parts = [w for w in base.split("_") if w not in ("id",)]
    # "first_name" also answers to "first name", but not to a bare "name" (too generic)
    if len(parts) > 1 and parts[-1] not in _GENERIC:
        forms.add(parts[-1])
    return sorted(f for f in forms if len(f) >= 3)


class ScriptedUser:
    """A deterministic user that answers from the task's profile and held-back information."""

    def __init__(self, task: Mapping, first_message: str, hidden: Mapping[str, Any]):
        self.task = task
        self.first_message = first_message
        self.hidden = dict(hidden)
        self.revealed: set[str] = set()
        self.profile = task.get("user_profile", {})

    def reply(self, message: str) -> tuple[str, bool]:
        """The user's answer to an agent message and whether the user ends the conversation."""
        low = message.lower()
        if STOP.lower() in low:
            return STOP, True
        answers = []
        for k, v in self.hidden.items():
            if any(w in low for w in _words(k)):
                answers.append(f"My {_label(k)} is {v}.")
                self.revealed.add(k)
        known = self.task.get("known_info", {})
        for k, v in known.items():
            if any(w in low for w in _words(k)) and "?" in message:
                answers.append(f"My {_label(k)} is {v}.")
        if ("your name" in low or "who am i speaking" in low) and self.profile.get("name"):
            answers.append(f"I'm {self.profile['name']}.")
        if answers:
            return " ".join(answers), False
        if "?" in message:
            return ("I don't have anything more to add; please go ahead with what I asked.",
                    False)
        return f"Thanks, that's all I needed. {STOP}", True


class Environment:
    """One executable environment (see the module docstring).

    ``env`` is a record of ``build_environment`` (or ``longcat envs build``'s
    environments.jsonl); ``domain`` a ``spec.Domain`` or name (default: the record's)."""

    def __init__(self, env: Mapping, *, domain=None, noise: NoiseConfig | None = None,
                 max_steps: int = 60, rows: int | None = None):
        from .db import connect
        from .spec import load_domain
        from .toolgen import ToolRuntime

        if not isinstance(env, Mapping) or "domain" not in env or "tools" not in env:
            raise ValueError("env: expected an environment record with 'domain' and 'tools' "
                             f"(from build_environment / environments.jsonl), got {type(env).__name__}")
        if domain is None:
            domain = env["domain"]
        self.domain = load_domain(domain) if isinstance(domain, str) else domain
        if self.domain.name != env["domain"]:
            raise ValueError(f"domain: the record is of domain {env['domain']!r}, got "
                             f"{self.domain.name!r}")
        unknown = [t for t in env["tools"] if t not in self.domain.tools]
        if unknown:
            raise ValueError(f"env: tools {unknown} are not in domain {self.domain.name!r}")
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps: expected an integer >= 1, got {max_steps!r}")
        self.env = env
        self.noise = noise
        self.max_steps = max_steps
        self.rows = rows if rows is not None else env.get("rows", 6)
        self.tools = list(env["tools"])
        self._tool_set = set(self.tools)
        self.conn = connect(self.domain)
        self.runtime = ToolRuntime(self.domain, self.conn)
        self.task: Mapping | None = None
        self.done = True
        self._restore_initial()

    # -- state ---------------------------------------------------------------------------------
    def _restore_initial(self) -> None:
        from .datagen import apply_patch, template_db
        from .db import restore

        restore(self.conn, template_db(self.domain, self.env["template_seed"], self.rows))
        apply_patch(self.conn, self.domain, self.env.get("patch", ()))

    def snapshot(self):
        """A copy of the database now (restore it with :meth:`restore`)."""
        from .db import snapshot

        return snapshot(self.conn)

    def restore(self, snap) -> None:
        from .db import restore

        restore(self.conn, snap)

    def db_hash(self) -> str:
        from .db import db_hash

        return db_hash(self.conn, self.domain)

    def tool_schemas(self, format: str = "openai") -> list[dict]:
        if format not in ("openai", "mcp"):
            raise ValueError(f"format: expected 'openai' or 'mcp', got {format!r}")
        f = openai_tool_schema if format == "openai" else mcp_tool_schema
        return [f(self.domain.tools[t]) for t in self.tools]

    # -- episode -------------------------------------------------------------------------------
    def system_prompt(self) -> str:
        policy = getattr(self.domain, "policy", "") or ""
        return (f"You are a customer-service agent for the {self.domain.name.replace('_', ' ')} "
                f"domain. {self.domain.description.strip()} {policy.strip()} Use the tools to "
                f"look up and change records; ask the user for any detail you need; tell the user "
                f"the information they ask for. When everything is done, say so without asking "
                f"a question.").replace("  ", " ")

    def reset(self, task: Mapping) -> dict:
        if not isinstance(task, Mapping) or "instruction" not in task:
            raise ValueError("task: expected a task record with 'instruction' (from "
                             f"synthesize_task / tasks.jsonl), got {type(task).__name__}")
        if task.get("env_id") not in (None, self.env.get("env_id")):
            raise ValueError(f"task: belongs to environment {task.get('env_id')!r}, this is "
                             f"{self.env.get('env_id')!r}")
        self.task = task
        self._restore_initial()
        hidden = dict(task.get("hidden_info", {}))
        text = task["instruction"]
        key = task.get("task_id", "")
        if self.noise is not None and self.noise.instruction_types:
            protected = [str(v) for v in list(task.get("known_info", {}).values())
                         + list(hidden.values())]
            for a in task.get("gold_actions", []):
                protected += [str(v) for v in a["arguments"].values()]
            protected += [str(r["info"]) for r in task.get("rubrics", [])]
            prof = task.get("user_profile", {})
            protected += [str(prof[k]) for k in ("name", "first_name", "last_name", "email")
                          if prof.get(k)]
            amb = {k: (str(v), f"the {_label(k)} on my account")
                   for k, v in task.get("known_info", {}).items()}
            extra = task.get("user_profile", {}).get("facts", [])
            text, moved = noisy_instruction(text, self.noise, key=key, protected=protected,
                                            ambiguous=amb, extra_details=extra)
            hidden.update(moved)
        self.user = ScriptedUser(task, text, hidden)
        self.tool_call = self._call_dict
        if self.noise is not None and self.noise.tool_types:
            specs = self.domain.tools
            self.tool_call = ToolNoise(self._call_dict, self.noise, env_key=key,
                                       is_read=lambda n: n not in specs or specs[n].mode == "read")
        self.agent_messages: list[str] = []
        self.steps = 0
        self.tool_calls = 0
        self.tool_errors = 0
        self.done = False
        messages = [{"role": "system", "content": self.system_prompt()},
                    {"role": "user", "content": text}]
        tools = self.tool_schemas("openai")
        if self.noise is not None and "paginated" in self.noise.tool_types:
            # paged results are continued with a cursor: advertise it on the READ tools
            for t in tools:
                if self.domain.tools[t["function"]["name"]].mode == "read":
                    params = t["function"]["parameters"]
                    params["properties"] = {**params.get("properties", {}), CURSOR_ARG: {
                        "type": "string", "description": "next_cursor of a paged result"}}
        return {"system_prompt": messages[0]["content"], "tools": tools, "messages": messages}

    def _call_dict(self, name: str, arguments) -> dict:
        if name not in self._tool_set:
            return {"content": [{"type": "text", "text":
                                 f"Error: unknown tool {str(name)[:80]!r}; this environment has: "
                                 f"{', '.join(self.tools)}"}], "isError": True}
        return self.runtime.call(name, arguments).to_dict()

    def step(self, action: Any) -> tuple[dict, float, bool, dict]:
        if self.task is None:
            raise RuntimeError("step() before reset(task)")
        if self.done:
            raise RuntimeError("step() after the episode ended; call reset(task)")
        self.steps += 1
        obs: dict
        user_done = False
        kind = action.get("type") if isinstance(action, Mapping) else None
        if kind == "tool_call":
            name = action.get("name")
            args = action.get("arguments", {})
            self.tool_calls += 1
            if not isinstance(name, str):
                res = {"content": [{"type": "text", "text": "Error: tool_call needs a string "
                                    f"'name', got {type(name).__name__}"}], "isError": True}
            else:
                res = self.tool_call(name, args)
            if res.get("isError"):
                self.tool_errors += 1
            text = "".join(c.get("text", "") for c in res.get("content", [])) \
                if isinstance(res.get("content"), list) else str(res.get("content"))
            obs = {"role": "tool", "name": name, "content": text, "isError": bool(res.get("isError"))}
        elif kind == "message":
            content = action.get("content")
            if not isinstance(content, str):
                obs = {"role": "error", "content": "Error: message needs a string 'content', got "
                       f"{type(content).__name__}", "isError": True}
            else:
                content = content[:MAX_MESSAGE_CHARS]
                self.agent_messages.append(content)
                reply, user_done = self.user.reply(content)
                obs = {"role": "user", "content": reply}
        else:
            obs = {"role": "error", "isError": True,
                   "content": "Error: action must be {'type': 'tool_call', 'name', 'arguments'} "
                              f"or {{'type': 'message', 'content'}}, got {str(action)[:200]}"}
        done = user_done or self.steps >= self.max_steps
        reward, info = 0.0, {"steps": self.steps, "tool_calls": self.tool_calls,
                             "tool_errors": self.tool_errors}
        if done:
            self.done = True
            reward, parts = self.evaluate()
            info["reward_info"] = parts
            if not user_done:
                info["truncated"] = True
        return obs, reward, done, info

    def evaluate(self) -> tuple[float, dict]:
        """Reward of the current state and conversation for the current task."""
        task = self.task
        db_ok = self.db_hash() == task["expected_db_hash"]
        rub = [communicated(r["info"], self.agent_messages) for r in task.get("rubrics", [])]
        reward = 1.0 if db_ok and all(rub) else 0.0
        return reward, {"db": db_ok, "rubrics": rub}

    def close(self) -> None:
        self.conn.close()
