"""Memory safety and bad input across the ops (issue 10, part 1), one regression test per hole:
negative / overflowing strides at the C++ API boundary (numpy views through longcat._C), the
thread count fixed for a whole op while another thread calls set_num_threads, index tensors
changed by another thread while an op runs, a thread pool that cannot start, F = 0, NaN in
attention on every ISA copy, partially overlapping outputs, checks that come before allocations.
Run under tools/asan_test.sh (AddressSanitizer) in CI, where an out-of-bounds access fails loudly."""
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import torch

import longcat
from longcat import _C
from longcat.ops import (SsaWindow, fused_add_rms_norm_, mla_decode, mla_decode_metadata, mla_gather, mla_prefill,
                         moe_grouped_swiglu, reference, rms_norm, ssa_decode)

UNUSED = 2147480000  # FlashMLA's filler for table entries past a sequence


def flipped(shape, dtype=np.float32, seed=0):
    """A numpy view with a negative stride along dim 0 (what a[::-1] gives)."""
    a = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    return a[::-1]


# ---- negative and overflowing strides, op by op, through longcat._C directly ----------------

def test_negative_stride_rms_norm():
    x, w, out = flipped((6, 8)), np.ones(8, np.float32), np.empty((6, 8), np.float32)
    with pytest.raises(ValueError, match=r"rms_norm: argument 'x' has a negative stride -8 in dimension 0"):
        _C.rms_norm(out, x, w, 1e-6)
    with pytest.raises(ValueError, match=r"rms_norm: argument 'out' has a negative stride"):
        _C.rms_norm(np.empty((6, 8), np.float32)[::-1], np.ascontiguousarray(x), w, 1e-6)


def test_negative_stride_fused_add_rms_norm():
    x, r = np.ones((6, 8), np.float32), flipped((6, 8))
    outs = [np.empty((6, 8), np.float32) for _ in range(2)]
    with pytest.raises(ValueError, match=r"fused_add_rms_norm: argument 'residual' has a negative stride"):
        _C.fused_add_rms_norm(outs[0], outs[1], x, r, np.ones(8, np.float32), 1e-6)


def test_negative_stride_moe_route():
    hidden, weight = flipped((5, 16)), np.ones((4, 16), np.float32)
    ids, wts = np.empty((5, 2), np.int32), np.empty((5, 2), np.float32)
    with pytest.raises(ValueError, match=r"moe_route: argument 'hidden' has a negative stride"):
        _C.moe_route(ids, wts, hidden, weight, None, 4, 0)


def test_negative_stride_moe_dispatch():
    x = flipped((4, 8))
    ids = np.array([[0], [1], [0], [1]], np.int32)
    counts, offsets = np.array([2, 2], np.int32), np.array([0, 2, 4], np.int32)
    x_perm, row_token, slot_row = np.empty((4, 8), np.float32), np.empty(4, np.int32), np.empty((4, 1), np.int32)
    with pytest.raises(ValueError, match=r"moe_dispatch: argument 'x' has a negative stride"):
        _C.moe_dispatch(x_perm, row_token, slot_row, x, ids, counts, offsets, 2)


def test_negative_stride_moe_combine():
    ids = np.array([[0], [1], [0], [1]], np.int32)
    slot_row, w = np.array([[0], [2], [1], [3]], np.int32), np.ones((4, 1), np.float32)
    x, y = np.ones((4, 8), np.float32), np.empty((4, 8), np.float32)
    with pytest.raises(ValueError, match=r"moe_combine: argument 'expert_out' has a negative stride"):
        _C.moe_combine(y, flipped((4, 8)), slot_row, ids, w, x, 2)


def test_negative_stride_mla_append_kv():
    kv = np.zeros((2, 4, 1, 576), np.float32)
    table, seq, pos = np.array([[0, 1]], np.int32), np.zeros(3, np.int32), np.arange(3, dtype=np.int32)
    with pytest.raises(ValueError, match=r"mla_append_kv: argument 'latent' has a negative stride"):
        _C.mla_append_kv(kv, flipped((3, 512)), np.zeros((3, 64), np.float32), table, seq, pos)
    assert not kv.any(), "nothing may be written when an argument is refused"


def test_overflowing_strides():
    base = np.zeros(16, np.float32)
    x = np.lib.stride_tricks.as_strided(base, shape=(2, 8), strides=(2 ** 62, 4))
    with pytest.raises(ValueError, match=r"rms_norm: argument 'x' has strides whose span overflows"):
        _C.rms_norm(np.empty((2, 8), np.float32), x, np.ones(8, np.float32), 1e-6)


# ---- the thread count is fixed for a whole op -------------------------------------------------

def test_set_num_threads_while_grouped_gemm_runs():
    before = longcat.num_threads()
    g = torch.Generator().manual_seed(0)
    E, H, F, R = 4, 64, 96, 200
    w13 = torch.randn(E, 2 * F, H, generator=g) / 8
    w2 = torch.randn(E, H, F, generator=g) / 8
    x = torch.randn(R, H, generator=g)
    offsets = torch.tensor([0, 50, 120, 120, 200], dtype=torch.int32)
    want = reference.moe_grouped_swiglu(x, offsets, w13, w2)
    stop = threading.Event()

    def flip():
        n = 0
        while not stop.is_set():
            longcat.set_num_threads(1 + n % 4)
            n += 1

    t = threading.Thread(target=flip)
    t.start()
    try:
        for _ in range(150):
            torch.testing.assert_close(moe_grouped_swiglu(x, offsets, w13, w2), want, rtol=1e-4, atol=1e-4)
    finally:
        stop.set()
        t.join()
        longcat.set_num_threads(before)


# ---- index tensors changed by another thread while the op runs -------------------------------

def _flipper(table, index, good, bad, stop):
    while not stop.is_set():
        table[index] = bad
        table[index] = good


def test_block_table_flipped_during_mla_decode():
    g = torch.Generator().manual_seed(3)
    seqlens = [700, 300]
    kv = torch.randn(20, 64, 1, 576, generator=g)
    table = torch.full((2, 16), UNUSED, dtype=torch.int32)
    table[0, :11] = torch.arange(11)
    table[1, :5] = torch.arange(11, 16)
    sl = torch.tensor(seqlens, dtype=torch.int32)
    q = torch.randn(2, 1, 16, 576, generator=g)
    want_out, want_lse = reference.mla_decode(q, kv, table, sl)
    stop = threading.Event()
    t = threading.Thread(target=_flipper, args=(table.numpy(), (0, 3), 3, UNUSED, stop))
    t.start()
    ok = refused = 0
    try:
        for _ in range(300):
            try:
                out, lse = mla_decode(q, kv, table, sl)
            except ValueError as e:  # validated while the entry was out of range
                assert "block_table" in str(e)
                refused += 1
                continue
            ok += 1  # validated with the good entry: the kernel must have read that one
            torch.testing.assert_close(out, want_out, rtol=2e-5, atol=2e-5)
            torch.testing.assert_close(lse, want_lse, rtol=2e-5, atol=2e-5)
    finally:
        stop.set()
        t.join()
    assert ok + refused == 300


def test_slot_row_flipped_during_moe_combine():
    g = torch.Generator().manual_seed(4)
    T, H, k = 256, 64, 2
    x = torch.randn(T, H, generator=g)
    expert_out = torch.randn(2 * T, H, generator=g)
    ids = torch.zeros(T, k, dtype=torch.int32)
    slot_row = torch.arange(T * k, dtype=torch.int32).reshape(T, k)
    w = torch.rand(T, k, generator=g)
    y = torch.empty(T, H)
    want = (w[..., None] * expert_out[slot_row.long()]).sum(1)
    stop = threading.Event()
    t = threading.Thread(target=_flipper, args=(slot_row.numpy(), (T - 1, 1), 2 * T - 1, 1 << 30, stop))
    t.start()
    try:
        for _ in range(300):
            try:
                _C.moe_combine(y, expert_out, slot_row, ids, w, x, 4)
            except ValueError as e:
                assert "slot_row" in str(e)
                continue
            torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)
    finally:
        stop.set()
        t.join()


# ---- a thread pool that cannot start ---------------------------------------------------------

def test_thread_pool_start_failure_leaves_a_working_pool():
    with pytest.raises(ValueError, match=r"set_num_threads: expected n in \[1, 1024\], got 100000"):
        longcat.set_num_threads(100000)
    script = textwrap.dedent("""
        import resource, torch, longcat
        longcat.set_num_threads(2)
        x, w = torch.randn(64, 256), torch.ones(256)
        want = longcat.ops.rms_norm(x, w)
        with open("/proc/self/statm") as f:
            vm = int(f.read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (vm + (64 << 20), resource.RLIM_INFINITY))
        try:
            longcat.set_num_threads(200)   # 199 thread stacks do not fit in 64 MiB more
        except RuntimeError as e:
            assert "could not start 200 threads" in str(e), e
        else:
            raise AssertionError("set_num_threads(200) started under a 64 MiB address-space margin")
        resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        assert longcat.num_threads() == 2, longcat.num_threads()
        torch.testing.assert_close(longcat.ops.rms_norm(x, w), want)
        longcat.set_num_threads(3)          # and the pool still resizes
        torch.testing.assert_close(longcat.ops.rms_norm(x, w), want)
        print("pool ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "pool ok" in proc.stdout, proc.stderr[-3000:]


# ---- moe_grouped_swiglu with F = 0 -------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grouped_swiglu_zero_intermediate_is_zero(dtype):
    x = torch.randn(5, 8).to(dtype)
    offsets = torch.tensor([0, 2, 5], dtype=torch.int32)
    w13, w2 = torch.empty(2, 0, 8, dtype=dtype), torch.empty(2, 8, 0, dtype=dtype)
    out = torch.full((5, 8), float("nan"), dtype=dtype)  # stale memory the kernel must overwrite
    ws = torch.empty(_C.moe_grouped_swiglu_workspace_size(5, 8, 0, 2, str(dtype)[6:]), dtype=torch.uint8)
    _C.moe_grouped_swiglu(out, x, offsets, w13, w2, ws)
    assert torch.equal(out, torch.zeros(5, 8, dtype=dtype))
    assert torch.equal(moe_grouped_swiglu(x, offsets, w13, w2), torch.zeros(5, 8, dtype=dtype))


# ---- NaN in attention propagates like torch SDPA, on every ISA copy ------------------------------

def _decode_case(seed=5):
    g = torch.Generator().manual_seed(seed)
    kv = torch.randn(24, 64, 1, 576, generator=g) / 4
    table = torch.arange(24, dtype=torch.int32).reshape(2, 12)
    sl = torch.tensor([700, 650], dtype=torch.int32)
    q = torch.randn(2, 2, 8, 576, generator=g) / 4
    return q, kv, table, sl


@pytest.mark.parametrize("workers", [1, 16], ids=["one-split", "many-splits"])
def test_nan_key_in_mla_decode(cpu_isa, workers):
    q, kv, table, sl = _decode_case()
    kv[0, 5, 0, 100] = float("nan")             # key 5 of sequence 0: every query of it sees it
    md = mla_decode_metadata(sl, 2, workers)
    out, lse = mla_decode(q, kv, table, sl, metadata=md)
    assert out[0].isnan().all() and lse[0].isnan().all()
    want_out, want_lse = reference.mla_decode(q[1:], kv, table[1:], sl[1:])
    torch.testing.assert_close(out[1:], want_out, rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(lse[1:], want_lse, rtol=2e-5, atol=2e-5)


def test_nan_query_in_mla_decode(cpu_isa):
    q, kv, table, sl = _decode_case()
    q[1, 0, 3, 7] = float("nan")
    out, lse = mla_decode(q, kv, table, sl, metadata=mla_decode_metadata(sl, 2, 16))
    nan_rows = torch.zeros(2, 2, 8, dtype=torch.bool)
    nan_rows[1, 0, 3] = True
    assert torch.equal(out.isnan().any(-1), nan_rows) and out[1, 0, 3].isnan().all()
    assert torch.equal(lse.isnan(), nan_rows.transpose(1, 2))


def test_nan_key_outside_the_ssa_window_is_not_seen(cpu_isa):
    q, kv, table, sl = _decode_case()
    want_out, want_lse = reference.mla_decode(q, kv, table, sl, 512, None, True, SsaWindow(sink=1, local=2))
    kv[2, 10, 0, 0] = float("nan")  # key 138 of sequence 0: outside 1 sink + 2 local blocks of 128
    out, lse = ssa_decode(q, kv, table, sl, window=SsaWindow(sink=1, local=2))
    assert not out.isnan().any() and not lse.isnan().any()
    torch.testing.assert_close(out, want_out, rtol=2e-5, atol=2e-5)


def test_nan_in_mla_prefill(cpu_isa):
    g = torch.Generator().manual_seed(6)
    n = 150
    q, k, v = torch.randn(n, 2, 32, generator=g), torch.randn(n, 2, 32, generator=g), torch.randn(n, 2, 16, generator=g)
    cu = torch.tensor([0, n], dtype=torch.int32)
    k[40, 1, 3] = float("nan")   # head 1: queries at positions >= 40 see it, earlier ones do not
    q[10, 0, 0] = float("nan")   # head 0: only query 10
    out, lse = mla_prefill(q, k, v, cu, cu, n, n)
    want_rows = torch.zeros(n, 2, dtype=torch.bool)
    want_rows[40:, 1] = True
    want_rows[10, 0] = True
    assert torch.equal(out.isnan().any(-1), want_rows) and torch.equal(out.isnan().all(-1), want_rows)
    assert torch.equal(lse.isnan(), want_rows.t())
    ref_out, ref_lse = reference.mla_prefill(q, k, v, cu, cu, 32 ** -0.5)
    torch.testing.assert_close(out[~want_rows], ref_out[~want_rows], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lse[~want_rows.t()], ref_lse[~want_rows.t()], rtol=1e-5, atol=1e-5)


# ---- overlapping outputs ---------------------------------------------------------------------

def test_partial_overlap_rejected():
    buf, w = torch.randn(7, 8), torch.ones(8)
    with pytest.raises(ValueError, match=r"rms_norm: argument 'out' overlaps 'x'"):
        rms_norm(buf[:5], w, out=buf[1:6])
    x = buf[:5].clone()
    torch.testing.assert_close(rms_norm(x.clone(), w, out=x), reference.rms_norm(buf[:5], w, 1e-6))  # exact in place
    with pytest.raises(ValueError, match=r"fused_add_rms_norm: argument 'out' overlaps 'residual'"):
        fused_add_rms_norm_(buf[:4], buf[1:5], w)
    with pytest.raises(ValueError, match=r"overlaps"):
        fused_add_rms_norm_(buf[:4], buf[:4], w)


def test_in_place_refuses_a_leaf_that_requires_grad():
    x, r, w = torch.randn(3, 8, requires_grad=True), torch.randn(3, 8), torch.ones(8)
    with pytest.raises(RuntimeError, match=r"'x' is a leaf tensor that requires grad"):
        fused_add_rms_norm_(x, r, w)
    with torch.no_grad():
        fused_add_rms_norm_(x, r, w)  # allowed where autograd does not record


# ---- checks before allocations, errors that name the argument ----------------------------------

def test_float64_names_the_input():
    x = torch.ones(4, 8, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"rms_norm: argument 'x' must have dtype bfloat16 or float32 on cpu, got float64"):
        rms_norm(x, torch.ones(8, dtype=torch.float64))


def test_zero_dim_tensor():
    with pytest.raises(ValueError, match=r"rms_norm: argument 'x' must have at least 1 dimension"):
        rms_norm(torch.tensor(1.0), torch.ones(1))


def test_expanded_input_is_refused_before_allocating():
    x = torch.ones(1, 1).expand(1 << 20, 1 << 20)  # 2^40 elements: a 4 TiB output if allocated
    with pytest.raises(ValueError, match=r"rms_norm: argument 'x' has elements that share memory"):
        rms_norm(x, torch.ones(1 << 20))


def test_mla_gather_prefix_sum_cannot_overflow():
    kv = torch.zeros(1, 64, 1, 576)
    table = torch.zeros(3, 1, dtype=torch.int32)
    sl = torch.full((3,), 1 << 30, dtype=torch.int32)
    with pytest.raises(ValueError, match=r"mla_gather: argument 'cache_seqlens' sums to 3221225472 tokens"):
        mla_gather(kv, table, sl)


def test_decode_workspace_size_never_negative():
    with pytest.raises(ValueError, match=r"would exceed 2\^62 bytes"):
        _C.mla_decode_workspace_size(2 ** 31 - 1, 65536, 65536, 512, 2 ** 20)
    assert _C.mla_decode_workspace_size(2, 1, 16, 512, 2) == 4 * 16 * 513 * 4


def test_tampered_metadata_is_refused_before_allocating():
    q, kv, table, sl = _decode_case()
    md = mla_decode_metadata(sl, 2, 2)
    md[1, 0] = 2 ** 31 - 1  # would size a multi-GB workspace from "splits" that do not exist
    with pytest.raises(ValueError, match=r"'metadata' does not match cache_seqlens"):
        mla_decode(q, kv, table, sl, metadata=md)
