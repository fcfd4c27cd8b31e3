"""Chunked, asynchronous page moves between two sets of per-layer caches (device <-> host tier,
or host <-> host on a CPU-only machine).

A transfer of many pages is cut into chunks of ``chunk_pages`` pages; each chunk moves all layers
with ``kv_copy_blocks`` and completes a ``CopyEvent`` of its own, so a consumer can compute on
chunk i while chunk i+1 moves (the report's chunk-level overlap; SGLang HiCache and LMCache do
the same layer- and chunk-wise). Where the copies run:

- CPU: one worker thread per copier, chunks in submission order. It copies every layer of a
  chunk in one call that releases the GIL (``kv_copy_blocks_layers``), so it copies while the
  caller's thread computes and takes the GIL once per chunk. The worker's copies run on
  ``copy_threads`` threads (default 1: the worker owns one core): a copy that spread over the
  kernel pool would put its workers on the cores the compute threads use, and two sets of
  threads time-sharing the same cores hide nothing. The compute side then gets the other
  cores (``compute_threads``). ``longcat bench kv`` measures the one-thread copy against
  torch's one-thread copy, and the overlap with this split.
- CUDA: a dedicated copy stream. A chunk first waits (on the GPU) for the work already queued on
  the caller's current stream, which may still be writing the source pages, then records its
  completion event; ``CopyEvent.wait(stream=...)`` makes a stream wait on the GPU instead of the
  host.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

import longcat
from longcat.ops.kv_cache import KvCopyMethod, kv_copy_blocks, kv_copy_blocks_layers


class CopyEvent:
    """Completion of one chunk. ``wait()`` blocks until its pages have arrived and re-raises the
    copy's error, if any; ``done()`` asks without blocking."""

    def __init__(self, pages: int, cuda_event: Optional[torch.cuda.Event] = None):
        self.pages = pages
        self._cuda = cuda_event
        self._flag = threading.Event() if cuda_event is None else None
        self._error: Optional[BaseException] = None

    def _complete(self, error: Optional[BaseException] = None) -> None:
        self._error = error
        self._flag.set()

    def done(self) -> bool:
        return self._cuda.query() if self._cuda is not None else self._flag.is_set()

    def wait(self, stream: Optional[torch.cuda.Stream] = None) -> None:
        """Block the host until the chunk is copied; on CUDA with ``stream``, make that stream
        wait instead (no host sync)."""
        if self._cuda is not None:
            if stream is not None:
                stream.wait_event(self._cuda)
            else:
                self._cuda.synchronize()
            return
        self._flag.wait()
        if self._error is not None:
            raise self._error


@dataclass
class _Job:
    src_ids: torch.Tensor
    dst_ids: torch.Tensor
    event: CopyEvent


class ChunkedCopier:
    """Moves pages ``src_caches[l][src_ids[i]] -> dst_caches[l][dst_ids[i]]`` for every layer l,
    chunk by chunk, in the background. The caches are lists of ``[pages, page_size, 1, 576]``
    tensors (one per attention sublayer) with matching dtypes and page sizes. ``copy_threads``
    (CPU): kernel threads of the worker's copies, 0 for the whole pool."""

    def __init__(self, src_caches: Sequence[torch.Tensor], dst_caches: Sequence[torch.Tensor],
                 chunk_pages: int = 16, method: KvCopyMethod = KvCopyMethod.AUTO, copy_threads: int = 1):
        if len(src_caches) != len(dst_caches) or not src_caches:
            raise ValueError(f"ChunkedCopier: 'src_caches' and 'dst_caches' must hold the same number (>= 1) of "
                             f"layer caches, got {len(src_caches)} and {len(dst_caches)}")
        if isinstance(chunk_pages, bool) or not isinstance(chunk_pages, int) or chunk_pages < 1:
            raise ValueError(f"ChunkedCopier: 'chunk_pages' must be an int >= 1, got {chunk_pages!r}")
        if isinstance(copy_threads, bool) or not isinstance(copy_threads, int) or copy_threads < 0:
            raise ValueError(f"ChunkedCopier: 'copy_threads' must be an int >= 0 (0: the whole kernel pool), "
                             f"got {copy_threads!r}")
        self.copy_threads = copy_threads
        self.src_caches, self.dst_caches = list(src_caches), list(dst_caches)
        self.chunk_pages = chunk_pages
        self.method = KvCopyMethod(method)
        cuda = [c for c in self.src_caches[:1] + self.dst_caches[:1] if c.device.type == "cuda"]
        self.device = cuda[0].device if cuda else torch.device("cpu")
        self._stream = torch.cuda.Stream(self.device) if cuda else None
        self._jobs: Optional[queue.Queue] = None
        self._worker: Optional[threading.Thread] = None

    def copy(self, src_ids: Sequence[int], dst_ids: Sequence[int]) -> list[CopyEvent]:
        """Queue the move; returns one event per chunk, in order. Ids are validated for the
        whole transfer before any chunk is queued (a bad id raises here, nothing moves)."""
        src = torch.as_tensor(list(src_ids), dtype=torch.int32)
        dst = torch.as_tensor(list(dst_ids), dtype=torch.int32)
        self._validate(src, dst)
        events = []
        for i in range(0, src.numel(), self.chunk_pages):
            s, d = src[i:i + self.chunk_pages], dst[i:i + self.chunk_pages]
            if self._stream is not None:
                events.append(self._copy_cuda(s, d))
            else:
                ev = CopyEvent(s.numel())
                self._submit(_Job(s, d, ev))
                events.append(ev)
        return events

    def _validate(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        # The op's rules for the whole transfer, so that no chunk can fail after others moved:
        # ids in range and distinct destinations (against the first layer: all layers have the
        # same page count), then a zero-page copy per layer checks the pools themselves.
        if src.numel() != dst.numel():
            raise ValueError(f"ChunkedCopier.copy: 'dst_ids' must have one id per source ({src.numel()}), "
                             f"got {dst.numel()}")
        for name, ids, pool in (("src_ids", src, self.src_caches[0]), ("dst_ids", dst, self.dst_caches[0])):
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= pool.shape[0]):
                raise ValueError(f"ChunkedCopier.copy: '{name}' must hold page ids in [0, {pool.shape[0]}), got "
                                 f"{ids.tolist()}")
        if torch.unique(dst).numel() != dst.numel():
            raise ValueError(f"ChunkedCopier.copy: 'dst_ids' must not repeat a page, got {dst.tolist()}")
        for s, d in zip(self.src_caches, self.dst_caches):
            kv_copy_blocks(s, d, src[:0], dst[:0])  # pools: dtype, page size, pinning, devices

    def _copy_cuda(self, s: torch.Tensor, d: torch.Tensor) -> CopyEvent:
        ready = torch.cuda.current_stream(self.device).record_event()
        done = torch.cuda.Event()
        with torch.cuda.stream(self._stream):
            self._stream.wait_event(ready)
            for src_c, dst_c in zip(self.src_caches, self.dst_caches):
                kv_copy_blocks(src_c, dst_c, s, d, self.method, stream=self._stream)
            done.record(self._stream)
        return CopyEvent(s.numel(), done)

    # ---- CPU worker ----------------------------------------------------------------------------

    def _submit(self, job: _Job) -> None:
        if self._worker is None:
            self._jobs = queue.Queue()
            self._worker = threading.Thread(target=self._run, name="longcat-kv-copy", daemon=True)
            self._worker.start()
        self._jobs.put(job)

    def _run(self) -> None:
        longcat.set_thread_limit(self.copy_threads)  # this thread only
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:  # every layer in one call: the GIL is taken once per chunk
                kv_copy_blocks_layers(self.src_caches, self.dst_caches, job.src_ids, job.dst_ids, self.method)
            except BaseException as e:  # handed to whoever waits on the chunk
                job.event._complete(e)
            else:
                job.event._complete()

    def close(self) -> None:
        """Finish the queued chunks and stop the worker (idempotent)."""
        if self._worker is not None:
            self._jobs.put(None)
            self._worker.join()
            self._worker = None
        if self._stream is not None:
            self._stream.synchronize()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def compute_threads(copy_threads: int = 1) -> int:
    """Threads left for compute on the cores this process may use while a copier's worker holds
    ``copy_threads`` of them (at least 1)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus - copy_threads)


def wait_all(events: Sequence[CopyEvent]) -> float:
    """Wait for every event; returns the seconds spent waiting (the consumer's stall)."""
    t0 = time.perf_counter()
    for ev in events:
        ev.wait()
    return time.perf_counter() - t0
