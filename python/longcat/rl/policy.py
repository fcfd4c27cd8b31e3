"""``EnginePolicy``: the built-in engine as a multi-version RL policy (DORA's multi-version
streaming). Each live policy version has its own ``LLMEngine`` (weights + paged KV cache); a
trajectory pins one version for its whole life, so its tokens never mix versions, and a weight
update never waits for, interrupts or re-prefills in-flight trajectories: the new version gets an
engine of its own (a retired one, re-loaded through ``LLMEngine.update_weights``, when one is
free). An old version's engine retires when its last trajectory releases it; how many versions
can be live at once is bounded upstream by the staleness manager's admission control.

All engine calls run on one worker thread (the engines are not thread-safe); a driver task steps
every engine that has work and resolves the waiting ``generate`` calls."""
from __future__ import annotations

import asyncio
import copy
import itertools
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import torch

from longcat.engine.llm_engine import EngineArgs, LLMEngine
from longcat.engine.types import SamplingParams
from longcat.rl.protocols import Sample


class EnginePolicy:
    """``model``: the policy network (copied; the caller keeps training its own copy).
    ``sampling``: the fields of ``SamplingParams`` for every rollout (``logprobs`` is forced to 0:
    the sampled token's raw logprob, which TIS needs). ``engine_args``: ``EngineArgs`` fields."""

    def __init__(self, model: torch.nn.Module, tokenizer=None, *, sampling: Optional[dict] = None,
                 engine_args: Optional[dict] = None, version: int = 0):
        self._template = copy.deepcopy(model).eval()
        self._tokenizer = tokenizer
        self._engine_args = dict(engine_args or {})
        self._sampling = dict(sampling or {})
        SamplingParams(**self._sampling)  # unknown fields fail here, not mid-run
        self._version = version
        self._engines: dict[int, LLMEngine] = {version: self._new_engine(version)}
        self._spare: list[LLMEngine] = []
        self._pins: Counter = Counter()
        self._pending: dict[str, tuple[asyncio.Future, int]] = {}
        self._ids = itertools.count()
        self._exec = ThreadPoolExecutor(1, thread_name_prefix="longcat-rl-engine")
        self._driver: Optional[asyncio.Task] = None
        self.busy_s = 0.0  # time the engines spent stepping (generator idle time = wall - busy)
        self.max_live_versions = 1

    def _new_engine(self, version: int) -> LLMEngine:
        engine = LLMEngine(copy.deepcopy(self._template), self._tokenizer, EngineArgs(**self._engine_args))
        engine.version = version
        return engine

    @property
    def version(self) -> int:
        return self._version

    @property
    def live_versions(self) -> list[int]:
        return sorted(self._engines)

    def acquire_version(self) -> int:
        self._pins[self._version] += 1
        return self._version

    def pin(self, version: int) -> None:
        """Pin a live version that may not be the newest (a remote caller's pinned trajectory)."""
        if version not in self._engines:
            raise ValueError(f"pin: version {version} is not live (live: {self.live_versions})")
        self._pins[version] += 1

    def release_version(self, version: int) -> None:
        if self._pins[version] <= 0:
            raise ValueError(f"release_version: version {version} is not pinned")
        self._pins[version] -= 1
        self._retire()

    def _retire(self) -> None:
        busy = {v for _, v in self._pending.values()}
        for v in list(self._engines):
            if v != self._version and self._pins[v] == 0 and v not in busy:
                self._spare.append(self._engines.pop(v))
                del self._pins[v]

    async def _call(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._exec, fn, *args)

    async def generate(self, prompt_ids: list[int], n: int, version: int) -> list[Sample]:
        engine = self._engines.get(version)
        if engine is None:
            raise ValueError(f"generate: version {version} is not live (live: {self.live_versions}); "
                             "pin it with acquire_version() first")
        params = SamplingParams(**{**self._sampling, "n": n, "logprobs": 0})
        request_id = f"rl-{next(self._ids)}"
        fut = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (fut, version)
        try:
            req = await self._call(engine.add_request, list(prompt_ids), params, request_id)
            if req.error is not None:
                raise ValueError(f"generate: the engine refused the prompt: {req.error}")
            if self._driver is None or self._driver.done():
                self._driver = asyncio.get_running_loop().create_task(self._drive())
            req = await fut
        finally:
            self._pending.pop(request_id, None)
        out = []
        for o in req.outputs:
            logprobs = [lp[t] for lp, t in zip(o.logprobs, o.token_ids)]
            if len(set(o.versions)) > 1:  # the engine pool's promise; a violation must not train silently
                raise RuntimeError(f"generate: request {request_id} mixed policy versions {sorted(set(o.versions))}")
            out.append(Sample(list(req.prompt_token_ids), list(o.token_ids), logprobs, list(o.versions), o.text,
                              o.finish_reason))
        return out

    def _step_all(self) -> list:
        done = []
        for engine in list(self._engines.values()):
            if engine.has_unfinished():
                done += [r for r in engine.step() if r.finished]
        return done

    async def _drive(self) -> None:
        try:
            while self._pending:
                t0 = time.perf_counter()
                finished = await self._call(self._step_all)
                self.busy_s += time.perf_counter() - t0
                for req in finished:
                    entry = self._pending.get(req.request_id)
                    if entry is not None and not entry[0].done():
                        entry[0].set_result(req)
                await asyncio.sleep(0)
        except BaseException as e:  # an engine failure reaches every waiting caller
            for fut, _ in self._pending.values():
                if not fut.done():
                    fut.set_exception(e)
            raise

    async def update_weights(self, state_dict, version: int) -> None:
        """Make ``version`` the newest: trajectories pinned to older versions continue on their
        own engines; new ones get ``version``."""
        if version in self._engines:
            raise ValueError(f"update_weights: version {version} is already live")
        engine = self._spare.pop() if self._spare else None
        if engine is None:
            engine = await self._call(self._new_engine, version)
        await self._call(engine.update_weights, state_dict, version)
        self._engines[version] = engine
        self._version = version
        self.max_live_versions = max(self.max_live_versions, len(self._engines))
        self._retire()

    async def close(self) -> None:
        if self._driver is not None:
            self._driver.cancel()
            try:
                await self._driver
            except BaseException:
                pass
        self._exec.shutdown(wait=True)
