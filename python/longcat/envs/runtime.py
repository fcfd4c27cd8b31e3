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
to the later ones and tool noise to tool results.
"""
from __future__ import annotations

import io
import json
import pickle
from collections import OrderedDict
from typing import Any, Callable, Mapping

from .noise import CURSOR_ARG, NoiseConfig, ToolNoise, noisy_instruction, noisy_user_turn
from .tasks import _label, communicated
from .users import STOP, ScriptedUser

__all__ = ["Environment", "Suspended", "ScriptedUser", "openai_tool_schema", "mcp_tool_schema",
           "STOP"]

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

    # -- hibernation: the whole state as a compact value ---------------------------------------
    def suspend(self) -> "Suspended":
        """The environment's whole state now as an immutable value: the database pages that
        differ from the record's initial database, and the episode (task, user simulator,
        messages, counters, tool-noise state) pickled with the shared objects (record, task,
        domain, noise, system prompt) by reference. ``resume`` of it on any ``Environment`` of
        the same record and noise continues exactly here; its cost is that of the changed pages
        and the conversation, not of the actions that led here. The environment service uses it
        to hibernate idle environments. Raises when part of the state cannot be pickled (a
        custom user simulator holding a client, say)."""
        if self.conn.in_transaction:
            raise RuntimeError("suspend() inside an open transaction")
        image = self.conn.serialize()
        base = self._base_image()
        size = int.from_bytes(image[16:18], "big") if len(image) >= 100 else 4096
        if size == 1:
            size = 65536   # the header's encoding of 64 KiB pages
        pages = {}   # offset -> bytes: the changed span of each page that differs
        for off in range(0, len(image), size):
            page, old = image[off:off + size], base[off:off + size]
            if page != old:
                lo, hi = _changed_span(page, old)
                pages[off + lo] = page[lo:hi]
        state = {k: v for k, v in self.__dict__.items() if k not in _STRUCTURAL}
        state["_runtime_stats"] = self.runtime.stats
        return Suspended(self.env, self.task, self.noise, base, len(image), pages,
                         _dump_episode(self, state))

    def resume(self, state: "Suspended") -> None:
        """Replaces this environment's whole state with ``state`` (from ``suspend``)."""
        if not isinstance(state, Suspended):
            raise ValueError(f"state: expected a Suspended (from Environment.suspend), got "
                             f"{type(state).__name__}")
        if state.record is not self.env and state.record != self.env:
            raise ValueError(f"state: suspended from environment {state.record.get('env_id')!r}, "
                             f"this is {self.env.get('env_id')!r}")
        if state.noise != self.noise:
            raise ValueError(f"state: suspended with noise {state.noise!r}, this environment has "
                             f"{self.noise!r}")
        image = bytearray(state.base[:state.length])
        image.extend(bytes(state.length - len(image)))
        for off, page in state.pages.items():
            image[off:off + len(page)] = page
        self.conn.deserialize(image)
        self.conn.execute("PRAGMA foreign_keys = ON")
        episode = _load_episode(self, state.task, state.episode)
        for k in [k for k in self.__dict__ if k not in _STRUCTURAL]:
            del self.__dict__[k]   # nothing of the previous episode survives
        self.runtime.stats = episode.pop("_runtime_stats")
        self.__dict__.update(episode)

    def clone(self) -> "Environment":
        """A new environment of the same record, noise and user (not reset yet), built from
        this one in well under a millisecond: the initial database is copied from the record's
        image instead of being created statement by statement (~10 ms). The environment service
        uses it to add live environments of a record it already hosts."""
        import sqlite3

        from .toolgen import ToolRuntime

        new = object.__new__(type(self))
        new.__dict__.update({k: v for k, v in self.__dict__.items()
                             if k in _STRUCTURAL and k not in ("conn", "runtime")})
        new.conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        new.conn.deserialize(self._base_image())
        new.conn.execute("PRAGMA foreign_keys = ON")
        new.runtime = ToolRuntime(new.domain, new.conn)
        new.task = None
        new.done = True
        return new

    def _base_image(self) -> bytes:
        """The serialized initial database of this record (shared by every environment of the
        process with the same template and patch): what ``suspend`` diffs against."""
        import sqlite3

        from .datagen import apply_patch, template_db
        from .db import restore

        key = self.__dict__.get("_base_key")
        if key is None:
            key = self._base_key = (self.domain.name, id(self.domain), self.env["template_seed"],
                                    self.rows, json.dumps(self.env.get("patch", ()),
                                                          sort_keys=True, default=str))
        image = _BASE_IMAGES.get(key)
        if image is None:
            scratch = sqlite3.connect(":memory:", isolation_level=None)
            try:
                restore(scratch, template_db(self.domain, self.env["template_seed"], self.rows))
                apply_patch(scratch, self.domain, self.env.get("patch", ()))
                image = scratch.serialize()
            finally:
                scratch.close()
            if len(_BASE_IMAGES) >= 256:   # suspended states keep their own base alive
                _BASE_IMAGES.popitem(last=False)
            _BASE_IMAGES[key] = image
        else:
            _BASE_IMAGES.move_to_end(key)
        return image

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

        text = self.__dict__.get("_system_text")   # a pure function of the domain: built once
        if text is None:
            text = self._system_text = (
                f"You are a customer-service agent for the {self.domain.name.replace('_', ' ')} "
                f"domain. Use the tools to look up and change records, ask the user for any "
                f"detail you need, and follow the policy below.\n\n" + domain_policy(self.domain))
        return text

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
        if self.noise is not None and (self.noise.tool_types or self.noise.state_types):
            self.tool_call = ToolNoise(self._call_dict, self.noise, env_key=key,
                                       is_read=self._is_read_tool,
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

    def _is_read_tool(self, name: str) -> bool:
        # a bound method, not a lambda, so that suspend() can pickle the tool noise state
        t = self.domain.tools.get(name) if isinstance(name, str) else None
        return t is None or t.mode == "read"

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


# attributes an Environment gets from its constructor: everything else is episode state
_STRUCTURAL = frozenset({"env", "domain", "noise", "user_factory", "max_steps", "rows", "tools",
                         "_tool_set", "conn", "runtime", "_system_text", "_base_key"})
_BASE_IMAGES: "OrderedDict[tuple, bytes]" = OrderedDict()


class Suspended:
    """An environment's state from ``Environment.suspend`` (treat as opaque and immutable):
    the record, task and noise it belongs to, the shared initial database image, the byte
    spans that differ from it (offset -> bytes), and the pickled episode."""

    __slots__ = ("record", "task", "noise", "base", "length", "pages", "episode")

    def __init__(self, record, task, noise, base: bytes, length: int, pages: dict, episode: bytes):
        self.record, self.task, self.noise = record, task, noise
        self.base, self.length, self.pages, self.episode = base, length, pages, episode

    @property
    def own_bytes(self) -> int:
        """Bytes held by this state alone (the base image is shared)."""
        return len(self.episode) + sum(len(p) for p in self.pages.values())


def _changed_span(new: bytes, old: bytes) -> tuple[int, int]:
    """[lo, hi) of ``new`` outside of which it equals ``old`` (binary searches on slices: a
    row change touches a few hundred bytes of a 4 KiB page, the header's counter four)."""
    n = len(new)
    if len(old) != n:
        return 0, n
    a, b = 0, n            # common prefix length in [a, b]
    while a < b:
        m = (a + b + 1) // 2
        if new[:m] == old[:m]:
            a = m
        else:
            b = m - 1
    lo = a
    a, b = 0, n - lo       # common suffix length in [a, b]
    while a < b:
        m = (a + b + 1) // 2
        if new[n - m:] == old[n - m:]:
            a = m
        else:
            b = m - 1
    return lo, n - a


def _shared(env: Environment, task) -> list:
    """The objects an episode shares with its environment, in a fixed order: they are pickled
    as references, never copied (None, which pickles as itself, by a stand-in)."""
    return [object() if o is None else o for o in
            (env, task, env.env, env.domain, env.noise, env.system_prompt(), env.user_factory)]


def _dump_episode(env: Environment, state: dict) -> bytes:
    # The pickler's memo is seeded with the shared objects, so they are written as memo
    # references at C speed (``persistent_id`` would be a Python call per pickled object).
    buf = io.BytesIO()
    p = pickle.Pickler(buf, protocol=5)
    p.memo = {id(o): (i, o) for i, o in enumerate(_shared(env, env.task))}
    p.dump(state)
    return buf.getvalue()


class _Shared(pickle.Unpickler):
    def __init__(self, data: bytes, shared: list):
        super().__init__(io.BytesIO(data))
        self.shared = shared

    def persistent_load(self, pid):
        return self.shared[pid]


# Setting an Unpickler's memo from a dict does not work (CPython 3.11 drops it), so resume
# prefixes the pickle with opcodes that fill memo slots 0..6 with the shared objects:
# BININT1 i, BINPERSID (persistent_load(i)), MEMOIZE, POP; the pickle's own MEMOIZEs follow.
_MEMO_PREFIX = b"\x80\x05" + b"".join(b"K" + bytes([i]) + b"Q\x94" + b"0" for i in range(7))


def _load_episode(env: Environment, task, data: bytes) -> dict:
    return _Shared(_MEMO_PREFIX + data[2:], _shared(env, task)).load()


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
