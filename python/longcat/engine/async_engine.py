"""``AsyncEngine``: streaming generation for servers and RL rollouts (vLLM's ``AsyncLLM``).

One background thread owns the ``LLMEngine`` and runs its step loop; the event loop only posts
commands to it (add, abort, update weights: applied between steps, in order) and receives each
request's cumulative Completions through an ``asyncio.Queue``. The kernels and torch release the
GIL, so the event loop stays responsive while a step runs.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import queue
import threading
from typing import AsyncIterator, Callable, Optional

from longcat.engine.llm import build_engine
from longcat.engine.llm_engine import LLMEngine, Prompt
from longcat.engine.types import Completion, SamplingParams
from longcat.engine.weights import WeightsSource


class EngineDeadError(RuntimeError):
    """The step loop stopped on an error; every stream ends with it."""


class AsyncEngine:
    """``async for out in engine.generate(prompt, params)``; same constructor as ``LLM``."""

    def __init__(self, model_or_path, tokenizer=None, **engine_args):
        self.engine: LLMEngine = build_engine(model_or_path, tokenizer, **engine_args)
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._stop = False
        self._dead: Optional[BaseException] = None
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._ids = itertools.count()

    @classmethod
    def from_pretrained(cls, path, **engine_args) -> "AsyncEngine":
        return cls(path, **engine_args)

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def version(self) -> int:
        return self.engine.version

    @property
    def error(self) -> Optional[BaseException]:
        """None while the step loop is healthy; the error that stopped it otherwise (a server's
        /health answers 503 then)."""
        return self._dead

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="longcat-engine", daemon=True)
            self._thread.start()

    async def shutdown(self) -> None:
        """Abort what is running, stop the step loop and wait for it."""
        if self._thread is None:
            return
        if self._dead is None:
            await self._call(self._abort_all)
        self._stop = True
        self._wake.set()
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        self._thread = None

    async def __aenter__(self) -> "AsyncEngine":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.shutdown()

    # ---- the step thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop:
                self._wake.clear()
                while True:
                    try:
                        fn, fut = self._commands.get_nowait()
                    except queue.Empty:
                        break
                    self._execute(fn, fut)
                if self.engine.has_unfinished():
                    for req in self.engine.step():
                        self._publish(LLMEngine.snapshot(req))
                else:
                    self._wake.wait()
        except BaseException as e:  # a model error: fail every stream, refuse new work
            self._dead = e
            for rid in list(self._streams):
                self._publish_error(rid, EngineDeadError(f"engine step failed: {e!r}"))
        finally:
            while True:  # nothing posted after the loop ends may wait forever
                try:
                    _, fut = self._commands.get_nowait()
                except queue.Empty:
                    break
                fut.set_exception(EngineDeadError("the engine is shut down"))

    @staticmethod
    def _execute(fn: Callable, fut: concurrent.futures.Future) -> None:
        try:
            fut.set_result(fn())
        except BaseException as e:
            fut.set_exception(e)

    def _publish(self, out: Completion) -> None:
        stream = self._streams.get(out.request_id)
        if stream is None:
            return
        loop, q = stream
        if out.finished:
            self._streams.pop(out.request_id, None)
        loop.call_soon_threadsafe(q.put_nowait, out)

    def _publish_error(self, request_id: str, err: BaseException) -> None:
        stream = self._streams.pop(request_id, None)
        if stream is not None:
            stream[0].call_soon_threadsafe(stream[1].put_nowait, err)

    async def _call(self, fn: Callable):
        """Run fn on the step thread between steps and return its result (or raise its error)."""
        if self._dead is not None:
            raise EngineDeadError(f"engine step failed earlier: {self._dead!r}")
        await self.start()
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._commands.put((fn, fut))
        self._wake.set()
        return await asyncio.wrap_future(fut)

    def _abort_all(self) -> None:
        for rid in list(self.engine.requests):
            req = self.engine.abort(rid)
            if req is not None:
                self._publish(LLMEngine.snapshot(req))

    # ---- API ---------------------------------------------------------------------------------

    async def generate(self, prompt: Prompt, params: Optional[SamplingParams] = None,
                       request_id: Optional[str] = None) -> AsyncIterator[Completion]:
        """Cumulative Completions of one request, one per step that gave it tokens; the last has
        ``finished=True``. Leaving the loop early or cancelling the task aborts the request.
        Invalid params raise ValueError here; an unservable prompt yields one Completion with
        ``error`` set."""
        if request_id is None:
            request_id = f"async-{next(self._ids)}"
        q: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def add():
            if request_id in self._streams:
                raise ValueError(f"request_id {request_id!r} is already in use")
            req = self.engine.add_request(prompt, params, request_id)
            if req.error is None:
                self._streams[request_id] = (loop, q)
            return req

        req = await self._call(add)
        if req.error is not None:
            yield LLMEngine.snapshot(req)
            return
        finished = False
        try:
            while True:
                out = await q.get()
                if isinstance(out, BaseException):
                    raise out
                finished = out.finished
                yield out
                if finished:
                    return
        finally:
            if not finished:
                self._post_abort(request_id)

    def _post_abort(self, request_id: str) -> None:
        """Abort without waiting (from a generator being closed or cancelled)."""
        if self._dead is not None or self._thread is None:
            return

        def abort():
            self._streams.pop(request_id, None)
            self.engine.abort(request_id)

        self._commands.put((abort, concurrent.futures.Future()))
        self._wake.set()

    async def abort(self, request_id: str) -> None:
        """Stop a request; its stream ends with a Completion whose samples finish "abort"."""
        def abort():
            req = self.engine.abort(request_id)
            if req is not None:
                self._publish(LLMEngine.snapshot(req))

        await self._call(abort)

    async def update_weights(self, state_dict_or_path: WeightsSource, version: int, **kwargs) -> None:
        """New policy weights, applied between steps; running requests continue under them (their
        ``versions`` show the switch). A bad update raises and the old weights keep serving."""
        await self._call(lambda: self.engine.update_weights(state_dict_or_path, version, **kwargs))
