"""The runtime an agent (or the RL loop) talks to: ``Environment.reset(task)`` / ``step(action)``.

An environment is rebuilt from its record (``longcat envs build`` writes them): the domain spec,
the template database (regenerated from its seed, cached per process) plus the recorded repairs,
and the environment's subset of tools. Episodes are tau2-bench-like:

* ``reset(task) -> observation``: ``{"system_prompt", "tools" (OpenAI function-calling schemas),
  "messages": [system, first user message]}``;
* ``step(action) -> (observation, reward, done, info)``, where ``action`` is
  ``{"type": "tool_call", "name": ..., "arguments": {...}, "id": optional}`` or
  ``{"type": "message", "content": ...}``. A tool call answers ``{"role": "tool", "name",
  "content", "isError", "tool_call_id"}``; a message is answered by the user simulator
  (``{"role": "user", "content"}``; ``users.ScriptedUser`` unless ``user=`` says otherwise).
* The episode ends only when the user ends it (after an explicit completion or refusal by the
  agent, see ``users.is_completion``, or ``###STOP###``) or after ``max_steps`` steps. The reward
  (given once, at the end) is 1.0 when the final database equals the expected state
  (whole-database sha256) and every rubric value was told to the user, else 0.0;
  ``info["reward_info"]`` has the parts and ``info["partial_credit"]`` the partial credit
  (``evaluate``).
* ``episode()`` returns the whole episode as an ``episodes.Episode`` (OpenAI chat messages with
  ``tool_call_id``s, reward, hashes), which ``episodes.write_episode`` logs as JSONL and
  ``episodes.replay_episode`` replays to the same final database hash.

Bad actions (unknown type, unknown or hidden tool, malformed arguments, SQL-looking strings,
huge payloads) become error observations; the database is unchanged by a failed call.

``noise`` (a ``NoiseConfig``) adds instruction noise to the first user message, user-turn noise
to the later ones, tool noise to tool results, silent no-op writes and inconsistent / stale
reads.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Mapping

from .noise import CURSOR_ARG, NoiseConfig, ToolNoise, noisy_instruction, noisy_user_turn
from .tasks import _label, communicated
from .users import STOP, ScriptedUser

__all__ = ["Environment", "ScriptedUser", "openai_tool_schema", "mcp_tool_schema", "STOP"]

MAX_MESSAGE_CHARS = 20000


def openai_tool_schema(tool) -> dict:
    """OpenAI function-calling form of a ``spec.Tool`` (``schemas.openai_tool``)."""
    from .schemas import openai_tool

    return openai_tool(tool)


def mcp_tool_schema(tool) -> dict:
    """MCP ``Tool`` form (``inputSchema``, annotations) of a ``spec.Tool``."""
    from .schemas import mcp_tool

    return mcp_tool(tool)


class Environment:
    """One executable environment (see the module docstring).

    ``env`` is a record of ``build_environment`` (or ``longcat envs build``'s
    environments.jsonl); ``domain`` a ``spec.Domain`` or name (default: the record's); ``user``
    a factory ``(task, first_message, hidden) -> UserSimulator`` (default ``ScriptedUser``; an
    LLM user: ``users.LLMUser.factory(url)``)."""

    def __init__(self, env: Mapping, *, domain=None, noise: NoiseConfig | None = None,
                 max_steps: int = 60, rows: int | None = None,
                 user: Callable[[Mapping, str, Mapping], Any] | None = None):
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
        if user is not None and not callable(user):
            raise ValueError("user: expected a factory (task, first_message, hidden) -> "
                             f"UserSimulator, got {type(user).__name__}")
        self.env = env
        self.noise = noise
        self.user_factory = user or ScriptedUser
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

    def _restore_and_close(self, snap) -> None:
        self.restore(snap)
        snap.close()

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
        """The agent's instructions: its role and the domain's policy (``policy.domain_policy``)."""
        from .policy import domain_policy

        return (f"You are a customer-service agent for the {self.domain.name.replace('_', ' ')} "
                f"domain. Use the tools to look up and change records, ask the user for any "
                f"detail you need, and follow the policy below.\n\n"
                + domain_policy(self.domain))

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
            protected = protected_values(task)
            amb = {k: (str(v), f"the {_label(k)} on my account")
                   for k, v in task.get("known_info", {}).items()}
            extra = task.get("user_profile", {}).get("facts", [])
            text, moved = noisy_instruction(text, self.noise, key=key, protected=protected,
                                            ambiguous=amb, extra_details=extra)
            hidden.update(moved)
        self.user = self.user_factory(task, text, hidden)
        self._protected = protected_values(task)
        self.tool_call = self._call_dict
        if self.noise is not None and (self.noise.tool_types or self.noise.state_types
                                       or self.noise.read_types):
            specs = self.domain.tools
            self.tool_call = ToolNoise(self._call_dict, self.noise, env_key=key,
                                       is_read=lambda n: n not in specs or specs[n].mode == "read",
                                       undo=(self.snapshot, self._restore_and_close),
                                       verifiable=self.verifiable_write)
        self.final_reward, self.final_info = 0.0, {}
        self.noisy_user_turns = 0
        self.agent_messages: list[str] = []
        self.calls: list[tuple[str, Any, bool]] = []   # (name, arguments, isError)
        self.initial_db_hash = self.db_hash()
        self.steps = 0
        self.tool_calls = 0
        self.tool_errors = 0
        self.done = False
        messages = [{"role": "system", "content": self.system_prompt()},
                    {"role": "user", "content": text}]
        self.messages: list[dict] = [dict(m) for m in messages]   # the episode log
        tools = self.tool_schemas("openai")
        if self.noise is not None and "paginated" in self.noise.tool_types:
            # paged results are continued with a cursor: advertise it on the READ tools
            for t in tools:
                if self.domain.tools[t["function"]["name"]].mode == "read":
                    params = t["function"]["parameters"]
                    params["properties"] = {**params.get("properties", {}), CURSOR_ARG: {
                        "type": "string", "description": "next_cursor of a paged result"}}
        return {"system_prompt": messages[0]["content"], "tools": tools, "messages": messages}

    VERIFIABLE_KINDS = ("create", "update_fields", "set_status", "cancel", "delete", "adjust")

    def verifiable_write(self, name: str) -> bool:
        """A write whose effect an agent can check by re-reading: a generated write kind whose
        entity has a ``get`` tool in this environment (state noise picks only these)."""
        t = self.domain.tools.get(name) if isinstance(name, str) else None
        return t is not None and name in self._tool_set and t.mode == "write" and \
            t.kind in self.VERIFIABLE_KINDS and t.entity is not None and get_tool_for(
                self.domain, self.tools, t.entity) is not None

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
            call_id = action.get("id")
            if not isinstance(call_id, str) or not call_id:
                call_id = f"call_{self.tool_calls}"
            if not isinstance(name, str):
                res = {"content": [{"type": "text", "text": "Error: tool_call needs a string "
                                    f"'name', got {type(name).__name__}"}], "isError": True}
            else:
                res = self.tool_call(name, args)
            if res.get("isError"):
                self.tool_errors += 1
            text = "".join(c.get("text", "") for c in res.get("content", [])) \
                if isinstance(res.get("content"), list) else str(res.get("content"))
            obs = {"role": "tool", "name": name, "content": text,
                   "isError": bool(res.get("isError")), "tool_call_id": call_id}
            self.calls.append((name, args, obs["isError"]))
            self.messages.append({"role": "assistant", "content": None, "tool_calls": [
                {"id": call_id, "type": "function", "function": {
                    "name": str(name), "arguments": _arguments_json(args)}}]})
            self.messages.append({"role": "tool", "tool_call_id": call_id, "name": str(name),
                                  "content": text})
        elif kind == "message":
            content = action.get("content")
            if not isinstance(content, str):
                obs = {"role": "error", "content": "Error: message needs a string 'content', got "
                       f"{type(content).__name__}", "isError": True}
            else:
                content = content[:MAX_MESSAGE_CHARS]
                self.agent_messages.append(content)
                reply, user_done = self.user.reply(content)
                if self.noise is not None and self.noise.user_turn_types:
                    clean = reply
                    reply = noisy_user_turn(reply, self.noise, key=self.task.get("task_id", ""),
                                            turn=self.steps, protected=self._protected)
                    self.noisy_user_turns += reply != clean
                obs = {"role": "user", "content": reply}
                self.messages += [{"role": "assistant", "content": content},
                                  {"role": "user", "content": reply}]
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
            info["partial_credit"] = parts["partial_credit"]
            self.final_reward, self.final_info = reward, dict(info)
            if not user_done:
                info["truncated"] = True
        return obs, reward, done, info

    def evaluate(self) -> tuple[float, dict]:
        """Reward of the current state and conversation for the current task: 1.0 when the whole
        database matches and every rubric was told, else 0.0; the parts also give partial credit:

        * ``tables``        -- fraction of the task's affected tables at their expected hash;
        * ``write_recall``  -- fraction of the gold WRITE actions (name and arguments) the agent
                               made successfully;
        * ``rubrics_frac``  -- fraction of rubric values told to the user (1.0 with none);
        * ``auth``          -- ``authenticated_before_writes`` (part of the 0/1 reward);
        * ``partial_credit`` -- the mean of the three (1.0 exactly when the reward is 1.0 is not
          guaranteed: a wrong extra write can leave every part at 1.0 while the hash differs,
          so the 0/1 reward stays the training signal and this one a diagnostic)."""
        from .db import table_hashes

        task = self.task
        db_ok = self.db_hash() == task["expected_db_hash"]
        rub = [communicated(r["info"], self.agent_messages) for r in task.get("rubrics", [])]
        auth_ok = self.authenticated_before_writes()
        reward = 1.0 if db_ok and all(rub) and auth_ok else 0.0
        want = task.get("expected_table_hashes", {}) or {}
        now = table_hashes(self.conn, self.domain, list(want)) if want else {}
        tables = (sum(now.get(t) == h for t, h in want.items()) / len(want)) if want else \
            float(db_ok)
        gold_writes = [(a["name"], _arguments_json(a["arguments"]))
                       for a in task.get("gold_actions", [])
                       if a["name"] in self.domain.tools
                       and self.domain.tools[a["name"]].mode == "write"]
        made = [(n, _arguments_json(a)) for n, a, err in getattr(self, "calls", []) if not err]
        hits = 0
        for g in gold_writes:
            if g in made:
                made.remove(g)
                hits += 1
        recall = hits / len(gold_writes) if gold_writes else 1.0
        rub_frac = sum(rub) / len(rub) if rub else 1.0
        partial = (tables + recall + rub_frac) / 3
        return reward, {"db": db_ok, "rubrics": rub, "auth": auth_ok, "tables": tables,
                        "write_recall": recall, "rubrics_frac": rub_frac,
                        "partial_credit": partial}

    def authenticated_before_writes(self) -> bool:
        """The policy's authentication rule, for tasks that carry ``auth``: before its first
        successful write the agent made a successful READ of the user's own record (a tool of
        the person entity) with one of the identifiers the user holds (email, phone, ...)."""
        auth = (self.task or {}).get("auth")
        if not auth:
            return True
        ids = {str(v) for v in auth.get("identifiers", ())}
        for name, args, err in getattr(self, "calls", []):
            t = self.domain.tools.get(name) if isinstance(name, str) else None
            if t is None or err:
                continue
            if t.mode == "write":
                return False
            if t.entity == auth["entity"] and isinstance(args, Mapping) and \
                    any(str(v) in ids for v in args.values()):
                return True
        return True   # no successful write at all: nothing was done unauthenticated

    def episode(self):
        """The current (or just finished) episode as an ``episodes.Episode``."""
        from .episodes import Episode

        if self.task is None:
            raise RuntimeError("episode() before reset(task)")
        done = self.done
        return Episode(
            task_id=self.task.get("task_id", ""), env_id=self.env.get("env_id", ""),
            domain=self.domain.name, messages=[dict(m) for m in self.messages],
            reward=getattr(self, "final_reward", 0.0) if done else None,
            info=getattr(self, "final_info", {}) if done else {},
            initial_db_hash=self.initial_db_hash, final_db_hash=self.db_hash(),
            noise=None if self.noise is None else {"types": list(self.noise.types),
                                                   "intensity": self.noise.intensity,
                                                   "seed": self.noise.seed})

    def close(self) -> None:
        self.conn.close()


def _arguments_json(args: Any) -> str:
    """Arguments as canonical JSON text (what OpenAI's ``function.arguments`` carries)."""
    try:
        return json.dumps(args, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return json.dumps(str(args))


def protected_values(task: Mapping) -> list[str]:
    """Exact values the agent must copy from the user (never touched by noise)."""
    out = [str(v) for v in list(task.get("known_info", {}).values())
           + list(task.get("hidden_info", {}).values())]
    for a in task.get("gold_actions", []):
        out += [str(v) for v in a["arguments"].values()]
    out += [str(r["info"]) for r in task.get("rubrics", [])]
    prof = task.get("user_profile", {})
    out += [str(prof[k]) for k in ("name", "first_name", "last_name", "email") if prof.get(k)]
    return out


def get_tool_for(domain, tools, entity: str) -> str | None:
    """The name of a ``get`` tool of ``entity`` among ``tools``, or None."""
    for n in tools:
        t = domain.tools.get(n)
        if t is not None and t.kind == "get" and t.entity == entity:
            return n
    return None
