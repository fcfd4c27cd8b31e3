"""The host tier of the paged latent cache: sequences swapped out of the device pool wait here
with their latents, and come back without recomputing a token (report §4: a CPU-resident KV
cache swapped at a device-memory watermark).

``HostKVTier`` owns one host cache per attention sublayer (pinned when the device pool is on
CUDA, so copies are asynchronous DMA), a free list of host pages, two ``ChunkedCopier``s
(device -> host, host -> device) and the counters the engine reports. The scheduler decides who
moves (``scheduler.py``); this class moves pages and keeps the books.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Sequence

import torch

from longcat.engine.kv_transfer import ChunkedCopier, CopyEvent
from longcat.ops.kv_cache import zeros_on_huge_pages


class HostPoolFull(RuntimeError):
    """The host tier has fewer free pages than a swap-out needs (nothing was copied)."""


@dataclass
class SwapStats:
    """What swapping did: pages and bytes moved each way, host time spent waiting for copies
    (the stall the overlap did not hide), and prompt/output tokens whose latents came back from
    the host instead of being recomputed."""

    swap_outs: int = 0
    swap_ins: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    stall_seconds: float = 0.0
    tokens_recompute_avoided: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


class HostKVTier:
    def __init__(self, device_caches: Sequence[torch.Tensor], num_host_pages: int, chunk_pages: int = 16):
        if isinstance(num_host_pages, bool) or not isinstance(num_host_pages, int) or num_host_pages < 1:
            raise ValueError(f"HostKVTier: 'num_host_pages' must be an int >= 1, got {num_host_pages!r}")
        ref = device_caches[0]
        pin = ref.device.type == "cuda"
        # Pinned for a CUDA device; otherwise on huge pages (zeros_on_huge_pages: faster page copies).
        self.host_caches = [torch.zeros((num_host_pages,) + tuple(c.shape[1:]), dtype=c.dtype, pin_memory=True) if pin
                            else zeros_on_huge_pages((num_host_pages,) + tuple(c.shape[1:]), c.dtype)
                            for c in device_caches]
        self.num_pages = num_host_pages
        self.page_bytes = sum(c[0].numel() * c.element_size() for c in device_caches)
        self._free = list(range(num_host_pages - 1, -1, -1))  # a stack: low ids first
        # Swap-outs are waited for at once (their device pages are reused next): every kernel
        # thread copies. Swap-ins are prefetches that overlap the next step's compute: one
        # thread, so the copy owns a core instead of time-sharing the compute's.
        self._out = ChunkedCopier(device_caches, self.host_caches, chunk_pages, copy_threads=0)
        self._in = ChunkedCopier(self.host_caches, device_caches, chunk_pages, copy_threads=1)
        self._pending: dict[int, list[CopyEvent]] = {}   # seq id -> swap-in chunks not yet waited for
        self.stats = SwapStats()

    @property
    def num_free(self) -> int:
        return len(self._free)

    def swap_out(self, device_pages: Sequence[int]) -> list[int]:
        """Copy the pages to freshly taken host pages and wait (the device pages are reused right
        after); returns the host pages. HostPoolFull, with nothing copied, when they do not fit."""
        n = len(device_pages)
        if n > len(self._free):
            raise HostPoolFull(f"host KV tier: {n} pages to swap out, {len(self._free)} of {self.num_pages} free")
        host = [self._free.pop() for _ in range(n)]
        try:
            events = self._out.copy(device_pages, host)
        except BaseException:
            self._free.extend(reversed(host))
            raise
        self._wait(events)
        self.stats.swap_outs += 1
        self.stats.bytes_out += n * self.page_bytes
        return host

    def start_swap_in(self, seq_id: int, host_pages: Sequence[int], device_pages: Sequence[int]) -> None:
        """Queue host -> device copies of a sequence's pages (the prefetch); ``finish_swap_in``
        waits for them before the sequence runs."""
        self._pending[seq_id] = self._in.copy(host_pages, device_pages)
        self.stats.swap_ins += 1
        self.stats.bytes_in += len(host_pages) * self.page_bytes

    def finish_swap_in(self, seq_id: int, host_pages: Sequence[int], tokens: int) -> None:
        """Wait for a prefetched sequence's pages, then give its host pages back."""
        events = self._pending.pop(seq_id, None)
        if events is None:
            return
        self._wait(events)
        self.free(host_pages)
        self.stats.tokens_recompute_avoided += tokens

    def is_pending(self, seq_id: int) -> bool:
        return seq_id in self._pending

    def discard(self, seq_id: int, host_pages: Sequence[int]) -> None:
        """A swapped or prefetching sequence that ends (finished, aborted, preempted for
        recompute): wait for any copy still using its pages, then free its host pages."""
        events = self._pending.pop(seq_id, None)
        if events is not None:
            self._wait(events)
        self.free(host_pages)

    def free(self, host_pages: Sequence[int]) -> None:
        self._free.extend(host_pages)

    def _wait(self, events: Sequence[CopyEvent]) -> None:
        t0 = time.perf_counter()
        for ev in events:
            ev.wait()
        self.stats.stall_seconds += time.perf_counter() - t0

    def close(self) -> None:
        self._out.close()
        self._in.close()
