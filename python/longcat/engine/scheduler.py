"""Continuous batching: which sequences run this step, with how many new tokens.

Each step (as vLLM's V1 scheduler) first gives every running sequence its next tokens (one for a
decode, a chunk for an unfinished prefill) in arrival order, then fills what is left of the token
budget ``max_num_batched_tokens`` with waiting sequences, first come first served, chunking the
prompt that does not fit. A step that runs out of pages preempts the newest running sequence
(recompute: its pages are freed and it goes back to the head of the waiting queue, to be
prefilled again with its prompt and the tokens it has generated), never the whole batch.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from longcat.engine.block_manager import BlockAllocator, OutOfPages, page_hash
from longcat.engine.sequence import SeqStatus, Sequence


@dataclass
class ScheduledStep:
    seqs: list[Sequence] = field(default_factory=list)
    num_tokens: list[int] = field(default_factory=list)     # new tokens of each scheduled sequence
    copies: list[tuple[int, int]] = field(default_factory=list)  # (src, dst) page copies (copy-on-write)
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def total_tokens(self) -> int:
        return sum(self.num_tokens)


class Scheduler:
    def __init__(self, allocator: BlockAllocator, max_num_seqs: int, max_num_batched_tokens: int):
        self.allocator = allocator
        self.page_size = allocator.page_size
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []   # in arrival order: the last one is preempted first
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
        self._release(seq)
        seq.status = SeqStatus.FINISHED

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def _release(self, seq: Sequence) -> None:
        self.allocator.free_all(seq.pages)
        seq.pages, seq.page_keys, seq.num_computed = [], [], 0

    def preempt(self, seq: Sequence) -> None:
        """Free a running sequence's pages and requeue it at the head (recomputed later)."""
        self.running.remove(seq)
        self._release(seq)
        seq.status = SeqStatus.WAITING
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def preempt_all(self) -> None:
        """Requeue every running sequence, keeping their order (after a weight update)."""
        for seq in reversed(list(self.running)):
            self.preempt(seq)

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
        budget = self.max_num_batched_tokens
        scheduled: set[int] = set()
        for seq in list(self.running):
            if budget == 0:
                break
            if seq.status is not SeqStatus.RUNNING:  # preempted earlier in this loop
                continue
            n = min(seq.num_uncomputed, budget)
            while not self._reserve(seq, n, step.copies):
                victim = next((s for s in reversed(self.running) if s.seq_id not in scheduled), None)
                if victim is None:  # cannot happen: a lone sequence always fits (see Engine._max_len)
                    raise OutOfPages("a single sequence does not fit in the KV cache")
                self.preempt(victim)
                step.preempted.append(victim)
                if victim is seq:
                    break
            else:
                scheduled.add(seq.seq_id)
                step.seqs.append(seq)
                step.num_tokens.append(n)
                budget -= n
        # New work only when nothing had to be preempted (it would just be preempted again).
        while self.waiting and budget > 0 and not step.preempted:
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
            self.running.append(seq)
            step.seqs.append(seq)
            step.num_tokens.append(n)
            budget -= n
        return step
