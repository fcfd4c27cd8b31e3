"""Chunked, asynchronous page moves between two sets of per-layer caches (device <-> host tier,
or host <-> host on a CPU-only machine).

A transfer of many pages is cut into chunks of ``chunk_pages`` pages; each chunk moves all layers
with ``kv_copy_blocks`` and completes a ``CopyEvent`` of its own, so a consumer can compute on
chunk i while chunk i+1 moves (the report's chunk-level overlap; SGLang HiCache and LMCache do
the same layer- and chunk-wise). Where the copies run:

- CPU: one C++ worker thread per copier (``longcat::KvCopyQueue``, longcat/kv_copy_queue.h), chunks in submission
  order, every layer of a chunk in turn. The worker never takes the GIL: a transfer's chunks are
  queued in one call and a chunk's event is waited for with the GIL released, so the thread
  that computes is never kept waiting to hand the interpreter over (a worker written in Python
  took the GIL twice per chunk, and those hand-offs were what overlap could not hide). The
  worker's copies run on ``copy_threads`` threads (default 1: the worker owns one core): a copy that spread over the
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
import time
from typing import Optional, Sequence

import torch

from longcat import _C
from longcat.ops._common import dl
from longcat.ops.kv_cache import KvCopyMethod, kv_copy_blocks


class CopyEvent:
    """Completion of one chunk. ``wait()`` blocks until its pages have arrived and re-raises the
    copy's error, if any; ``done()`` asks without blocking. On the CPU it is a ticket of the
    copier's C++ queue; on CUDA an event recorded on the copy stream."""

    def __init__(self, pages: int, cuda_event: Optional[torch.cuda.Event] = None, queue=None, ticket: int = 0):
        self.pages = pages
        self._cuda = cuda_event
        self._queue, self._ticket = queue, ticket

    def done(self) -> bool:
        return self._cuda.query() if self._cuda is not None else self._queue.done(self._ticket)

    def wait(self, stream: Optional[torch.cuda.Stream] = None) -> None:
        """Block the host until the chunk is copied; on CUDA with ``stream``, make that stream
        wait instead (no host sync)."""
        if self._cuda is not None:
            if stream is not None:
                stream.wait_event(self._cuda)
            else:
                self._cuda.synchronize()
            return
        self._queue.wait(self._ticket)  # GIL released while it blocks; raises the chunk's error


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
        self._queue = None  # the CPU worker: started by the first copy

    def copy(self, src_ids: Sequence[int], dst_ids: Sequence[int]) -> list[CopyEvent]:
        """Queue the move; returns one event per chunk, in order. Ids are validated for the
        whole transfer before any chunk is queued (a bad id raises here, nothing moves)."""
        if self._stream is None:  # the C++ queue checks the whole transfer, then queues its chunks
            if self._queue is None:  # ... and every layer's pools, once, as it starts
                self._queue = _C.KvCopyQueue([dl(t) for t in self.src_caches], [dl(t) for t in self.dst_caches],
                                             int(self.method), self.copy_threads)
            src, dst = _id_tensor("src_ids", src_ids), _id_tensor("dst_ids", dst_ids)
            tickets = self._queue.submit(dl(src), dl(dst), self.chunk_pages)
            n = src.numel()
            return [CopyEvent(min(self.chunk_pages, n - i), queue=self._queue, ticket=t)
                    for i, t in zip(range(0, n, self.chunk_pages), tickets)]
        src = torch.as_tensor(list(src_ids), dtype=torch.int32)
        dst = torch.as_tensor(list(dst_ids), dtype=torch.int32)
        self._validate(src, dst)
        return [self._copy_cuda(src[i:i + self.chunk_pages], dst[i:i + self.chunk_pages])
                for i in range(0, src.numel(), self.chunk_pages)]

    def _validate(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        # CUDA: the op's rules for the whole transfer, so that no chunk can fail after others
        # moved: ids in range and distinct destinations (against the first layer: all layers
        # have the same page count), then a zero-page copy per layer checks the pools themselves.
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

    def close(self) -> None:
        """Finish the queued chunks and stop the worker (idempotent)."""
        if self._queue is not None:
            self._queue.close()
            self._queue = None
        if self._stream is not None:
            self._stream.synchronize()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _id_tensor(name: str, ids) -> torch.Tensor:
    """Page ids as the queue reads them: a 1-D int32 CPU tensor (it checks the range itself, so
    only ids that int32 cannot hold are refused here, before they could wrap into range)."""
    if not isinstance(ids, torch.Tensor):
        ids = list(ids)
        if not ids:
            return torch.zeros(0, dtype=torch.int32)
        try:  # dtype inferred, so floats and bools stay visible below
            ids = torch.as_tensor(ids)
        except (TypeError, ValueError, RuntimeError, OverflowError) as e:
            raise ValueError(f"ChunkedCopier.copy: argument '{name}' must hold int32 page ids ({e})") from None
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"ChunkedCopier.copy: argument '{name}' must hold integer page ids, got {ids.dtype}")
    if ids.dtype != torch.int32 and ids.numel() and (int(ids.min()) < -2**31 or int(ids.max()) >= 2**31):
        raise ValueError(f"ChunkedCopier.copy: argument '{name}' holds a page id outside int32: "
                         f"[{int(ids.min())}, {int(ids.max())}]")
    return ids.to(device="cpu", dtype=torch.int32).contiguous()


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
