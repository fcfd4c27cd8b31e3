"""Pages of the paged latent cache: a free list, refcounts, prefix sharing and copy-on-write.

One pool of ``num_pages`` page ids indexes every attention sublayer's cache (page ``p`` of the
model's first sublayer and page ``p`` of its last hold the same tokens), so one allocator serves
them all. A page is shared by refcount: ``n > 1`` samples of one request fork the prompt's pages,
and full pages are found again by content hash across requests (prefix caching, as vLLM's: the
hash of a full page chains the previous page's hash, its token ids and the weights epoch, so a
weight update makes every old page unreachable). Pages whose refcount falls to zero keep their
hash and stay findable until they are reused, oldest first (LRU).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional, Sequence


class OutOfPages(RuntimeError):
    """No free page is left; the scheduler answers by preempting a sequence."""


def page_hash(parent: Optional[int], tokens: Sequence[int], epoch: int) -> int:
    """The prefix-cache key of a full page: its tokens, everything before them (the parent
    page's key) and the weights epoch (KV computed by other weights is never reused)."""
    return hash((parent, tuple(tokens), epoch))


class BlockAllocator:
    """Page ids ``0 .. num_pages - 1`` with refcounts and an optional prefix cache."""

    def __init__(self, num_pages: int, page_size: int, enable_prefix_caching: bool = True):
        if num_pages < 1:
            raise ValueError(f"BlockAllocator: argument 'num_pages' must be >= 1, got {num_pages}")
        if page_size < 1:
            raise ValueError(f"BlockAllocator: argument 'page_size' must be >= 1, got {page_size}")
        self.num_pages = num_pages
        self.page_size = page_size
        self.enable_prefix_caching = enable_prefix_caching
        self.refcount = [0] * num_pages
        # Free pages in reuse order (oldest first); values unused. Pages still holding a hash sit
        # here too, so a later request can revive them until they are handed out again.
        self._free: OrderedDict[int, None] = OrderedDict((p, None) for p in range(num_pages))
        self._hash_of: dict[int, int] = {}  # page -> its prefix-cache key
        self._page_of: dict[int, int] = {}  # prefix-cache key -> page

    @property
    def num_free(self) -> int:
        return len(self._free)

    def allocate(self) -> int:
        """A fresh page with refcount 1 (evicting the least recently freed cached page)."""
        if not self._free:
            raise OutOfPages("no free page in the KV cache")
        page, _ = self._free.popitem(last=False)
        key = self._hash_of.pop(page, None)
        if key is not None:
            del self._page_of[key]
        self.refcount[page] = 1
        return page

    def share(self, page: int) -> None:
        """One more owner of a page in use (a forked sample)."""
        if self.refcount[page] < 1:
            raise ValueError(f"BlockAllocator.share: page {page} is not in use")
        self.refcount[page] += 1

    def free(self, page: int) -> None:
        """Drop one owner; the page returns to the free list when the last owner leaves."""
        if self.refcount[page] < 1:
            raise ValueError(f"BlockAllocator.free: page {page} is already free (double free)")
        self.refcount[page] -= 1
        if self.refcount[page] == 0:
            self._free[page] = None

    def free_all(self, pages: Sequence[int]) -> None:
        # Tail pages first, so the prompt's head pages are the last to be evicted (vLLM's order).
        for page in reversed(pages):
            self.free(page)

    # ---- prefix cache --------------------------------------------------------------------------

    def lookup(self, key: int) -> Optional[int]:
        """The cached page with this key, now owned by the caller (refcount + 1), or None."""
        page = self._page_of.get(key)
        if page is None:
            return None
        if self.refcount[page] == 0:
            del self._free[page]
        self.refcount[page] += 1
        return page

    def register(self, page: int, key: int) -> None:
        """Make a full page findable by its key (first writer wins; duplicates stay private)."""
        if not self.enable_prefix_caching or key in self._page_of or page in self._hash_of:
            return
        self._hash_of[page] = key
        self._page_of[key] = page

    def clear_prefix_cache(self) -> None:
        """Forget every key (after a weight update nothing cached may be reused)."""
        self._hash_of.clear()
        self._page_of.clear()

    @property
    def num_cached(self) -> int:
        return len(self._page_of)
