"""``EnvHost``: the environments of one worker (a local process or a Ray actor).

Only the most recently used ``live`` environments hold a real ``Environment`` (a SQLite
database and the scripted user); the rest hibernate as a *suspended state*
(``Environment.suspend``: the database bytes that differ from the record's initial database and
the pickled episode, a few KB) plus the actions committed after it, and wake up transparently:
a spare ``Environment`` of the same record resumes the state (O(changed bytes), not O(actions))
and replays the few actions after it. A reset is a shared suspended state: the state after a
reset is a pure function of (record, task, noise), so it is computed once per worker and every
environment reset to it refers to the same value (as the first observation is cached too, a
reset after the first one costs no live environment at all).

Environments whose factory has no ``suspend`` / ``resume`` (or whose state cannot be pickled)
hibernate as their action log instead and wake by reset + replay. Either way the state a step
sees is a pure function of (record, task, noise, committed actions), the function a sequential
replay computes; that is what lets a crashed worker's environments be rebuilt elsewhere from the
logs the service keeps (lazily: each on its first use, from the shared reset state).

``handle(msg)`` takes one request tuple and returns ``("ok", value)`` or ``("err", kind,
message)``; ``kind`` is ``"bad_request"`` (the caller's mistake), ``"tool_raised"`` (a step
raised; the state stays at the last committed step), ``"env_raised"`` (reset raised) or
``"internal"``. Replies may share structure with the host's caches: the transports serialize
them, and in-process callers must not mutate them.
Requests (``h`` is a handle, an int):

  ("open", h, rec_key, rec|None, task_key, task|None, noise, code_tools, log): the record and
      task objects travel with the first open that uses their key on this worker; ``log`` (None
      or a list of actions) restores an environment moved from a crashed worker
  ("reset", h) -> observation          ("step", h, action) -> (obs, reward, done, info)
  ("close", h)                         ("hash", h) -> the database's sha256
  ("batch", [request, ...]) -> [reply, ...]
  ("stats",) -> {"handles", "live", "suspended", "suspended_bytes", "objects", "rss_bytes",
                 "pss_bytes", "pid", "cpus"}
"""
from __future__ import annotations

import importlib
import os
from collections import Counter, OrderedDict
from typing import Any, Callable

__all__ = ["EnvHost", "load_factory", "DEFAULT_FACTORY", "rss_bytes", "pss_bytes"]

DEFAULT_FACTORY = "longcat.envs.runtime:Environment"


def load_factory(path: str) -> Callable:
    """``"module:attr"`` -> the callable ``factory(record, noise=...) -> Environment``."""
    if not isinstance(path, str) or path.count(":") != 1:
        raise ValueError(f"env_factory: expected 'module:callable', got {path!r}")
    mod, attr = path.split(":")
    return getattr(importlib.import_module(mod), attr)


def rss_bytes(pid: int | str = "self") -> int:
    """Resident memory of a process (Linux /proc; 0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class _Env:
    """One hosted environment: its keys, noise, committed state and (when awake) live object.
    The committed state is ``snap`` (a suspended state, or None: the reset itself) followed by
    the actions of ``log``; ``log`` is None before the first reset."""

    __slots__ = ("rec", "task", "noise", "code_tools", "log", "snap", "live", "code_calls")

    def __init__(self, rec, task, noise, code_tools, log):
        self.rec, self.task, self.noise, self.code_tools = rec, task, noise, code_tools
        self.log: list | None = log
        self.snap = None
        self.live = None
        self.code_calls = 0


class EnvHost:
    def __init__(self, factory: str = DEFAULT_FACTORY, live: int = 256, sandbox_limits=None,
                 allow_unsandboxed: bool = False):
        if not isinstance(live, int) or live < 1:
            raise ValueError(f"live: expected an integer >= 1, got {live!r}")
        self.factory = load_factory(factory)
        self.live_cap = live
        self.sandbox_limits = sandbox_limits
        self.allow_unsandboxed = allow_unsandboxed
        self.objects: dict[str, Any] = {}          # record / task key -> object
        self.refs: Counter = Counter()             # key -> open environments using it
        self.envs: dict[int, _Env] = {}
        self.awake: OrderedDict[int, None] = OrderedDict()   # LRU of handles holding a live env
        self.spare: dict[tuple, list] = {}         # (record key, noise) -> idle Environments
        self.n_spare = 0                           # at most max(4, live // 4) of them
        # (record, task, noise) -> (reset observation, suspended state after the reset or
        # None): pure functions of the three, so a reset after the first needs no live
        # environment at all, and a wake after a reset resumes the shared state
        self.first_obs: OrderedDict[tuple, tuple] = OrderedDict()

    # -- live objects ----------------------------------------------------------------------------
    def _take(self, e: _Env):
        key = (e.rec, repr(e.noise))
        pool = self.spare.get(key)
        if pool:
            self.n_spare -= 1
            env = pool.pop()
            if not pool:
                del self.spare[key]
            return env
        if len(self.awake) + self.n_spare >= self.live_cap:
            # enough objects exist, none spare of this record: rather than build one (a schema
            # and a connection, ~10 ms), hibernate the least recently used awake environment of
            # the same record and use its object (a suspend, ~0.2 ms)
            for h in self.awake:
                other = self.envs[h]
                if other.rec == e.rec and repr(other.noise) == key[1] and other is not e:
                    del self.awake[h]
                    self._hibernate(other)
                    return self._take(e)
        for h in reversed(self.awake):   # the most recent one: likely the same record's
            other = self.envs[h]
            if other.rec == e.rec and repr(other.noise) == key[1] and other is not e \
                    and hasattr(other.live, "clone"):
                return other.live.clone()   # ~0.3 ms instead of ~10 ms for a new one
        return self.factory(self.objects[e.rec], noise=e.noise)

    def _put_back(self, e: _Env) -> None:
        env, e.live = e.live, None
        if env is not None:
            self._spare(e, env)

    def _spare(self, e: _Env, env) -> None:
        """Keeps an idle environment for the next wake-up of the same record (building one
        costs a schema and connection; resuming a kept one only replaces its state)."""
        self.spare.setdefault((e.rec, repr(e.noise)), []).append(env)
        self.n_spare += 1
        while self.n_spare > max(4, self.live_cap // 4):
            key = max(self.spare, key=lambda k: len(self.spare[k]))
            self.spare[key].pop(0).close()
            if not self.spare[key]:
                del self.spare[key]
            self.n_spare -= 1

    def _discard(self, h: int, e: _Env) -> None:
        """Drops a live environment whose state is unknown (it raised mid-step)."""
        self.awake.pop(h, None)
        if e.live is not None:
            try:
                e.live.close()
            finally:
                e.live = None

    def _make_room(self) -> None:
        while len(self.awake) >= self.live_cap:
            old, _ = self.awake.popitem(last=False)
            self._hibernate(self.envs[old])

    def _hibernate(self, e: _Env) -> None:
        """Evicts ``e``'s live environment, its state kept as a suspended state when the
        environment can give one (else its log stays the way back)."""
        env = e.live
        if env is None:
            return
        suspend = getattr(env, "suspend", None)
        if suspend is not None and e.log:   # with no action since its state, that state holds
            try:
                e.snap, e.log = suspend(), []
            except Exception:  # noqa: BLE001 - unpicklable state: the log replay still works
                pass
        self._put_back(e)

    def _reset_state(self, e: _Env, env=None):
        """(first observation, shared suspended state) of ``e``'s (record, task, noise), built
        with a real reset (on ``env`` when given, else a spare) the first time on this worker."""
        key = (e.rec, e.task, repr(e.noise))
        hit = self.first_obs.get(key)
        if hit is not None:
            self.first_obs.move_to_end(key)
            return hit
        own = env is None
        if own:
            env = self._take(e)
        try:
            obs = env.reset(self.objects[e.task])
            snap = None
            if hasattr(env, "suspend"):
                try:
                    snap = env.suspend()
                except Exception:  # noqa: BLE001 - this environment wakes by replay
                    snap = None
        except BaseException:
            env.close()
            raise
        if own:
            self._spare(e, env)
        self.first_obs[key] = hit = (obs, snap)
        if len(self.first_obs) > self.live_cap:
            self.first_obs.popitem(last=False)
        return hit

    def _wake(self, h: int, e: _Env):
        """The live environment of ``h`` with its committed state: resumed from its suspended
        state (or the shared state after its reset) and the actions committed after it."""
        if e.log is None:
            raise _BadRequest(f"handle {h}: not reset yet")
        if e.live is not None:
            self.awake.move_to_end(h)
            return e.live
        env = self._take(e)
        self._make_room()
        try:
            snap = e.snap
            if snap is None and hasattr(env, "resume"):
                snap = self._reset_state(e, env)[1]   # e.g. restored after a worker crash
            if snap is not None:
                env.resume(snap)
            else:
                env.reset(self.objects[e.task])
            for a in e.log:
                if not _is_code_call(a, e.code_tools):
                    env.step(a)
        except BaseException:
            env.close()
            raise
        e.live = env
        self.awake[h] = None
        return env

    # -- requests --------------------------------------------------------------------------------
    def handle(self, msg: tuple):
        try:
            return ("ok", getattr(self, "_op_" + msg[0])(*msg[1:]))
        except _BadRequest as ex:
            return ("err", "bad_request", str(ex))
        except Exception as ex:  # noqa: BLE001 - reported to the caller, the worker lives on
            kind = {"step": "tool_raised", "reset": "env_raised"}.get(msg[0], "internal")
            return ("err", kind,
                    f"{type(ex).__name__}: {ex}")

    def _get(self, h: int) -> _Env:
        e = self.envs.get(h)
        if e is None:
            raise _BadRequest(f"handle {h!r} is not open on this worker")
        return e

    def _op_batch(self, msgs):
        return [self.handle(m) for m in msgs]

    def _op_open(self, h, rec, rec_obj, task, task_obj, noise, code_tools, log):
        """``rec_obj`` / ``task_obj`` come with the first open of a key on this worker."""
        for k, obj in ((rec, rec_obj), (task, task_obj)):
            if obj is not None:
                self.objects.setdefault(k, obj)
            elif k not in self.objects:
                raise _BadRequest(f"object {k!r} was not sent to this worker")
        if h in self.envs:
            raise _BadRequest(f"handle {h} is already open on this worker")
        self.refs[rec] += 1
        self.refs[task] += 1
        self.envs[h] = _Env(rec, task, noise, tuple(code_tools), None if log is None else list(log))

    def _op_close(self, h):
        """Closes ``h``; records and tasks no open environment uses any more are dropped."""
        e = self.envs.pop(h, None)
        if e is None:
            return
        self.awake.pop(h, None)
        self._put_back(e)
        for k in (e.rec, e.task):
            self.refs[k] -= 1
            if self.refs[k] == 0:
                del self.refs[k]
                self.objects.pop(k, None)
                for key in [s for s in self.spare if s[0] == k]:
                    for env in self.spare.pop(key):
                        self.n_spare -= 1
                        env.close()
                for key in [s for s in self.first_obs if k in s[:2]]:
                    del self.first_obs[key]

    def _op_reset(self, h):
        e = self._get(h)
        self.awake.pop(h, None)
        self._put_back(e)
        e.log, e.snap, e.code_calls = None, None, 0
        obs, e.snap = self._reset_state(e)
        e.log = []
        obs = dict(obs)   # the cached observation itself stays untouched
        if e.code_tools:
            from .sandbox import CALCULATOR_TOOL, PYTHON_TOOL

            obs["tools"] = obs["tools"] + [t for t in (PYTHON_TOOL, CALCULATOR_TOOL)
                                           if t["function"]["name"] in e.code_tools]
        return obs

    def _op_step(self, h, action):
        e = self._get(h)
        if e.log is None:
            raise _BadRequest(f"handle {h}: step before reset")
        if _is_code_call(action, e.code_tools):
            e.log.append(action)
            e.code_calls += 1
            return self._code_call(action), 0.0, False, {"code_tool": True,
                                                         "code_calls": e.code_calls}
        env = self._wake(h, e)
        if env.done:
            raise _BadRequest(f"handle {h}: the episode has ended; reset it")
        try:
            out = env.step(action)
        except BaseException:
            self._discard(h, e)
            raise
        e.log.append(action)
        return out

    def _op_hash(self, h):
        return self._wake(h, self._get(h)).db_hash()

    def _op_stats(self):
        snaps = {id(e.snap): e.snap for e in self.envs.values() if e.snap is not None}
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        return {"handles": len(self.envs), "live": len(self.awake),
                "suspended": sum(e.snap is not None and e.live is None for e in self.envs.values()),
                "suspended_bytes": sum(s.own_bytes for s in snaps.values()
                                       if hasattr(s, "own_bytes")),
                "objects": len(self.objects), "rss_bytes": rss_bytes(), "pss_bytes": pss_bytes(),
                "pid": os.getpid(), "cpus": cpus}

    def _op_ping(self):
        return os.getpid()

    # -- code tools ------------------------------------------------------------------------------
    def _code_call(self, action) -> dict:
        from .sandbox import calculator, run_python

        args = action.get("arguments")
        name = action["name"]
        if not isinstance(args, dict):
            return _tool_obs(name, f"Error: {name} needs an arguments object", True)
        try:
            if name == "calculator":
                return _tool_obs(name, calculator(args.get("expression")), False)
            r = run_python(args.get("code"), self.sandbox_limits,
                           allow_unsandboxed=self.allow_unsandboxed)
            return _tool_obs(name, r.to_text(), not r.ok)
        except ValueError as ex:
            return _tool_obs(name, f"Error: {ex}", True)


class _BadRequest(Exception):
    pass


def _is_code_call(action, code_tools) -> bool:
    return bool(code_tools) and isinstance(action, dict) and action.get("type") == "tool_call" \
        and action.get("name") in code_tools


def _tool_obs(name: str, text: str, is_error: bool) -> dict:
    return {"role": "tool", "name": name, "content": text, "isError": is_error}


def pss_bytes(pid: int | str = "self") -> int:
    """Proportional set size of a process: shared pages (the forked workers share the zygote's
    interpreter and torch) are split between their users, so sums over processes are honest.
    Falls back to the RSS where /proc/PID/smaps_rollup is missing."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return rss_bytes(pid)
