"""``EnvService``: many environments behind one asyncio API, hosted by worker processes.

    async with EnvService(workers=2) as svc:
        h = await svc.open(env_record, task, noise=None)
        obs = await svc.reset(h)
        obs, reward, done, info = await svc.step(h, {"type": "tool_call", "name": ..., ...})
        results = await svc.step_many([(h, action), ...])
        await svc.close(h)
        svc.metrics()

Semantics (the contract the RL loop and external agents rely on):

* A handle is an int, never reused. ``open`` places the environment on the least-loaded worker;
  ``env_record`` / ``task`` / ``noise`` are what ``Environment(env_record, noise=noise)`` and
  ``Environment.reset(task)`` take (records and tasks are shared by identity: open many
  environments with the same dict and it travels to a worker once; do not mutate it after).
* A step is *committed* when its reply reaches the service: the service appends the action to
  the handle's log. A worker that crashes, or is killed because it answered nothing for
  ``step_timeout`` seconds while a call was running (a hung tool), is replaced; its
  environments move to the new worker as their logs and are rebuilt lazily, each on its first
  use (the shared state after its reset, then its log), so nothing committed is lost, no other
  worker is touched, and the new worker serves at once instead of replaying every log first.
  The calls that were in flight on it return an *error observation* ``({"role": "error",
  "isError": True, "content": ...}, 0.0, False, {"error": kind, "committed": False})`` and may
  be retried. ``kind`` is ``"timeout"``,
  ``"worker_lost"`` or ``"tool_raised"`` (the environment raised; its state stays at the last
  committed step).
* Caller mistakes raise at once and change nothing: ``UnknownHandle`` (never opened / closed),
  ``EpisodeStateError`` (step before reset or after the episode ended), ``HandleBusy`` (a second
  call on a handle whose call is still running), ``ValueError`` (an action that is not a JSON
  object of at most ``max_action_bytes``, bad records), ``Overloaded`` (admission limits).
* Back-pressure: at most ``max_open`` open environments, at most ``max_inflight`` requests sent
  to workers at once; callers beyond that wait in a queue of at most ``max_queue``, and further
  calls raise ``Overloaded`` instead of piling up (a start-up storm cannot exhaust the machine).
  Both limits are split evenly between the workers, so calls piling up on a stalled or
  restarting worker never take the places of calls to the healthy ones.
* ``session()`` closes every environment it opened when the block ends, including when the
  client is cancelled or fails (a client that disconnects mid-episode leaves nothing behind).
* ``code_tools=("python", "calculator")`` adds the sandboxed code tools (``sandbox.py``) to every
  environment: their schemas are appended to ``reset``'s tools; their calls never touch the
  database and do not count toward the environment's ``max_steps``.

Local workers are pinned to the service's CPUs, one core each in turn (``pin_workers=False``
leaves them to the scheduler; where the OS has no affinity call they stay unpinned, and
``worker_stats()`` shows each worker's CPUs).

``backend="ray"`` runs the workers as Ray actors (``address``: an existing cluster; default: a
local one started here); the API is the same.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import time
from collections import Counter, deque
from typing import Any, Iterable, Mapping, Sequence

from .host import DEFAULT_FACTORY, rss_bytes
from .workers import CallTimeout, LocalWorker, RayWorker, WorkerLost, Zygote, usable_cpus

__all__ = ["EnvService", "EnvServiceError", "UnknownHandle", "EpisodeStateError", "HandleBusy",
           "Overloaded", "WorkerLost", "CODE_TOOLS"]

CODE_TOOLS = ("python", "calculator")


class EnvServiceError(RuntimeError):
    """Base of the service's own errors."""


class UnknownHandle(EnvServiceError, LookupError):
    pass


class EpisodeStateError(EnvServiceError):
    pass


class HandleBusy(EnvServiceError):
    pass


class Overloaded(EnvServiceError):
    pass


class _Handle:
    __slots__ = ("worker", "rec", "task", "noise", "log", "done", "busy")

    def __init__(self, worker, rec, task, noise):
        self.worker, self.rec, self.task, self.noise = worker, rec, task, noise
        self.log: list | None = None
        self.done = False
        self.busy = False


def _error_step(kind: str, message: str):
    return ({"role": "error", "isError": True, "content": f"Error: {message}"}, 0.0, False,
            {"error": kind, "committed": False})


async def _wait(fut: asyncio.Future, timeout: float):
    """``fut``'s result, or TimeoutError after ``timeout`` s; ``fut`` itself is never cancelled.
    (Not ``wait_for(shield(fut))``: on Python 3.11 that swallows the caller's cancellation when
    ``fut`` completes at the same moment, and a cancelled client would then hang.)"""
    done, _ = await asyncio.wait({fut}, timeout=timeout)
    if not done:
        raise asyncio.TimeoutError
    return fut.result()


async def _wait_event(event: asyncio.Event, timeout: float) -> None:
    t = asyncio.ensure_future(event.wait())
    try:
        await _wait(t, timeout)
    finally:
        t.cancel()


def _positive(name: str, v, kind=(int,)):
    if isinstance(v, bool) or not isinstance(v, kind) or v <= 0:
        raise ValueError(f"{name}: expected a positive {'integer' if kind == (int,) else 'number'},"
                         f" got {v!r}")


class EnvService:
    def __init__(self, workers: int | None = None, *, backend: str = "local",
                 address: str | None = None, env_factory: str = DEFAULT_FACTORY,
                 live_per_worker: int = 256, step_timeout: float = 30.0,
                 start_timeout: float = 180.0, max_open: int = 100_000, max_inflight: int = 512,
                 max_queue: int = 20_000, max_action_bytes: int = 64 * 1024,
                 code_tools: Sequence[str] = (), sandbox_limits=None,
                 allow_unsandboxed: bool = False, latency_window: int = 20_000,
                 pin_workers: bool = True):
        if workers is None:
            workers = len(usable_cpus())
        _positive("workers", workers)
        if backend not in ("local", "ray"):
            raise ValueError(f"backend: expected 'local' or 'ray', got {backend!r}")
        if address is not None and backend != "ray":
            raise ValueError(f"address: only for backend='ray', got address={address!r} with "
                             f"backend={backend!r}")
        for name in ("live_per_worker", "max_open", "max_inflight", "max_queue",
                     "max_action_bytes", "latency_window"):
            _positive(name, locals()[name])
        for name in ("step_timeout", "start_timeout"):
            _positive(name, locals()[name], (int, float))
        code_tools = tuple(code_tools)
        bad = [t for t in code_tools if t not in CODE_TOOLS]
        if bad:
            raise ValueError(f"code_tools: expected a subset of {CODE_TOOLS}, got {bad}")
        self.n_workers, self.backend, self.address = workers, backend, address
        self.step_timeout, self.start_timeout = float(step_timeout), float(start_timeout)
        self.max_open, self.max_inflight, self.max_queue = max_open, max_inflight, max_queue
        self.max_action_bytes = max_action_bytes
        self.code_tools = code_tools
        self.allow_unsandboxed = allow_unsandboxed
        if not isinstance(pin_workers, bool):
            raise ValueError(f"pin_workers: expected True or False, got {pin_workers!r}")
        self.pin_workers = pin_workers and backend == "local"
        self._worker_config = {"factory": env_factory, "live": live_per_worker,
                               "sandbox_limits": sandbox_limits,
                               "allow_unsandboxed": allow_unsandboxed}
        self._handles: dict[int, _Handle] = {}
        self._ids = itertools.count(1)
        self._objs: dict[int, list] = {}        # id(obj) -> [key, obj, refs]
        self._key_obj: dict[str, Any] = {}
        self._obj_ids = itertools.count()
        self._workers: list = []
        self._known: list[Counter] = []        # per worker: key -> its open handles using it
        self._assigned: list[set] = []
        self._ready: list[asyncio.Event] = []
        self._restarting: list[bool] = []
        self._lat: deque = deque(maxlen=latency_window)
        self.failures: Counter = Counter()
        self.counts: Counter = Counter()
        self._waiting = 0
        self._inflight = 0
        self._started = False
        self._owns_ray = False
        self._zygote = None
        self._tasks: set = set()
        self._t0 = time.monotonic()

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> "EnvService":
        if self._started:
            return self
        if "python" in self.code_tools and not self.allow_unsandboxed:
            from .sandbox import SandboxUnavailable, probe

            ok, why = probe()
            if not ok:
                raise SandboxUnavailable(f"code_tools: the python sandbox cannot isolate code "
                                         f"here ({why}); pass allow_unsandboxed=True to opt out")
        if self.backend == "ray":
            import ray

            if not ray.is_initialized():
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
                self._owns_ray = True
        n = self.n_workers   # each worker its share of the limits (at least one place)
        self._sem = [asyncio.Semaphore(-(-self.max_inflight // n)) for _ in range(n)]
        self._queue_cap = -(-self.max_queue // n)
        self._waiting_on = [0] * n
        if self.backend == "local":
            self._zygote = Zygote(self.start_timeout)
            await self._zygote.start()
        self._workers = await asyncio.gather(*(self._new_worker(i) for i in range(self.n_workers)))
        self._known = [Counter() for _ in self._workers]
        self._assigned = [set() for _ in self._workers]
        self._ready = [asyncio.Event() for _ in self._workers]
        for e in self._ready:
            e.set()
        self._restarting = [False] * self.n_workers
        self._started = True
        self._t0 = time.monotonic()
        return self

    async def _new_worker(self, index: int):
        cfg = dict(self._worker_config)
        if self.backend == "ray":
            w = RayWorker(cfg, start_timeout=self.start_timeout)
        else:
            if self.pin_workers:   # worker i on core i (round robin when there are more)
                cpus = usable_cpus()
                cfg["cpus"] = [cpus[index % len(cpus)]]
            w = LocalWorker(cfg, self._zygote, start_timeout=self.start_timeout)
            w.on_lost = lambda w=w: self._worker_lost(index, w)
        await w.start()
        return w

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(w.stop() for w in self._workers), return_exceptions=True)
        if self.backend == "local":
            self._zygote.stop()
        self._handles.clear()
        if self._owns_ray:
            import ray

            ray.shutdown()

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, *exc):
        await self.stop()

    # -- workers: loss and replacement -----------------------------------------------------------
    def _worker_lost(self, index: int, worker) -> None:
        if not self._started or self._workers[index] is not worker or self._restarting[index]:
            return
        self._restarting[index] = True
        self._ready[index].clear()
        self.counts["worker_restarts"] += 1
        t = asyncio.get_running_loop().create_task(self._restart(index))
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _restart(self, index: int) -> None:
        old = self._workers[index]
        old.kill()
        delay = 0.5
        while self._started:
            try:
                new = await self._new_worker(index)
                self._workers[index] = new
                self._known[index] = Counter()
                # rebuild every environment of the lost worker from its committed log
                msgs = [self._open_msg(index, h, self._handles[h], self._handles[h].log)
                        for h in list(self._assigned[index]) if h in self._handles]
                for i in range(0, len(msgs), 1024):
                    await asyncio.wait_for(new.submit(("batch", msgs[i:i + 1024])),
                                           self.start_timeout)
                break
            except (WorkerLost, asyncio.TimeoutError, OSError):
                self.failures["worker_start"] += 1
                await asyncio.sleep(delay)
                delay = min(2 * delay, 10.0)
        self._restarting[index] = False
        self._ready[index].set()

    def _background(self, coro) -> None:
        """Runs a clean-up call without waiting for it (its failure changes nothing)."""
        async def quiet():
            with contextlib.suppress(Exception):
                await coro
        t = asyncio.get_running_loop().create_task(quiet())
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def _open_msg(self, w: int, h: int, H: _Handle, log):
        """Built at the moment of sending: a record / task goes along unless an open handle on
        ``w`` already sent it (the worker keeps it while any environment uses it)."""
        objs = []
        for key in (H.rec, H.task):
            known = self._known[w][key] > 0
            self._known[w][key] += 1
            objs.append(None if known else self._key_obj[key])
        return ("open", h, H.rec, objs[0], H.task, objs[1], H.noise, self.code_tools, log)

    def kill_worker(self, index: int) -> int | None:
        """Fault injection: SIGKILL worker ``index`` (local backend: its process; Ray: the actor).
        Returns its pid. The service replaces it as it would after a crash."""
        if not 0 <= index < len(self._workers):
            raise ValueError(f"index: expected 0..{len(self._workers) - 1}, got {index!r}")
        w = self._workers[index]
        pid = w.pid
        w.kill()
        self._worker_lost(index, w)
        return pid

    # -- requests --------------------------------------------------------------------------------
    async def _call(self, w: int, msg, timeout: float, on_done=None):
        """Sends ``msg`` (or ``msg()``, built at the moment of sending) to worker ``w`` under the
        admission limits; ``on_done(fut)`` runs when the worker answers (or ``on_done(None)``
        if the request was never sent)."""
        sent = False
        try:
            if not self._started:
                raise EnvServiceError("the service is not running")
            if self._waiting_on[w] >= self._queue_cap:
                self.failures["overloaded"] += 1
                raise Overloaded(f"more than max_queue={self.max_queue} calls are waiting "
                                 f"({self._queue_cap} for worker {w})")
            self._waiting += 1
            self._waiting_on[w] += 1
            try:
                if not self._ready[w].is_set():   # restarting: wait without taking a place
                    await _wait_event(self._ready[w], self.start_timeout)
                await self._sem[w].acquire()
            finally:
                self._waiting -= 1
                self._waiting_on[w] -= 1
            self._inflight += 1
            try:
                if not self._ready[w].is_set():
                    await _wait_event(self._ready[w], self.start_timeout)
                worker = self._workers[w]
                fut = worker.submit(msg() if callable(msg) else msg)
                sent = True
                if on_done is not None:
                    fut.add_done_callback(on_done)
                try:
                    while True:
                        try:
                            return await _wait(fut, timeout)
                        except asyncio.TimeoutError:
                            # a worker that answered anything lately is busy, not stuck: the
                            # timeout bounds one call's run time, not the queue before it
                            if time.monotonic() - worker.last_progress < timeout:
                                continue
                            # stuck: kill it now (no late reply can commit anything); its
                            # oldest call gets CallTimeout, the others WorkerLost
                            worker.kill(stalled=True)
                            self._worker_lost(w, worker)
                except CallTimeout:
                    raise asyncio.TimeoutError from None
                except WorkerLost:
                    self._worker_lost(w, worker)
                    raise
            finally:
                self._inflight -= 1
                self._sem[w].release()
        finally:
            if not sent and on_done is not None:
                on_done(None)

    def _get(self, handle) -> _Handle:
        if not self._started:
            raise EnvServiceError("the service is not running (use 'async with EnvService()' "
                                  "or await start())")
        H = self._handles.get(handle) if isinstance(handle, int) else None
        if H is None:
            self.failures["bad_input"] += 1
            raise UnknownHandle(f"handle: {handle!r} is not an open environment (never opened, "
                                "or closed)")
        if H.busy:
            self.failures["bad_input"] += 1
            raise HandleBusy(f"handle: {handle} has a call in progress; await it first")
        return H

    def _intern(self, obj, prefix: str) -> str:
        ent = self._objs.get(id(obj))
        if ent is None:
            key = f"{prefix}{next(self._obj_ids)}"
            ent = self._objs[id(obj)] = [key, obj, 0]
            self._key_obj[key] = obj
        ent[2] += 1
        return ent[0]

    def _release(self, key: str) -> None:
        obj = self._key_obj[key]
        ent = self._objs[id(obj)]
        ent[2] -= 1
        if ent[2] == 0:
            del self._objs[id(obj)]
            del self._key_obj[key]

    async def open(self, env_record: Mapping, task: Mapping, noise=None) -> int:
        """Opens an environment for ``task`` (not reset yet); returns its handle."""
        from ..noise import NoiseConfig

        if not self._started:
            raise EnvServiceError("the service is not running (use 'async with EnvService()' "
                                  "or await start())")
        if not isinstance(env_record, Mapping) or "domain" not in env_record \
                or "tools" not in env_record:
            raise ValueError("env_record: expected an environment record with 'domain' and "
                             f"'tools', got {type(env_record).__name__}")
        if not isinstance(task, Mapping) or "instruction" not in task:
            raise ValueError(f"task: expected a task record with 'instruction', got "
                             f"{type(task).__name__}")
        if noise is not None and not isinstance(noise, NoiseConfig):
            raise ValueError(f"noise: expected a NoiseConfig or None, got {type(noise).__name__}")
        if len(self._handles) >= self.max_open:
            self.failures["overloaded"] += 1
            raise Overloaded(f"max_open={self.max_open} environments are open; close some")
        alive = [i for i in range(len(self._workers)) if not self._restarting[i]] or \
            list(range(len(self._workers)))
        w = min(alive, key=lambda i: len(self._assigned[i]))
        h = next(self._ids)
        H = _Handle(w, self._intern(env_record, "r"), self._intern(task, "t"), noise)
        self._handles[h] = H
        self._assigned[w].add(h)
        try:
            r = await self._call(w, lambda: self._open_msg(w, h, H, None), self.step_timeout)
        except BaseException:
            # the worker may have opened it (a cancelled client): close it there as well
            self._drop(h)
            self._background(self._call(w, ("close", h), self.step_timeout))
            raise
        if r[0] != "ok":
            self._drop(h)
            self._background(self._call(w, ("close", h), self.step_timeout))
            raise EnvServiceError(f"open failed on the worker: {r[2]}")
        self.counts["opened"] += 1
        return h

    def _drop(self, h: int) -> None:
        """Forgets handle ``h`` here (the worker counts its own references: it drops a record
        or task with the last environment that uses it)."""
        H = self._handles.pop(h)
        self._assigned[H.worker].discard(h)
        for key in (H.rec, H.task):
            self._release(key)
            k = self._known[H.worker]
            if k[key] > 0:
                k[key] -= 1
                if k[key] == 0:
                    del k[key]

    async def close(self, handle: int) -> None:
        """Closes ``handle`` (also while a call on it is running: the close follows it)."""
        H = self._handles.get(handle) if isinstance(handle, int) else None
        if H is None:
            self.failures["bad_input"] += 1
            raise UnknownHandle(f"handle: {handle!r} is not an open environment (never opened, "
                                "or closed)")
        self._drop(handle)
        self.counts["closed"] += 1
        with contextlib.suppress(WorkerLost, asyncio.TimeoutError, Overloaded):
            await self._call(H.worker, ("close", handle), self.step_timeout)

    async def reset(self, handle: int) -> dict:
        """Starts a new episode of the handle's task; returns the first observation."""
        H = self._get(handle)
        H.busy = True

        def commit(fut):
            H.busy = False
            if fut is not None and not fut.cancelled() and fut.exception() is None \
                    and fut.result()[0] == "ok":
                H.log, H.done = [], False
        try:
            r = await self._call(H.worker, ("reset", handle), self.step_timeout, commit)
        except asyncio.TimeoutError:
            H.busy = False
            self.failures["timeout"] += 1
            raise EnvServiceError(f"reset of handle {handle}: timed out after "
                                  f"{self.step_timeout} s; the worker was replaced") from None
        except WorkerLost as e:
            H.busy = False
            self.failures["worker_lost"] += 1
            raise EnvServiceError(f"reset of handle {handle}: {e}; retry") from None
        if r[0] != "ok":
            self.failures[r[1]] += 1
            raise EnvServiceError(f"reset of handle {handle} failed: {r[2]}")
        self.counts["resets"] += 1
        return r[1]

    def _check_action(self, handle: int, H: _Handle, action) -> None:
        if H.log is None:
            self.failures["bad_input"] += 1
            raise EpisodeStateError(f"handle: {handle} has not been reset; call reset() first")
        if H.done:
            self.failures["bad_input"] += 1
            raise EpisodeStateError(f"handle: {handle}'s episode has ended; reset() it")
        if not isinstance(action, Mapping):
            self.failures["bad_input"] += 1
            raise ValueError(f"action: expected a JSON object (dict), got {type(action).__name__}")
        try:
            n = len(json.dumps(action, separators=(",", ":")))
        except (TypeError, ValueError) as e:
            self.failures["bad_input"] += 1
            raise ValueError(f"action: must be JSON-serialisable ({e})") from None
        if n > self.max_action_bytes:
            self.failures["bad_input"] += 1
            raise ValueError(f"action: at most max_action_bytes={self.max_action_bytes} bytes "
                             f"of JSON, got {n}")

    async def step(self, handle: int, action: Mapping):
        """One agent action -> ``(observation, reward, done, info)`` (see the module docstring
        for error observations)."""
        H = self._get(handle)
        self._check_action(handle, H, action)
        return await self._step(handle, H, dict(action))

    async def _step(self, handle: int, H: _Handle, action: dict):
        H.busy = True
        t0 = time.perf_counter()

        def commit(fut):
            H.busy = False
            if fut is not None and not fut.cancelled() and fut.exception() is None:
                r = fut.result()
                if r[0] == "ok":
                    H.log.append(action)
                    H.done = H.done or bool(r[1][2])
        try:
            r = await self._call(H.worker, ("step", handle, action), self.step_timeout, commit)
        except asyncio.TimeoutError:
            H.busy = False   # its worker is dead: the call can no longer commit
            self.failures["timeout"] += 1
            return _error_step("timeout", f"the step took over {self.step_timeout} s; its worker "
                               "was replaced and the environment restored to its last committed "
                               "step; retry or choose another action")
        except WorkerLost as e:
            H.busy = False
            self.failures["worker_lost"] += 1
            return _error_step("worker_lost", f"{e}; the environment was restored to its last "
                               "committed step; retry the action")
        if r[0] != "ok":
            if r[1] == "bad_request":
                self.failures["bad_input"] += 1
                raise EpisodeStateError(f"handle: {r[2]}")
            self.failures[r[1]] += 1
            return _error_step(r[1], f"the environment raised {r[2]}; its state is unchanged")
        self._lat.append(time.perf_counter() - t0)
        self.counts["steps"] += 1
        return r[1]

    async def step_many(self, calls: Iterable[tuple[int, Mapping]]) -> list:
        """Steps several environments at once: ``[(handle, action), ...]`` -> their results in
        the same order. Every call is checked before any is sent (a bad one raises and nothing
        runs); a handle may appear once."""
        calls = list(calls)
        seen = set()
        checked = []
        for i, item in enumerate(calls):
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise ValueError(f"calls[{i}]: expected a (handle, action) pair, got {item!r:.80}")
            h, a = item
            if h in seen:
                raise ValueError(f"calls[{i}]: handle {h} appears twice; step it in two calls")
            seen.add(h)
            H = self._get(h)
            self._check_action(h, H, a)
            checked.append((h, H, dict(a)))
        return list(await asyncio.gather(*(self._step(h, H, a) for h, H, a in checked)))

    async def db_hash(self, handle: int) -> str:
        """sha256 of the environment's database now (for replay checks)."""
        H = self._get(handle)
        r = await self._call(H.worker, ("hash", handle), self.step_timeout)
        if r[0] != "ok":
            raise EpisodeStateError(f"handle: {r[2]}")
        return r[1]

    def committed(self, handle: int) -> list:
        """The handle's committed actions since its last reset (a copy)."""
        H = self._handles.get(handle)
        if H is None:
            raise UnknownHandle(f"handle: {handle!r} is not an open environment")
        return list(H.log or [])

    @contextlib.asynccontextmanager
    async def session(self):
        """A client's scope: every environment opened through it is closed at the end."""
        s = _Session(self)
        try:
            yield s
        finally:
            await asyncio.shield(s.close_all())

    # -- metrics ---------------------------------------------------------------------------------
    def metrics(self) -> dict:
        lat = sorted(self._lat)

        def pct(q):
            return 1e3 * lat[min(len(lat) - 1, int(q * len(lat)))] if lat else None
        return {"workers": len(self._workers),
                "workers_alive": sum(bool(w.alive) for w in self._workers),
                "worker_restarts": self.counts["worker_restarts"],
                "open": len(self._handles),
                "in_episode": sum(1 for H in self._handles.values()
                                  if H.log is not None and not H.done),
                "inflight": self._inflight, "queued": self._waiting,
                "steps": self.counts["steps"], "resets": self.counts["resets"],
                "opened": self.counts["opened"], "closed": self.counts["closed"],
                "step_p50_ms": pct(0.5), "step_p99_ms": pct(0.99),
                "failures": dict(self.failures), "uptime_s": time.monotonic() - self._t0,
                "service_rss_bytes": rss_bytes()}

    def memory_bytes(self) -> dict:
        """Proportional set sizes (local backend): this process, the zygote, each worker, and
        their sum (the machine's memory this service holds)."""
        from .host import pss_bytes

        out = {"service": pss_bytes(), "zygote": 0, "workers": []}
        if self._zygote is not None and self._zygote.proc is not None:
            out["zygote"] = pss_bytes(self._zygote.proc.pid)
        if self.backend == "local":
            out["workers"] = [pss_bytes(w.pid) if w.alive else 0 for w in self._workers]
        out["total"] = out["service"] + out["zygote"] + sum(out["workers"])
        return out

    async def worker_stats(self) -> list[dict]:
        """Per worker: hosted environments, live (awake) ones, resident memory, pid."""
        out = []
        for i in range(len(self._workers)):
            try:
                r = await self._call(i, ("stats",), self.step_timeout)
                out.append(r[1])
            except (WorkerLost, asyncio.TimeoutError) as e:
                out.append({"error": str(e)})
        return out


class _Session:
    def __init__(self, svc: EnvService):
        self.svc = svc
        self.handles: set[int] = set()

    async def open(self, env_record, task, noise=None) -> int:
        h = await self.svc.open(env_record, task, noise)
        self.handles.add(h)
        return h

    async def reset(self, h):
        return await self.svc.reset(h)

    async def step(self, h, action):
        return await self.svc.step(h, action)

    async def step_many(self, calls):
        return await self.svc.step_many(calls)

    async def close(self, h):
        self.handles.discard(h)
        await self.svc.close(h)

    async def close_all(self):
        for h in list(self.handles):
            self.handles.discard(h)
            if h in self.svc._handles:
                await self.svc.close(h)
