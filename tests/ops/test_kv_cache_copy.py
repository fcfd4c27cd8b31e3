"""kv_copy_blocks on the CPU against the plain-torch reference: id patterns (sorted, permuted,
runs, repeated sources, same pool), pools of different page counts, NaN-poisoned pages that must
never be read, non-temporal and cached stores on every ISA copy, and bad input that must leave
the destination untouched."""
import os
import subprocess
import sys

import pytest
import torch

from longcat.ops import KvCopyMethod, kv_copy_blocks, reference

DTYPES = [torch.float32, torch.bfloat16, torch.float16]  # float16 too: a host pool of a CUDA fp16 cache


def pool(pages, page_size=4, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(pages, page_size, 1, 576, generator=g).to(dtype)


def ids(xs):
    return torch.tensor(xs, dtype=torch.int32)


def check_copy(src, dst, s, d):
    want = dst.clone()
    reference.kv_copy_blocks(src, want, ids(s), ids(d))
    assert kv_copy_blocks(src, dst, ids(s), ids(d)) is KvCopyMethod.CPU_THREADS
    assert torch.equal(dst, want)


PATTERNS = {
    "empty": ([], []),
    "one": ([3], [0]),
    "sorted_run": (list(range(2, 10)), list(range(4, 12))),
    "permuted": ([7, 0, 5, 2, 9, 1], [4, 11, 0, 8, 3, 6]),
    "repeated_source": ([1, 1, 1, 4], [0, 2, 9, 5]),
    "split_runs": ([0, 1, 2, 5, 6, 9], [3, 4, 5, 0, 1, 11]),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_patterns_between_pools_of_different_sizes(cpu_isa, dtype, pattern):
    s, d = PATTERNS[pattern]
    check_copy(pool(10, dtype=dtype, seed=1), pool(12, dtype=dtype, seed=2), s, d)  # host tier larger
    s2 = [x % 8 for x in s]
    d2 = [x for x in d if x < 10]
    check_copy(pool(12, dtype=dtype, seed=3), pool(10, dtype=dtype, seed=4), s2[:len(d2)], d2)


@pytest.mark.parametrize("page_size,dtype,n", [(1, torch.float32, 40), (3, torch.float32, 40), (64, torch.float32, 200),
                                               (1, torch.bfloat16, 300), (3, torch.bfloat16, 100)])
def test_page_sizes_and_large_copies_use_every_store_path(cpu_isa, page_size, dtype, n):
    # The non-temporal threshold is 256 KiB per call: fp32 page sizes 3 and 64 cross it (40
    # pages of 3 rows are 276 KB), page size 1 (92 KB) stays on memcpy. bf16 pages of 1 and 3
    # rows (1152 and 3456 bytes) cross it and end in half a 256-byte block (the AVX-512 tail).
    # From 3 MiB per call the pool's threads share the pages (fp32, page size 64: 29 MB); below
    # it the caller copies alone.
    src, dst = pool(n, page_size, dtype, seed=5), pool(n + 7, page_size, dtype, seed=6)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(7)).tolist()
    check_copy(src, dst, perm, [p + 7 for p in range(n)])


def test_poisoned_pages_are_never_read():
    src = torch.full((16, 4, 1, 576), float("nan"))
    src[[2, 5, 11]] = pool(3, seed=8)
    dst = torch.zeros(8, 4, 1, 576)
    kv_copy_blocks(src, dst, [11, 2, 5], [0, 7, 3])
    assert torch.equal(dst[[0, 7, 3]], src[[11, 2, 5]])
    untouched = [i for i in range(8) if i not in (0, 7, 3)]
    assert torch.count_nonzero(dst[untouched]) == 0  # pages not named are not written
    # The check can fail: copying a poisoned page does show the NaN.
    kv_copy_blocks(src, dst, [0], [1])
    assert torch.isnan(dst[1]).all()


def test_same_pool_disjoint_pages():
    p = pool(10, seed=9)
    want = p.clone()
    want[[6, 7, 8]] = p[[0, 1, 0]]
    kv_copy_blocks(p, p, [0, 1, 0], [6, 7, 8])
    assert torch.equal(p, want)


def test_ids_as_lists_and_noncontiguous_tensors():
    src, dst = pool(6, seed=10), pool(6, seed=11)
    want = dst.clone()
    want[[1, 3]] = src[[4, 2]]
    kv_copy_blocks(src, dst, torch.tensor([4, 9, 2, 9], dtype=torch.int32)[::2], [1, 3])
    assert torch.equal(dst, want)


# ---- bad input: a clear error naming the argument, and dst unchanged ---------------------------

def expect_error(exc, match, src, dst, s, d, **kw):
    before = dst.clone()
    with pytest.raises(exc, match=match):
        kv_copy_blocks(src, dst, s, d, **kw)
    assert torch.equal(dst, before)


def test_out_of_range_ids():
    src, dst = pool(4), pool(6, seed=1)
    expect_error(ValueError, r"'src_ids' must hold page ids in \[0, 4\).*got 4 at index 1", src, dst, [0, 4], [0, 1])
    expect_error(ValueError, r"'dst_ids' must hold page ids in \[0, 6\).*got -1 at index 2", src, dst, [0, 1, 2],
                 [0, 1, -1])


def test_repeated_destination_rejected_before_any_copy():
    src, dst = pool(4), pool(6, seed=1)
    expect_error(ValueError, r"'dst_ids' must not repeat a destination page; page 2 appears at indices 0 and 3",
                 src, dst, [0, 1, 2, 3], [2, 4, 5, 2])


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_few_ids_into_a_large_pool(pattern):
    # Fewer than 1/16 of the destination pool's pages: duplicates are found by sorting the ids
    # (not a page-indexed table); same results and same errors.
    s, d = PATTERNS[pattern]
    check_copy(pool(10, page_size=1, seed=12), pool(200, page_size=1, seed=13), s, [x * 17 for x in d])


def test_repeats_and_same_pool_overlap_found_in_a_large_pool():
    src, dst = pool(8, page_size=1), pool(300, page_size=1, seed=1)
    # The first repeat in call order, named with its page's first writer.
    expect_error(ValueError, r"page 250 appears at indices 1 and 4", src, dst, [0, 1, 2, 3, 4, 5],
                 [7, 250, 9, 299, 250, 7])
    big = pool(300, page_size=1, seed=2)
    expect_error(ValueError, r"'src_ids' reads page 290 at index 2, which dst_ids\[1\] writes", big, big,
                 [1, 2, 290], [100, 290, 5])
    check_copy(big, big, [1, 2, 291], [100, 290, 5])


def test_overlap_within_one_pool_rejected():
    p = pool(8)
    expect_error(ValueError, r"'src_ids' reads page 3 .* dst_ids\[0\] writes in the same pool", p, p, [1, 3], [3, 5])
    # Two views sharing part of one buffer.
    big = pool(10)
    expect_error(ValueError, r"'dst_pool' overlaps 'src_pool'", big[:6], big[4:], [0], [5])


def test_shape_dtype_and_id_type_mismatches():
    src = pool(4)
    expect_error(TypeError, r"'dst_pool' must have the dtype of 'src_pool' \(float32\), got bfloat16", src, pool(4, dtype=torch.bfloat16), [0], [0])
    expect_error(ValueError, r"'dst_pool' must have size 4 in dimension 1 .*page_size", src, pool(4, page_size=8),
                 [0], [0])
    bad = torch.zeros(4, 4, 1, 512)
    expect_error(ValueError, r"'dst_pool' must have size 576 in dimension 3", src, bad, [0], [0])
    expect_error(ValueError, r"'dst_ids' must have size 2 in dimension 0", src, pool(4), [0, 1], [0])
    expect_error(TypeError, r"'src_ids' must be int32, got int64", src, pool(4), torch.tensor([0]), [0])
    expect_error(TypeError, r"'src_ids' must be an int32 tensor or a list of ints", src, pool(4), "0", [0])
    expect_error(ValueError, r"'src_pool' must be contiguous", pool(8)[::2], pool(4), [0], [0])
    expect_error(ValueError, r"'method' must be Auto or CpuThreads", src, pool(4), [0], [0],
                 method=KvCopyMethod.KERNEL)


def test_every_layer_in_one_call_and_a_bad_layer_or_id_writes_nothing():
    from longcat.ops.kv_cache import kv_copy_blocks_layers

    src = [pool(9, seed=20 + i) for i in range(3)]
    dst = [pool(12, seed=30 + i) for i in range(2)] + [pool(13, seed=32)]  # page counts may differ per layer
    s, d = [8, 0, 3, 4], [11, 2, 0, 5]
    want = [x.clone() for x in dst]
    for w, x in zip(want, src):
        reference.kv_copy_blocks(x, w, ids(s), ids(d))
    kv_copy_blocks_layers(src, dst, s, d)
    assert all(torch.equal(x, w) for x, w in zip(dst, want))
    # Refused before layer 0 moves: an id past the smallest pool of a side (named), a layer
    # whose pools kv_copy_blocks would refuse, a read of a page written in one pool, a count
    # mismatch.
    with pytest.raises(ValueError, match=r"'dst_ids' must hold page ids in \[0, 12\) \(dst_pools\[0\]"):
        kv_copy_blocks_layers(src, dst, [0], [12])
    with pytest.raises(TypeError, match=r"'dst_pools\[2\]' must have the dtype of 'src_pools\[2\]'"):
        kv_copy_blocks_layers(src, dst[:2] + [pool(12, dtype=torch.bfloat16)], [1], [1])
    with pytest.raises(ValueError, match=r"'dst_pools\[1\]' must have size 4 in dimension 1"):
        kv_copy_blocks_layers(src[:2], [dst[0], pool(12, page_size=8)], [1], [1])
    with pytest.raises(ValueError, match=r"'src_ids' reads page 5 at index 1, which dst_ids\[0\] writes"):
        kv_copy_blocks_layers([src[0], dst[1]], [dst[0], dst[1]], [1, 5], [5, 6])
    with pytest.raises(ValueError, match=r"'src_pools' and 'dst_pools' must hold the same number"):
        kv_copy_blocks_layers(src, dst[:2], [1], [1])
    assert all(torch.equal(x, w) for x, w in zip(dst, want))


_ONE_CORE_SCRIPT = r"""
import os, sys
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # the pool's workers all share the caller's core
import torch
import longcat
from longcat.ops import kv_copy_blocks, reference
assert longcat.num_threads() == 2, longcat.num_threads()
g = torch.Generator().manual_seed(0)
src = torch.randn(300, 64, 1, 576, generator=g).bfloat16()
for n in (16, 128, 300):  # 5 to 100 pieces of ~256 KiB, all claimed by the caller
    dst = torch.randn(400, 64, 1, 576, generator=g).bfloat16()
    s = torch.randperm(300, generator=g)[:n].to(torch.int32)
    d = torch.randperm(400, generator=g)[:n].to(torch.int32)
    s[1] = s[0]  # a repeated source
    want = dst.clone()
    reference.kv_copy_blocks(src, want, s, d)
    kv_copy_blocks(src, dst, s, d)
    assert torch.equal(dst, want), n
print("ok")
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")
def test_pool_workers_on_the_callers_core_leave_the_run_to_it():
    # Two pool threads confined to one core: every worker wakes on the caller's CPU and leaves
    # the run to the caller (thread_pool.cpp); every page must still arrive, nothing may hang.
    env = dict(os.environ, LONGCAT_NUM_THREADS="2", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", _ONE_CORE_SCRIPT], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


# ---- pools on huge pages (zeros_on_huge_pages: the engine's CPU pools) ---------------------------

@pytest.mark.parametrize("shape, dtype", [((40, 64, 1, 576), torch.bfloat16), ((3,), torch.float32),
                                          ((0, 64, 1, 576), torch.bfloat16), ((5 << 20,), torch.uint8)])
def test_zeros_on_huge_pages_is_a_zeroed_contiguous_tensor(shape, dtype):
    from longcat.ops import zeros_on_huge_pages

    t = zeros_on_huge_pages(shape, dtype)
    assert t.shape == shape and t.dtype == dtype and t.device.type == "cpu" and t.is_contiguous()
    assert not t.any()
    t.fill_(1)  # writable, every element
    assert t.all()


def test_pages_copy_between_pools_on_huge_pages():
    from longcat.ops import zeros_on_huge_pages

    src = zeros_on_huge_pages((48, 64, 1, 576))
    src.view(torch.int16).random_(-1000, 1000, generator=torch.Generator().manual_seed(0))
    dst = zeros_on_huge_pages((60, 64, 1, 576))
    s = torch.randperm(48, generator=torch.Generator().manual_seed(1))[:40].to(torch.int32)
    d = torch.randperm(60, generator=torch.Generator().manual_seed(2))[:40].to(torch.int32)
    want = dst.clone()
    want[d.long()] = src[s.long()]
    kv_copy_blocks(src, dst, s, d)
    assert torch.equal(dst.view(torch.int16), want.view(torch.int16))  # bitwise: the random bits hold NaNs
    del src  # the mapping lives as long as a view of it does
    assert torch.equal(dst[d.long()].view(torch.int16), want[d.long()].view(torch.int16))
