"""Worker backends of ``EnvService``: each worker hosts an ``EnvHost`` and answers requests.

* ``LocalWorker``: a process forked by the ``Zygote`` (``python -m longcat.envs.service.worker
  --zygote FD``, which imported everything once), talking over a Unix socket pair with
  length-prefixed pickles; the parent side is asyncio streams, so a hung worker never blocks
  the event loop (writes are buffered, the caller's timeout fires). With ``cpus`` in its
  config it pins itself to them (``pin_to_cpus``) before it serves.
* ``RayWorker``: the same ``EnvHost`` as a Ray actor (``ray.remote``), on whatever node Ray
  places it; its method calls are awaited as ObjectRefs.

Both give ``submit(msg) -> asyncio.Future`` (the host's reply; ``WorkerLost`` when the worker
dies first), ``start()``, ``kill()``, ``alive`` and ``pid``. Requests to one worker are handled in
the order they were submitted (one socket; Ray orders an actor's calls from one caller)."""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import time

__all__ = ["WorkerLost", "CallTimeout", "LocalWorker", "RayWorker", "Zygote", "pin_to_cpus",
           "usable_cpus"]

_HDR = struct.Struct("!I")


class WorkerLost(RuntimeError):
    """The worker died (crashed or was killed) before answering."""


class CallTimeout(WorkerLost):
    """The call a stalled worker was stuck in (the worker was killed for it)."""


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (all of them where the OS cannot tell)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _fail(pending: dict, pid, stalled: bool) -> None:
    """A worker answers in order, so the oldest unanswered call is the one it was stuck in."""
    for i, fut in enumerate(pending.values()):
        if not fut.done():
            fut.set_exception(CallTimeout(f"worker {pid} was stuck in this call and was "
                                          "killed") if stalled and i == 0 else
                              WorkerLost(f"worker {pid} died"))


def _observe(fut: asyncio.Future) -> None:
    if not fut.cancelled():
        fut.exception()


class LocalWorker:
    def __init__(self, config: dict, zygote: "Zygote", start_timeout: float = 120.0):
        self.config = config
        self.zygote = zygote
        self.start_timeout = start_timeout
        self.pending: dict[int, asyncio.Future] = {}
        self._ids = itertools.count()
        self.alive = False
        self.pid: int | None = None
        self.on_lost = None   # called once when the process is found dead
        self.last_progress = time.monotonic()   # last reply (or first request after idling)

    async def start(self) -> None:
        parent, child = socket.socketpair()
        try:
            self.pid = await self.zygote.spawn(child.fileno())
        finally:
            child.close()
        self.reader, self.writer = await asyncio.open_unix_connection(sock=parent)
        self.alive = True
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop())
        self._write(-1, self.config)
        try:
            await asyncio.wait_for(asyncio.shield(self.submit(("ping",))), self.start_timeout)
        except BaseException:
            self.kill()
            raise

    def _write(self, rid: int, msg) -> None:
        body = pickle.dumps((rid, msg), protocol=pickle.HIGHEST_PROTOCOL)
        self.writer.write(_HDR.pack(len(body)) + body)

    def submit(self, msg) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        if not self.alive:
            fut.set_exception(WorkerLost(f"worker {self.pid} is not running"))
            return fut
        fut.add_done_callback(_observe)   # a caller that gave up must not leave noise
        rid = next(self._ids)
        if not self.pending:
            self.last_progress = time.monotonic()
        self.pending[rid] = fut
        self._write(rid, msg)
        return fut

    async def _read_loop(self) -> None:
        try:
            while True:
                n = _HDR.unpack(await self.reader.readexactly(_HDR.size))[0]
                rid, reply = pickle.loads(await self.reader.readexactly(n))
                fut = self.pending.pop(rid, None)
                self.last_progress = time.monotonic()
                if fut is not None and not fut.done():
                    fut.set_result(reply)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self._lost()

    def _lost(self, stalled: bool = False) -> None:
        if not self.alive and not self.pending:
            return
        self.alive = False
        pending, self.pending = self.pending, {}
        _fail(pending, self.pid, stalled)
        if self.on_lost is not None:
            self.on_lost()

    def kill(self, stalled: bool = False) -> None:
        """Ends the process now (SIGKILL); pending requests fail with ``WorkerLost``, or, when
        ``stalled``, the oldest (the one it was stuck in) with ``CallTimeout``."""
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        if self.alive:
            self.writer.close()
            self._lost(stalled)

    async def stop(self) -> None:
        self.on_lost = None
        if self.alive:
            self.writer.close()   # EOF: the worker exits on its own, and the reader sees EOF
            self.alive = False    # nothing more is written to it
            await asyncio.wait({self._reader_task}, timeout=10)
        self.kill()
        self._reader_task.cancel()
        await asyncio.gather(self._reader_task, return_exceptions=True)


class Zygote:
    """A process that imported longcat (torch included) once and forks a worker on request:
    a worker (or its replacement after a crash) starts in milliseconds instead of seconds, and
    the workers share the interpreter's and torch's pages copy-on-write."""

    def __init__(self, start_timeout: float = 300.0):
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        import longcat

        parent, child = socket.socketpair()
        # the child finds this very longcat, whatever sys.path tricks the parent used
        root = os.path.dirname(os.path.dirname(os.path.abspath(longcat.__file__)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "longcat.envs.service.worker", "--zygote",
                 str(child.fileno())], pass_fds=[child.fileno()], stdin=subprocess.DEVNULL,
                env=env)
        finally:
            child.close()
        self.sock = parent
        parent.settimeout(self.start_timeout)
        ok = await asyncio.to_thread(parent.recv, 1)
        if ok != b"R":
            self.stop()
            raise WorkerLost(f"the worker zygote failed to start (exit status {self.proc.poll()})")

    def _spawn(self, fd: int) -> int:
        socket.send_fds(self.sock, [b"W"], [fd])
        data = b""
        while len(data) < 8:
            more = self.sock.recv(8 - len(data))
            if not more:
                raise WorkerLost(f"the worker zygote died (exit status {self.proc.poll()})")
            data += more
        return struct.unpack("!Q", data)[0]

    async def spawn(self, fd: int) -> int:
        """Forks a worker serving the socket ``fd``; returns its pid."""
        async with self._lock:
            if self.proc is None or self.proc.poll() is not None:
                await self.start()
            try:
                return await asyncio.to_thread(self._spawn, fd)
            except OSError as e:
                raise WorkerLost(f"the worker zygote failed: {e}") from None

    def stop(self) -> None:
        if self.proc is not None:
            self.sock.close()   # EOF: the zygote exits
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class RayWorker:
    """``EnvHost`` as a Ray actor; ``ray.init`` must have run (``EnvService`` does it)."""

    def __init__(self, config: dict, start_timeout: float = 300.0):
        self.config = config
        self.start_timeout = start_timeout
        self.alive = False
        self.pid: int | None = None
        self.actor = None
        self.last_progress = time.monotonic()
        self.pending: dict[int, asyncio.Future] = {}
        self._ids = itertools.count()

    async def start(self) -> None:
        import ray

        from .host import EnvHost

        cls = ray.remote(num_cpus=self.config.pop("num_cpus", 1), max_restarts=0)(EnvHost)
        self.actor = cls.remote(**self.config)
        self.alive = True
        try:
            self.pid = await asyncio.wait_for(self._call(("ping",)), self.start_timeout)
        except BaseException:
            self.kill()
            raise

    async def _call(self, msg):
        return (await self.submit(msg))[1]

    def submit(self, msg) -> asyncio.Future:
        import ray

        fut = asyncio.get_running_loop().create_future()
        if not self.alive:
            fut.set_exception(WorkerLost("ray actor is not running"))
            return fut
        fut.add_done_callback(_observe)
        if not self.pending:
            self.last_progress = time.monotonic()
        rid = next(self._ids)
        self.pending[rid] = fut
        ref_fut = asyncio.ensure_future(self.actor.handle.remote(msg))

        def done(f: asyncio.Future) -> None:
            self.pending.pop(rid, None)
            self.last_progress = time.monotonic()
            if fut.done():
                return
            if f.cancelled():
                fut.set_exception(WorkerLost("ray call cancelled"))
            elif isinstance(f.exception(), (ray.exceptions.RayActorError,
                                            ray.exceptions.WorkerCrashedError)):
                self.alive = False
                fut.set_exception(WorkerLost(f"ray actor died: {type(f.exception()).__name__}"))
            elif f.exception() is not None:
                fut.set_exception(f.exception())
            else:
                fut.set_result(f.result())
        ref_fut.add_done_callback(done)
        return fut

    def kill(self, stalled: bool = False) -> None:
        import ray

        if self.actor is not None:
            ray.kill(self.actor, no_restart=True)
        self.alive = False
        pending, self.pending = self.pending, {}
        _fail(pending, self.pid, stalled)

    async def stop(self) -> None:
        self.kill()


def zygote_main(fd: int) -> None:
    """Imports what workers need, then forks one per file descriptor received."""
    from . import host, sandbox  # noqa: F401 - preloaded for the forked workers
    from .. import runtime  # noqa: F401

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)   # workers are reaped by the kernel
    sock = socket.socket(fileno=fd)
    sock.sendall(b"R")
    while True:
        msg, fds, _, _ = socket.recv_fds(sock, 1, 1)
        if not msg or not fds:
            return
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                sock.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                worker_main(fds[0])
            except BaseException:  # noqa: BLE001 - a worker's death is seen by the service
                code = 1
            finally:
                os._exit(code)
        os.close(fds[0])
        sock.sendall(struct.pack("!Q", pid))


def pin_to_cpus(cpus) -> bool:
    """Pins this process to ``cpus`` (a worker per core keeps its caches warm and the workers
    off each other's cores); where the OS has no affinity call or refuses it, the process stays
    where the scheduler puts it. Returns whether it is pinned."""
    if not cpus or not hasattr(os, "sched_setaffinity"):
        return False
    try:
        os.sched_setaffinity(0, set(cpus))
    except (OSError, ValueError):
        return False
    return True


def worker_main(fd: int) -> None:
    """The local worker process: read a request, answer it, until the parent goes away."""
    from .host import EnvHost

    sock = socket.socket(fileno=fd)
    rfile = sock.makefile("rb")

    def read():
        hdr = rfile.read(_HDR.size)
        if len(hdr) < _HDR.size:
            return None
        return pickle.loads(rfile.read(_HDR.unpack(hdr)[0]))

    first = read()
    if first is None:
        return
    config = dict(first[1])
    pin_to_cpus(config.pop("cpus", None))
    host = EnvHost(**config)
    while True:
        req = read()
        if req is None:
            return
        rid, msg = req
        body = pickle.dumps((rid, host.handle(msg)), protocol=pickle.HIGHEST_PROTOCOL)
        sock.sendall(_HDR.pack(len(body)) + body)
