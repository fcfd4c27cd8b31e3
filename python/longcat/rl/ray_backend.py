"""The Ray backend of ``train(..., backend="ray")`` / ``longcat rl train --ray``: the generators,
the reward (environment) workers and the trainer run as Ray actors; the driver keeps what the
local backend keeps in one process and is metadata only: the ``RolloutManager`` (prompt ids and
their ledger), the staleness admission, the sample buffer, the rollout controllers' coroutines
(which route each trajectory to a generator actor), logging and checkpoints. Same streaming
semantics, same checkpoints and metrics as the local backend.

- ``RayPolicy``: ``generators`` actors, each an ``EnginePolicy`` (one engine per live version).
  The driver pins versions; a weight push sends the new state dict once (``ray.put``) with the
  versions the driver still has pinned, which every actor keeps live. A trajectory goes to the
  least-loaded actor that holds its version. An actor that dies fails its trajectories with
  ``RolloutLost`` (the loop re-queues their prompts) and is replaced by a fresh actor with the
  newest weights.
- ``RayReward``: the reward function copied into ``workers`` actors, called round-robin; a
  killed worker drops the samples it was scoring (as any environment failure does) and is
  replaced.
- ``RayEnvHost`` (the multi-turn task, ``task.name: envs``): ``workers`` environment-worker
  actors hold the episodes' environments and conversations; the driver's controllers run each
  episode's turns (the generator actors write, the env worker executes the tool calls and the
  user simulator), under one pinned version as with the local backend. A killed env worker
  drops its episodes (logged, as any environment failure) and is replaced; a killed generator
  re-queues the whole group.
- ``RayTrainer``: the trainer in an actor (``PolicyTrainer``, or rank 0 of a data-parallel or
  FSDP2 trainer whose other ranks the actor spawns, as ``train.data_parallel`` / ``sharding``
  say); after every step the driver's model copy takes the new weights (for the weight push and
  the checkpoint).

With ``policy.kind: openai`` the server is the generator: there are no generator actors, the
driver's ``OpenAIPolicy`` sends the rollouts to the server and pushes it the trainer actor's
weights after every step (``longcat.rl.openai_policy``); reward workers and the trainer are actors.

Generators share half the cluster's CPUs, reward (or environment) workers a quarter, the
trainer a quarter (at most 1 CPU per actor), so a run fits a 2-CPU local cluster as well as a
large one. A killed ``--ray`` run resumes from its last checkpoint like a local one (lossless:
the ledger, buffer and re-queued prompts are the driver's, in the checkpoint). Ray is an optional extra (``pip install longcat[ray]``)."""
from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import math
import os
import time
from collections import Counter
from typing import Any, Optional

import torch

from longcat.rl.protocols import PinnedVersions, RolloutLost, Sample


def _ray():
    try:
        import ray
    except ImportError:
        raise ImportError("the Ray backend needs ray: pip install 'longcat[ray]'") from None
    return ray


@contextlib.contextmanager
def ray_session(address: Optional[str] = None):
    """Ray for the length of a run: joins ``address`` (or starts a local cluster) unless Ray is
    initialised already, and shuts down only what it started."""
    ray = _ray()
    owned = not ray.is_initialized()
    if owned:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    elif address is not None:
        raise ValueError(f"train: 'ray_address' ({address!r}) given, but Ray is already initialised in this process")
    try:
        yield ray
    finally:
        if owned:
            ray.shutdown()


def _actor_cpus(n_actors: int, share: float) -> float:
    """CPUs per actor of a kind that gets ``share`` of the cluster (generators 1/2, reward workers
    1/4, the trainer 1/4): at most 1 each, so a 2-CPU cluster holds every actor of a run."""
    total = _ray().cluster_resources().get("CPU", 1.0)
    return math.floor(min(1.0, total * share / max(1, n_actors)) * 1000) / 1000


def _threads(cpus: float) -> int:
    return max(1, int(cpus))


class GeneratorActor:
    """One generator: an ``EnginePolicy`` that keeps live every version its driver has pinned."""

    def __init__(self, model, tokenizer, engine_args: dict, sampling: dict, version: int, threads: int):
        from longcat.rl.policy import EnginePolicy

        torch.set_num_threads(threads)
        self.policy = EnginePolicy(model, tokenizer, engine_args=engine_args, sampling=sampling, version=version)
        self.held: Counter = Counter()

    def pid(self) -> int:
        return os.getpid()

    async def generate(self, prompt_ids: list[int], n: int, version: int) -> list[Sample]:
        return await self.policy.generate(prompt_ids, n, version)

    async def update_weights(self, state_dict, version: int, keep: list[int]) -> int:
        for v in keep:  # the driver's pinned trajectories may still come here
            if v in self.policy.live_versions and not self.held[v]:
                self.policy.pin(v)
                self.held[v] = 1
        await self.policy.update_weights(state_dict, version)
        for v in [v for v in self.held if v not in keep]:
            del self.held[v]
            self.policy.release_version(v)
        return len(self.policy.live_versions)

    def busy_s(self) -> float:
        return self.policy.busy_s

    async def close(self) -> None:
        await self.policy.close()


async def _load_after(first, actor, ref, version: int, keep: list[int]):
    """``actor.update_weights`` once its pending load ``first`` (None, or awaitable) is done."""
    if first is not None:
        await first
    return await actor.update_weights.remote(ref, version, keep)


class RayPolicy(PinnedVersions):
    """The ``Policy`` protocol over ``generators`` ``GeneratorActor``s (see the module doc)."""

    def __init__(self, model: torch.nn.Module, tokenizer=None, *, generators: int = 2,
                 engine_args: Optional[dict] = None, sampling: Optional[dict] = None, version: int = 0):
        ray = _ray()
        if isinstance(generators, bool) or not isinstance(generators, int) or generators < 1:
            raise ValueError(f"RayPolicy: 'generators' must be an int >= 1, got {generators!r}")
        self._ray = ray
        cpus = _actor_cpus(generators, 0.5)
        self._cls = ray.remote(num_cpus=cpus, max_restarts=0)(GeneratorActor)
        self._args = (tokenizer, dict(engine_args or {}), dict(sampling or {}))
        self._threads = _threads(cpus)
        self._model_ref = ray.put(copy.deepcopy(model).cpu().eval())
        self._version = version
        self._next: Optional[int] = None  # the version being pushed; new trajectories pin it
        self._switched: Optional[asyncio.Event] = None
        self._pins: Counter = Counter()
        self._weights_ref = None  # the newest pushed weights (None: the model's own)
        self.actors: list = []
        self._versions: list[set] = []  # versions each actor holds live
        self._ready: list = []          # an actor's pending weight load, awaited before its first trajectory
        self._load: list[int] = []
        for _ in range(generators):
            self._add_actor()
        ray.get([a.pid.remote() for a in self.actors])  # started (and their engines built) before the run
        self.lost = 0       # trajectories failed because their actor died
        self.replaced = 0   # actors replaced
        self.busy_s = 0.0   # wall time with at least one trajectory generating
        self._inflight, self._since = 0, 0.0

    def _add_actor(self, index: Optional[int] = None) -> None:
        """A new actor holding the newest version (the model's weights before the first push)."""
        fresh = self._weights_ref is None
        actor = self._cls.remote(self._model_ref, *self._args, self._version if fresh else -1, self._threads)
        ready = None if fresh else actor.update_weights.remote(self._weights_ref, self._version, [])
        if index is None:
            self.actors.append(actor)
            self._versions.append({self._version})
            self._ready.append(ready)
            self._load.append(0)
        else:
            self.actors[index], self._versions[index], self._ready[index], self._load[index] = \
                actor, {self._version}, ready, 0

    @property
    def version(self) -> int:
        return self._version

    @property
    def live_versions(self) -> list[int]:
        return sorted(set().union(*self._versions))

    def _dead(self, e: BaseException) -> bool:
        return isinstance(e, (self._ray.exceptions.RayActorError, self._ray.exceptions.WorkerCrashedError))

    async def generate(self, prompt_ids: list[int], n: int, version: int) -> list[Sample]:
        if self._pins[version] <= 0:
            raise ValueError(f"generate: version {version} is not pinned; pin it with acquire_version() first")
        if self._next is not None and version == self._next:
            await self._switched.wait()  # pinned during a push: starts once every actor has it
        holders = [i for i, vs in enumerate(self._versions) if version in vs]
        if not holders:
            self.lost += 1
            raise RolloutLost(f"no generator actor holds version {version} any more")
        i = min(holders, key=lambda j: self._load[j])
        actor = self.actors[i]
        self._load[i] += 1
        self._inflight += 1
        if self._inflight == 1:
            self._since = time.perf_counter()
        try:
            if self._ready[i] is not None:
                await self._ready[i]
            return await actor.generate.remote(list(prompt_ids), n, version)
        except Exception as e:
            if not self._dead(e):
                raise
            self.lost += 1
            if self.actors[i] is actor:  # the first to see it replaces it
                self.replaced += 1
                self._add_actor(i)
            raise RolloutLost(f"generator actor {i} died: {type(e).__name__}") from None
        finally:
            if self.actors[i] is actor:
                self._load[i] -= 1
            self._inflight -= 1
            if self._inflight == 0:
                self.busy_s += time.perf_counter() - self._since

    async def update_weights(self, state_dict, version: int) -> None:
        """Push ``version`` to every actor (the tensors go into the object store once); versions
        still pinned here stay live there. Trajectories that start meanwhile pin ``version``."""
        if isinstance(version, bool) or not isinstance(version, int) or version <= self._version:
            raise ValueError(f"update_weights: 'version' must be an int > the live version {self._version}, "
                             f"got {version!r}")
        ref = self._ray.put({k: v.detach().cpu() for k, v in state_dict.items()})
        keep = sorted(v for v, c in self._pins.items() if c > 0)
        self._next, self._switched = version, asyncio.Event()
        try:
            actors = list(self.actors)
            # Each load waits for the actor's pending one (a replaced actor's first load, or a load
            # chained by an earlier push): loads of one actor must not overlap, or an older one
            # finishing last would make its version current again.
            results = await asyncio.gather(*(_load_after(self._ready[i], a, ref, version, keep)
                                             for i, a in enumerate(actors)), return_exceptions=True)
            for r in results:
                if isinstance(r, BaseException) and not self._dead(r):
                    raise r
            self._weights_ref, self._version = ref, version
            for i, (a, r) in enumerate(zip(actors, results)):
                held = {version, *[v for v in keep if v in self._versions[i]]}
                if self.actors[i] is not a:  # replaced during the push: the new weights after its first load
                    # (an actor's loads must not overlap: a later one finishing first would be undone)
                    self._ready[i] = asyncio.ensure_future(
                        _load_after(self._ready[i], self.actors[i], ref, version, keep))
                    self._versions[i] = held
                elif isinstance(r, BaseException):  # died between steps: a fresh actor on the new weights
                    self.replaced += 1
                    self._add_actor(i)
                else:
                    self._versions[i] = held
        finally:
            self._next = None
            self._switched.set()

    def kill_generator(self, index: int) -> None:
        """Kill one generator actor (fault injection for tests and drills)."""
        self._ray.kill(self.actors[index], no_restart=True)

    async def close(self) -> None:
        for a in self.actors:
            with contextlib.suppress(Exception):
                await a.close.remote()
            self._ray.kill(a, no_restart=True)
        self.actors = []


class RewardActor:
    def __init__(self, reward_fn):
        self.reward_fn = reward_fn

    def ping(self) -> int:
        return os.getpid()

    async def score(self, task: Any, sample: Sample) -> float:
        return float(await self.reward_fn(task, sample))


class RayReward:
    """An async reward ``(task, sample) -> float`` scored in ``workers`` actors round-robin. A
    worker that dies fails the samples it held (the loop drops them) and is replaced."""

    def __init__(self, reward_fn, workers: int = 2):
        ray = _ray()
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"RayReward: 'workers' must be an int >= 1, got {workers!r}")
        self._ray = ray
        self._cls = ray.remote(num_cpus=_actor_cpus(workers, 0.25), max_restarts=0)(RewardActor)
        self._fn_ref = ray.put(reward_fn)
        self.actors = [self._cls.remote(self._fn_ref) for _ in range(workers)]
        try:  # a reward the workers cannot load (defined where they cannot import it) fails here
            ray.get([a.ping.remote() for a in self.actors])
        except Exception as e:
            self.close()
            raise ValueError(f"RayReward: the reward workers could not start ({type(e).__name__}: "
                             f"{str(e)[:300]}); the reward function must be importable by Ray workers "
                             "(defined in a module, not a test file or notebook cell)") from None
        self._next = itertools.cycle(range(workers))
        self.replaced = 0

    async def __call__(self, task: Any, sample: Sample) -> float:
        ray = self._ray
        i = next(self._next)
        actor = self.actors[i]
        try:
            return await actor.score.remote(task, sample)
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError):
            if self.actors[i] is actor:
                self.replaced += 1
                self.actors[i] = self._cls.remote(self._fn_ref)
            raise

    def close(self) -> None:
        for a in self.actors:
            self._ray.kill(a, no_restart=True)
        self.actors = []


class EnvWorkerActor:
    """Environment worker: the ``EnvSessions`` of the episodes routed here."""

    def __init__(self, envs):
        from longcat.rl.agent import EnvSessions

        self.sessions = EnvSessions(envs)

    def ping(self) -> int:
        return os.getpid()

    def start(self, task, noise, max_steps: int, max_turns: int):
        return self.sessions.start(task, noise, max_steps, max_turns)

    def apply(self, sid: int, reply: dict, messages=None):
        return self.sessions.apply(sid, reply, messages)

    def reward(self, sid: int, partial: bool) -> float:
        return self.sessions.reward(sid, partial)

    def close(self, sid: int) -> None:
        self.sessions.close(sid)


class RayEnvHost:
    """The multi-turn task's environments in ``workers`` ``EnvWorkerActor``s (the env host of
    ``longcat.rl.agent.AgentEpisodes``): an episode opens its environment on the worker with the
    fewest open episodes and stays there. A worker that dies fails its episodes (the loop drops
    them, as any environment failure) and is replaced by a fresh one."""

    def __init__(self, envs, workers: int = 2):
        ray = _ray()
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"RayEnvHost: 'workers' must be an int >= 1, got {workers!r}")
        self._ray = ray
        self._cls = ray.remote(num_cpus=_actor_cpus(workers, 0.25), max_restarts=0)(EnvWorkerActor)
        self._envs_ref = ray.put(dict(envs))  # the environment records go to the object store once
        self.actors = [self._cls.remote(self._envs_ref) for _ in range(workers)]
        self._open = [0] * workers
        ray.get([a.ping.remote() for a in self.actors])
        self.replaced = 0

    async def _call(self, i: int, actor, method: str, *args):
        try:
            return await getattr(actor, method).remote(*args)
        except (self._ray.exceptions.RayActorError, self._ray.exceptions.WorkerCrashedError) as e:
            if self.actors[i] is actor:
                self.replaced += 1
                self.actors[i], self._open[i] = self._cls.remote(self._envs_ref), 0
            raise RuntimeError(f"environment worker {i} died: {type(e).__name__}") from None

    async def start(self, task, noise, max_steps: int, max_turns: int):
        i = min(range(len(self.actors)), key=lambda j: self._open[j])
        actor = self.actors[i]
        self._open[i] += 1
        try:
            sid, messages, tools = await self._call(i, actor, "start", task, noise, max_steps, max_turns)
        except BaseException:
            if self.actors[i] is actor:
                self._open[i] -= 1
            raise
        return (i, actor, sid), messages, tools

    async def apply(self, sid, reply: dict, messages=None):
        i, actor, local = sid
        return await self._call(i, actor, "apply", local, reply, messages)

    async def reward(self, sid, partial: bool) -> float:
        i, actor, local = sid
        return await self._call(i, actor, "reward", local, partial)

    async def close(self, sid) -> None:
        i, actor, local = sid
        if self.actors[i] is not actor:
            return  # its worker died and was replaced: nothing left to close
        self._open[i] -= 1
        with contextlib.suppress(Exception):
            await actor.close.remote(local)

    def kill_worker(self, index: int) -> None:
        """Kill one environment worker (fault injection for tests and drills)."""
        self._ray.kill(self.actors[index], no_restart=True)

    def close_all(self) -> None:
        for a in self.actors:
            self._ray.kill(a, no_restart=True)
        self.actors = []


class TrainerActor:
    """The trainer: one process, or rank 0 of ``data_parallel`` processes it spawns (gloo)."""

    def __init__(self, model, kwargs: dict, threads: int, data_parallel: int = 1, sharding: str = "none"):
        torch.set_num_threads(threads)
        from longcat.rl.distributed import make_trainer

        self.trainer = make_trainer(model, kwargs, data_parallel, sharding, threads=threads)

    def step(self, groups) -> tuple[dict, dict]:
        stats = self.trainer.step(groups)
        return stats, self.trainer.model.state_dict()

    def optimizer_state(self) -> dict:
        return self.trainer.optimizer.state_dict()

    def load_optimizer(self, state: dict) -> None:
        self.trainer.optimizer.load_state_dict(state)

    def close(self) -> None:
        close = getattr(self.trainer, "close", None)
        if close is not None:  # stops the ranks it spawned
            close()


class _RemoteOptimizer:
    """What the runner touches of the optimizer (its state, for checkpoints and resume)."""

    def __init__(self, actor, ray):
        self._actor, self._ray = actor, ray

    def state_dict(self) -> dict:
        return self._ray.get(self._actor.optimizer_state.remote())

    def load_state_dict(self, state: dict) -> None:
        self._ray.get(self._actor.load_optimizer.remote(state))


class RayTrainer:
    """``PolicyTrainer`` in a Ray actor; ``step`` blocks (the runner calls it off the event loop)
    and leaves the new weights in ``model`` here too."""

    def __init__(self, model: torch.nn.Module, data_parallel: int = 1, sharding: str = "none", **kwargs):
        ray = _ray()
        self._ray, self.model = ray, model
        cpus = _actor_cpus(1, 0.25)
        cls = ray.remote(num_cpus=cpus, max_restarts=0)(TrainerActor)
        self.actor = cls.remote(copy.deepcopy(model).cpu(), kwargs, _threads(cpus), data_parallel, sharding)
        self.optimizer = _RemoteOptimizer(self.actor, ray)

    def step(self, groups) -> dict:
        stats, state = self._ray.get(self.actor.step.remote(groups))
        with torch.no_grad():
            self.model.load_state_dict(state)
        return stats

    def close(self) -> None:
        try:
            self._ray.get(self.actor.close.remote(), timeout=60)
        except Exception:  # noqa: BLE001 - a dead actor has nothing left to stop
            pass
        self._ray.kill(self.actor, no_restart=True)


__all__ = ["RayEnvHost", "RayPolicy", "RayReward", "RayTrainer", "ray_session"]
