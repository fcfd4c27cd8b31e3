import pytest

from longcat.engine.block_manager import BlockAllocator, OutOfPages, page_hash


def test_allocate_free_refcounts():
    a = BlockAllocator(4, 16)
    pages = [a.allocate() for _ in range(4)]
    assert sorted(pages) == [0, 1, 2, 3] and a.num_free == 0
    with pytest.raises(OutOfPages):
        a.allocate()
    a.share(pages[0])
    assert a.refcount[pages[0]] == 2
    a.free(pages[0])
    assert a.num_free == 0  # still owned once
    a.free(pages[0])
    assert a.num_free == 1
    with pytest.raises(ValueError, match="double free"):
        a.free(pages[0])
    with pytest.raises(ValueError, match="not in use"):
        a.share(pages[0])
    a.free_all(pages[1:])
    assert a.num_free == 4 and all(r == 0 for r in a.refcount)


def test_bad_sizes():
    with pytest.raises(ValueError, match="num_pages"):
        BlockAllocator(0, 16)
    with pytest.raises(ValueError, match="page_size"):
        BlockAllocator(4, 0)


def test_prefix_cache_revives_freed_page_until_reused():
    a = BlockAllocator(3, 4)
    p = a.allocate()
    key = page_hash(None, [1, 2, 3, 4], 0)
    a.register(p, key)
    a.free(p)
    assert a.num_free == 3 and a.num_cached == 1
    assert a.lookup(key) == p and a.refcount[p] == 1 and a.num_free == 2
    assert a.lookup(page_hash(None, [1, 2, 3, 5], 0)) is None
    assert a.lookup(page_hash(None, [1, 2, 3, 4], 1)) is None  # another weights epoch
    a.free(p)
    # Reuse order is oldest-free first: the two never-used pages go before the cached one.
    q1, q2 = a.allocate(), a.allocate()
    assert p not in (q1, q2) and a.num_cached == 1
    assert a.allocate() == p and a.num_cached == 0  # evicted on reuse
    assert a.lookup(key) is None


def test_register_first_writer_wins_and_clear():
    a = BlockAllocator(4, 2)
    p, q = a.allocate(), a.allocate()
    key = page_hash(None, [7, 7], 0)
    a.register(p, key)
    a.register(q, key)
    assert a.lookup(key) == p
    a.clear_prefix_cache()
    assert a.lookup(key) is None and a.num_cached == 0


def test_no_prefix_cache_when_disabled():
    a = BlockAllocator(2, 2, enable_prefix_caching=False)
    p = a.allocate()
    a.register(p, 5)
    assert a.lookup(5) is None
