"""moe_grouped_swiglu's CPU workspace kept between calls (one per calling thread, up to
_WS_CACHE_MAX_BYTES): stale scratch from an earlier call of another shape, F = 0, NaN input,
empty experts, every ISA copy, thread counts, concurrent callers, inference mode."""
import threading

import pytest
import torch

import longcat
from longcat.ops import moe_gemm as moe_gemm_mod
from longcat.ops import moe_grouped_swiglu, reference


def weights(E, H, F, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    w13 = (torch.randn(E, 2 * F, H, generator=g) / max(H, 1) ** 0.5).to(dtype)
    w2 = (torch.randn(E, H, F, generator=g) / max(F, 1) ** 0.5).to(dtype)
    return w13, w2


def rows(R, H, dtype, seed=1):
    return torch.randn(R, H, generator=torch.Generator().manual_seed(seed)).to(dtype)


def offsets_of(counts):
    return torch.tensor([0, *torch.tensor(counts).cumsum(0).tolist()], dtype=torch.int32)


def assert_matches(got, want):
    if got.dtype == torch.bfloat16:
        torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2, equal_nan=True)
    else:
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4, equal_nan=True)


@pytest.fixture
def fresh_cache():
    """Each test starts without a kept workspace on this thread, and leaves none behind."""
    moe_gemm_mod._ws_cache.__dict__.clear()
    yield
    moe_gemm_mod._ws_cache.__dict__.clear()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_reused_workspace_across_shapes(cpu_isa, dtype, fresh_cache):
    # Large first (the kept buffer then holds its packed rows, h and tiles), then smaller and
    # ragged calls on the same buffer: streamed (<= 8 rows per expert) and blocked tiles, empty
    # experts first / last / between, a NaN row, F = 0 after scratch full of NaN, and a call
    # that needs a larger buffer again.
    H = 96
    cases = [
        (200, 64, [0, 100, 3, 0, 97]),     # blocked tiles, empty first expert
        (5, 64, [1, 0, 2, 2, 0]),          # streamed tiles only
        (45, 40, [0, 0, 37, 8, 0]),        # a partial row block next to a streamed one
        (130, 40, [60, 0, 0, 0, 70]),      # NaN in row 3 (expert 0) below
        (12, 0, [4, 4, 0, 0, 4]),          # F = 0: zeros, whatever the scratch holds
        (9, 24, [0, 9, 0, 0, 0]),          # after the NaN call: must be finite
        (400, 64, [90, 110, 0, 100, 100]), # a larger workspace than any before
    ]
    for i, (R, F, counts) in enumerate(cases):
        w13, w2 = weights(len(counts), H, F, dtype, seed=i)
        x = rows(R, H, dtype, seed=100 + i)
        if R == 130:
            x[3, 5] = float("nan")
        off = offsets_of(counts)
        got = moe_grouped_swiglu(x, off, w13, w2)
        want = reference.moe_grouped_swiglu(x, off, w13, w2)
        assert_matches(got, want)
        if F == 0:
            assert torch.count_nonzero(got) == 0
        if R == 130:
            assert torch.isnan(got[3]).all() and torch.isfinite(got[torch.arange(R) != 3]).all()
        if R == 9:
            assert torch.isfinite(got).all()


def test_buffer_kept_and_grown_per_thread(fresh_cache):
    w13, w2 = weights(4, 64, 32, torch.bfloat16)
    x = rows(64, 64, torch.bfloat16)
    off = offsets_of([16, 16, 16, 16])
    moe_grouped_swiglu(x, off, w13, w2)
    first = moe_gemm_mod._ws_cache.buf
    assert first.numel() >= moe_gemm_mod.workspace_size(64, 64, 32, 4, torch.bfloat16)
    moe_grouped_swiglu(x[:8], offsets_of([2, 2, 2, 2]), w13, w2)
    assert moe_gemm_mod._ws_cache.buf is first  # a smaller call reuses it
    x_big = rows(512, 64, torch.bfloat16)
    got = moe_grouped_swiglu(x_big, offsets_of([128] * 4), w13, w2)
    assert moe_gemm_mod._ws_cache.buf.numel() > first.numel()  # grown, not overrun
    assert_matches(got, reference.moe_grouped_swiglu(x_big, offsets_of([128] * 4), w13, w2))


def test_workspace_over_the_cap_is_not_kept(monkeypatch, fresh_cache):
    monkeypatch.setattr(moe_gemm_mod, "_WS_CACHE_MAX_BYTES", 1024)
    w13, w2 = weights(2, 64, 32, torch.float32)
    x = rows(40, 64, torch.float32)
    off = offsets_of([20, 20])
    got = moe_grouped_swiglu(x, off, w13, w2)
    assert getattr(moe_gemm_mod._ws_cache, "buf", None) is None
    assert_matches(got, reference.moe_grouped_swiglu(x, off, w13, w2))


def test_more_threads_grow_the_kept_workspace(fresh_cache):
    before = longcat.num_threads()
    w13, w2 = weights(3, 128, 64, torch.bfloat16)
    x = rows(300, 128, torch.bfloat16)
    off = offsets_of([100, 150, 50])
    want = reference.moe_grouped_swiglu(x, off, w13, w2)
    try:
        longcat.set_num_threads(1)
        assert_matches(moe_grouped_swiglu(x, off, w13, w2), want)
        small = moe_gemm_mod._ws_cache.buf.numel()
        longcat.set_num_threads(4)
        assert_matches(moe_grouped_swiglu(x, off, w13, w2), want)
        assert moe_gemm_mod._ws_cache.buf.numel() > small  # room for 4 threads' tiles
    finally:
        longcat.set_num_threads(before)


def test_concurrent_callers_use_their_own_workspace(fresh_cache):
    # Two threads calling at once (the kernel runs without the GIL): each keeps its own buffer,
    # so neither sees the other's scratch.
    results, errors, bufs = {}, [], {}
    barrier = threading.Barrier(2)

    def worker(k):
        try:
            R, H, F = (256, 128, 64) if k == 0 else (96, 64, 128)
            w13, w2 = weights(4, H, F, torch.bfloat16, seed=k)
            x = rows(R, H, torch.bfloat16, seed=10 + k)
            off = offsets_of([R // 4] * 4)
            want = reference.moe_grouped_swiglu(x, off, w13, w2)
            barrier.wait()
            for _ in range(20):
                assert_matches(moe_grouped_swiglu(x, off, w13, w2), want)
            bufs[k] = moe_gemm_mod._ws_cache.buf.data_ptr()
            results[k] = True
        except Exception as e:  # surfaced below with the thread's failure
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert results == {0: True, 1: True}
    assert bufs[0] != bufs[1]


def test_inference_mode_then_autograd(fresh_cache):
    w13, w2 = weights(2, 64, 32, torch.float32)
    x = rows(24, 64, torch.float32)
    off = offsets_of([10, 14])
    with torch.inference_mode():
        y0 = moe_grouped_swiglu(x, off, w13, w2)  # the kept buffer is made here
    xg = x.clone().requires_grad_()
    y = moe_grouped_swiglu(xg, off, w13, w2)
    y.sum().backward()
    assert_matches(y.detach(), y0)
    assert xg.grad is not None and torch.isfinite(xg.grad).all()
