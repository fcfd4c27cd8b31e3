"""Continuous batching: which sequences run this step, with how many new tokens.

Each step (as vLLM's V1 scheduler) first gives every running sequence its next tokens (one for a
decode, a chunk for an unfinished prefill) in arrival order, then fills what is left of the token
budget ``max_num_batched_tokens`` with waiting sequences, first come first served, chunking the
prompt that does not fit. A step that runs out of pages evicts the least recently scheduled
running sequence (the newest among equals), never the whole batch: with a host tier
(``engine/kv_swap.py``) that has room, its pages are swapped out and it waits in ``swapped``
with its latents; otherwise it is preempted for recompute (its pages are freed and it goes back
to the head of the waiting queue, to be prefilled again with its prompt and the tokens it has
generated).

With a host tier, device usage above ``high_watermark`` also swaps out running sequences this
step did not schedule, and swapped sequences come back before any new request is admitted:
their host -> device copy is queued at the end of a step (the prefetch) and runs while the
engine computes that step; the next ``schedule()`` waits for it before running them. Nothing the
host holds is ever recomputed.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Optional

from longcat.engine.block_manager import BlockAllocator, OutOfPages, page_hash
from longcat.engine.kv_swap import HostKVTier
from longcat.engine.sequence import SeqStatus, Sequence


@dataclass
class ScheduledStep:
    seqs: list[Sequence] = field(default_factory=list)
    num_tokens: list[int] = field(default_factory=list)     # new tokens of each scheduled sequence
    copies: list[tuple[int, int]] = field(default_factory=list)  # (src, dst) page copies (copy-on-write)
    preempted: list[Sequence] = field(default_factory=list)    # sent back for recompute
    swapped_out: list[Sequence] = field(default_factory=list)  # moved to the host tier
    swapped_in: list[Sequence] = field(default_factory=list)   # host -> device copy queued (run next step)

    @property
    def total_tokens(self) -> int:
        return sum(self.num_tokens)


class Scheduler:
    def __init__(self, allocator: BlockAllocator, max_num_seqs: int, max_num_batched_tokens: int,
                 host: Optional[HostKVTier] = None, high_watermark: float = 1.0):
        if not 0.0 < high_watermark <= 1.0:
            raise ValueError(f"Scheduler: 'high_watermark' must be in (0, 1], got {high_watermark!r}")
        self.allocator = allocator
        self.host = host
        self.high_watermark = high_watermark
        self.page_size = allocator.page_size
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []   # in arrival order: the newest is evicted first among equals
        self.swapped: deque[Sequence] = deque()  # in the host tier, oldest eviction first
        self.num_schedules = 0
        self.epoch = 0                      # weights epoch: part of every prefix-cache key
        self.num_preemptions = 0            # sequences sent back for recompute (out of pages, weight update)

    # ---- queues ----------------------------------------------------------------------------

    def add(self, seq: Sequence) -> None:
        seq.status = SeqStatus.WAITING
        self.waiting.append(seq)

    def add_running(self, seq: Sequence) -> None:
        """A forked sample: already holds (shared) pages and computed tokens."""
        seq.status = SeqStatus.RUNNING
        self.running.append(seq)

    def finish(self, seq: Sequence) -> None:
        """Remove a sequence from the queues and give its pages back."""
        if seq.status is SeqStatus.RUNNING:
            self.running.remove(seq)
        elif seq.status is SeqStatus.WAITING:
            self.waiting.remove(seq)
        elif seq.status is SeqStatus.SWAPPED:
            self.swapped.remove(seq)
        self._release(seq)
        seq.status = SeqStatus.FINISHED

    def has_work(self) -> bool:
        return bool(self.waiting or self.running or self.swapped)

    def _release(self, seq: Sequence) -> None:
        if seq.host_pages:
            self.host.discard(seq.seq_id, seq.host_pages)
        self.allocator.free_all(seq.pages)
        seq.pages, seq.host_pages, seq.page_keys, seq.num_computed = [], [], [], 0

    def preempt(self, seq: Sequence) -> None:
        """Free a running sequence's pages and requeue it at the head (recomputed later)."""
        self.running.remove(seq)
        self._release(seq)
        seq.status = SeqStatus.WAITING
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def preempt_all(self) -> None:
        """Requeue every running and swapped sequence, running ones first, each group in its
        order (after a weight update: their latents are stale)."""
        for seq in reversed(self.swapped):
            self._release(seq)
            seq.status = SeqStatus.WAITING
            self.waiting.appendleft(seq)
            self.num_preemptions += 1
        self.swapped.clear()
        for seq in reversed(list(self.running)):
            self.preempt(seq)

    # ---- the host tier ---------------------------------------------------------------------

    def _victim(self, scheduled: set[int]) -> Optional[Sequence]:
        """The running sequence to evict: least recently scheduled, the newest among equals,
        never one already scheduled this step."""
        best = None
        for seq in reversed(self.running):
            if seq.seq_id not in scheduled and (best is None or seq.last_scheduled < best.last_scheduled):
                best = seq
        return best

    def _evict(self, seq: Sequence, step: ScheduledStep) -> None:
        """Swap seq out to the host tier when it has room, else preempt it for recompute."""
        if self.host is None:
            self.preempt(seq)
            step.preempted.append(seq)
            return
        if seq.host_pages:  # prefetched but not run yet: land the copy first
            self._finish_swap_in(seq)
        if len(seq.pages) > self.host.num_free:
            self.preempt(seq)
            step.preempted.append(seq)
            return
        self.running.remove(seq)
        seq.host_pages = self.host.swap_out(seq.pages)
        self.allocator.free_all(seq.pages)
        seq.pages = []
        seq.status = SeqStatus.SWAPPED
        self.swapped.append(seq)
        step.swapped_out.append(seq)

    def _above_watermark(self, extra_pages: int = 0) -> bool:
        used = self.allocator.num_pages - self.allocator.num_free + extra_pages
        return used > self.high_watermark * self.allocator.num_pages

    def _prefetch(self, step: ScheduledStep) -> None:
        """Queue the host -> device copies of swapped sequences (oldest first) that fit under
        the watermark (or that fit at all when nothing else runs); they run from the next step."""
        while self.swapped:
            seq = self.swapped[0]
            need = len(seq.host_pages)
            if len(self.running) + 1 > self.max_num_seqs or need > self.allocator.num_free:
                return
            if self.running and self._above_watermark(need):
                return
            self.swapped.popleft()
            seq.pages = [self.allocator.allocate() for _ in range(need)]
            self.host.start_swap_in(seq.seq_id, seq.host_pages, seq.pages)
            seq.last_scheduled = self.num_schedules  # not the next victim before it has run once
            seq.status = SeqStatus.RUNNING
            self.running.append(seq)
            step.swapped_in.append(seq)

    def _finish_swap_in(self, seq: Sequence) -> None:
        self.host.finish_swap_in(seq.seq_id, seq.host_pages, seq.num_computed)
        seq.host_pages = []
        if seq.kv_epoch == self.epoch:  # its full pages are findable again, at their new ids
            for page, key in zip(seq.pages, seq.page_keys):
                self.allocator.register(page, key)

    # ---- pages -----------------------------------------------------------------------------

    def _reserve(self, seq: Sequence, num_tokens: int, copies: list[tuple[int, int]]) -> bool:
        """Give seq the pages for its next num_tokens (copying a shared, partly filled last page
        it is about to write); all or nothing."""
        ps = self.page_size
        need = math.ceil((seq.num_computed + num_tokens) / ps) - len(seq.pages)
        cow = (seq.num_computed % ps != 0 and self.allocator.refcount[seq.pages[-1]] > 1)
        if need + cow > self.allocator.num_free:
            return False
        if cow:
            src = seq.pages[-1]
            dst = self.allocator.allocate()
            self.allocator.free(src)
            seq.pages[-1] = dst
            copies.append((src, dst))
        seq.pages.extend(self.allocator.allocate() for _ in range(need))
        return True

    def _match_prefix(self, seq: Sequence) -> None:
        """Take the cached pages of seq's leading full pages (leaving at least one token to
        compute, whose logits are needed)."""
        if not self.allocator.enable_prefix_caching:
            return
        ps = self.page_size
        parent = None
        for i in range((len(seq.token_ids) - 1) // ps):
            key = page_hash(parent, seq.token_ids[i * ps:(i + 1) * ps], self.epoch)
            page = self.allocator.lookup(key)
            if page is None:
                break
            seq.pages.append(page)
            seq.page_keys.append(key)
            parent = key
        seq.num_computed = len(seq.pages) * ps

    def register_full_pages(self, seq: Sequence) -> None:
        """Make seq's newly filled pages findable (only latents computed by the current weights)."""
        if not self.allocator.enable_prefix_caching or seq.kv_epoch != self.epoch:
            return
        ps = self.page_size
        for i in range(len(seq.page_keys), seq.num_computed // ps):
            parent = seq.page_keys[-1] if seq.page_keys else None
            key = page_hash(parent, seq.token_ids[i * ps:(i + 1) * ps], self.epoch)
            self.allocator.register(seq.pages[i], key)
            seq.page_keys.append(key)

    # ---- one step --------------------------------------------------------------------------

    def schedule(self) -> ScheduledStep:
        step = ScheduledStep()
        self.num_schedules += 1
        budget = self.max_num_batched_tokens
        scheduled: set[int] = set()
        if self.host is not None:  # last step's prefetches: their copies overlapped its compute
            for seq in self.running:
                if seq.host_pages:
                    self._finish_swap_in(seq)
        for seq in list(self.running):
            if budget == 0:
                break
            if seq.status is not SeqStatus.RUNNING:  # evicted earlier in this loop
                continue
            n = min(seq.num_uncomputed, budget)
            while not self._reserve(seq, n, step.copies):
                victim = self._victim(scheduled)
                if victim is None:  # cannot happen: a lone sequence always fits (see Engine._max_len)
                    raise OutOfPages("a single sequence does not fit in the KV cache")
                self._evict(victim, step)
                if victim is seq:
                    break
            else:
                scheduled.add(seq.seq_id)
                seq.last_scheduled = self.num_schedules
                step.seqs.append(seq)
                step.num_tokens.append(n)
                budget -= n
        if self.host is not None:
            while self._above_watermark():
                victim = self._victim(scheduled)
                if victim is None or len(victim.pages) > self.host.num_free:
                    break
                self._evict(victim, step)
            if not step.preempted and not step.swapped_out:
                self._prefetch(step)
        # New work only when nothing had to be evicted (it would just be evicted again) and no
        # swapped sequence waits (they hold latents and come first).
        while self.waiting and budget > 0 and not step.preempted and not step.swapped_out and not self.swapped:
            seq = self.waiting[0]
            req = seq.request
            slots = 1 if req.forked else req.params.n
            if len(self.running) + slots > self.max_num_seqs:
                break
            if not seq.pages:
                seq.kv_epoch = self.epoch
                self._match_prefix(seq)
            n = min(seq.num_uncomputed, budget)
            if not self._reserve(seq, n, step.copies):
                self._release(seq)
                break
            self.waiting.popleft()
            seq.status = SeqStatus.RUNNING
            seq.last_scheduled = self.num_schedules
            self.running.append(seq)
            step.seqs.append(seq)
            step.num_tokens.append(n)
            budget -= n
        return step
