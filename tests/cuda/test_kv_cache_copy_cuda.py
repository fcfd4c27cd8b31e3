"""kv_copy_blocks on CUDA (csrc/cuda/kv_cache_copy.cu) against the plain-torch reference: every method
(copy kernel, cudaMemcpyBatchAsync, per-run cudaMemcpyAsync) in every direction (device ->
pinned host, pinned host -> device, device -> device), id patterns, NaN-poisoned pages never
read, the Auto choice, pageable host memory refused with nothing copied, and chunked copies on a
copy stream overlapping a computation on the default stream."""
from __future__ import annotations

import pytest
import torch

import longcat
from longcat.engine.kv_transfer import ChunkedCopier
from longcat.ops import KvCopyMethod, kv_copy_blocks, reference

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or longcat.build_info().get("cuda", "off").lower() != "on",
    reason="needs a CUDA device and a longcat built with its CUDA kernels")

CUDA_METHODS = [KvCopyMethod.KERNEL, KvCopyMethod.MEMCPY_BATCH, KvCopyMethod.MEMCPY_PER_BLOCK]
PATTERNS = {
    "sorted_run": (list(range(2, 30)), list(range(10, 38))),
    "permuted": ([7, 0, 5, 2, 9, 1, 33], [4, 11, 0, 8, 3, 6, 39]),
    "repeated_source": ([1, 1, 1, 4], [0, 2, 9, 5]),
    "split_runs": ([0, 1, 2, 5, 6, 9], [3, 4, 5, 0, 1, 11]),
}


def pool(pages, device, dtype=torch.bfloat16, page_size=64, seed=0, pin=False):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(pages, page_size, 1, 576, generator=g).to(dtype)
    return t.pin_memory() if pin else t.to(device)


def run(src, dst, s, d, method):
    want = dst.cpu().clone()
    reference.kv_copy_blocks(src.cpu(), want, torch.tensor(s), torch.tensor(d))
    stream = torch.cuda.Stream()  # cudaMemcpyBatchAsync refuses the legacy default stream
    used = kv_copy_blocks(src, dst, s, d, method, stream=stream)
    stream.synchronize()
    assert used == method
    assert torch.equal(dst.cpu(), want)


@pytest.mark.parametrize("method", CUDA_METHODS)
@pytest.mark.parametrize("direction", ["d2h", "h2d", "d2d"])
@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_methods_directions_patterns(method, direction, pattern):
    s, d = PATTERNS[pattern]
    src = pool(40, "cuda", seed=1, pin=direction == "h2d")
    dst = pool(48, "cuda", seed=2, pin=direction == "d2h")
    run(src, dst, s, d, method)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("page_size", [1, 3, 64])
def test_dtypes_and_page_sizes_with_unaligned_pages(dtype, page_size):
    # page_size 1 in fp16: 1152-byte pages (16-byte vectors); a pool starting 2 bytes into its
    # buffer forces the kernel's 2-byte path.
    src = pool(9, "cuda", dtype, page_size, seed=3)
    dst = pool(12, "cuda", dtype, page_size, seed=4, pin=True)
    run(src, dst, [8, 0, 3], [11, 2, 5], KvCopyMethod.KERNEL)
    if dtype != torch.float32:
        raw = torch.zeros(9 * page_size * 576 + 1, dtype=dtype, device="cuda")
        shifted = raw[1:].view(9, page_size, 1, 576)
        shifted.copy_(src)
        run(shifted, dst, [8, 0, 3], [1, 7, 4], KvCopyMethod.KERNEL)


def test_poisoned_pages_never_read():
    src = torch.full((64, 64, 1, 576), float("nan"), dtype=torch.bfloat16, device="cuda")
    keep = [3, 17, 40]
    src[keep] = pool(3, "cuda", seed=5)
    for method in CUDA_METHODS:
        dst = torch.zeros(8, 64, 1, 576, dtype=torch.bfloat16).pin_memory()
        stream = torch.cuda.Stream()
        kv_copy_blocks(src, dst, keep, [0, 5, 7], method, stream=stream)
        stream.synchronize()
        assert not torch.isnan(dst).any()
        assert torch.equal(dst[[0, 5, 7]], src[keep].cpu())


def test_auto_choice():
    dev = pool(600, "cuda", seed=6)
    host = pool(600, "cuda", seed=7, pin=True)
    stream = torch.cuda.Stream()
    assert kv_copy_blocks(dev, pool(600, "cuda"), [0, 1], [5, 9], stream=stream) == KvCopyMethod.KERNEL
    assert kv_copy_blocks(dev, host, [0, 1, 5], [5, 9, 2], stream=stream) == KvCopyMethod.MEMCPY_BATCH
    assert kv_copy_blocks(dev, host, list(range(8)), list(range(8)), stream=stream) == KvCopyMethod.MEMCPY_PER_BLOCK
    assert kv_copy_blocks(dev, host, [0, 1, 5], [5, 9, 2]) == KvCopyMethod.MEMCPY_PER_BLOCK  # default stream
    small = pool(600, "cuda", page_size=1, seed=8)
    small_host = pool(600, "cuda", page_size=1, seed=9, pin=True)
    scattered = list(range(0, 600, 2))
    assert kv_copy_blocks(small, small_host, scattered, scattered, stream=stream) == KvCopyMethod.KERNEL
    stream.synchronize()


def test_pageable_host_memory_refused_before_copying():
    src = pool(4, "cuda", seed=10)
    dst = torch.zeros(4, 64, 1, 576, dtype=torch.bfloat16)  # not pinned
    with pytest.raises(ValueError, match=r"'dst_pool' is host memory that is not pinned"):
        kv_copy_blocks(src, dst, [0, 1], [2, 3])
    torch.cuda.synchronize()
    assert torch.count_nonzero(dst) == 0
    with pytest.raises(ValueError, match=r"'dst_ids' must not repeat"):
        kv_copy_blocks(src, pool(4, "cuda", pin=True), [0, 1], [2, 2])
    with pytest.raises(ValueError, match=r"must be a CPU tensor"):
        kv_copy_blocks(src, pool(4, "cuda"), torch.tensor([0], dtype=torch.int32, device="cuda"), [1])


def test_chunked_copier_overlaps_compute_and_copy_stream_waits_for_the_producer():
    layers = 4
    dev = [pool(512, "cuda", seed=20 + i) for i in range(layers)]
    host = [torch.zeros(512, 64, 1, 576, dtype=torch.bfloat16).pin_memory() for _ in range(layers)]
    copier = ChunkedCopier(dev, host, chunk_pages=64)
    a = torch.randn(4096, 4096, device="cuda")
    # The producer writes page 0 on the current stream; the copy stream must see the write.
    for d in dev:
        d[0].fill_(3.0)
    events = copier.copy(list(range(256)), list(range(256)))
    b = a @ a  # runs on the default stream while the chunks move
    for e in events:
        e.wait()
    torch.cuda.synchronize()
    for d, h in zip(dev, host):
        assert torch.equal(h[:256], d[:256].cpu())
        assert bool((h[0] == 3.0).all())
    assert b.shape == (4096, 4096)
    copier.close()
