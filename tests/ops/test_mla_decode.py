"""MLA / SSA decode over the paged latent cache against the plain-torch reference, with FlashMLA's
test method: randomly permuted block tables, unused pages and the tail of each last page filled
with NaN (a read of them shows up as NaN), unused table entries out of range; a grid over batch,
s_q, heads, lengths (0, 1, 63, 64, 65, 1000, >= 8192), dtypes and causal; page sizes; every ISA
copy; the split-KV planner (hypothesis property: S <= batch + num_workers, the splits cover the
visible keys) and metadata reuse; SSA block / token boundaries, SSA reading only visible pages;
opcheck, torch.compile, meta tensors; bad input."""
import itertools
import math
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import longcat
from longcat import _C
from longcat.ops import SsaWindow, mla_decode, mla_decode_metadata, reference, ssa_decode

DTYPES = [torch.float32, torch.bfloat16]
UNUSED_ENTRY = 2147480000  # FlashMLA's filler for table entries past a sequence


def make_case(seqlens, s_q, h_q, dtype, page_size=64, seed=0, spare_pages=3, q_std=1.0):
    """q, kv_cache, block_table, cache_seqlens with permuted pages, NaN in every unused page and
    in the rows after each sequence's end, and out-of-range ids in unused table entries."""
    g = torch.Generator().manual_seed(seed)
    batch = len(seqlens)
    pages = [(L + page_size - 1) // page_size for L in seqlens]
    num_pages = sum(pages) + spare_pages
    max_pages = max(pages + [0]) + 2
    kv = torch.randn(num_pages, page_size, 1, 576, generator=g)
    perm = torch.randperm(num_pages, generator=g)
    block_table = torch.full((batch, max_pages), UNUSED_ENTRY, dtype=torch.int32)
    used = torch.zeros(num_pages, dtype=torch.bool)
    at = 0
    for b, (L, n) in enumerate(zip(seqlens, pages)):
        ids = perm[at:at + n]
        at += n
        block_table[b, :n] = ids.int()
        used[ids] = True
        if n and L % page_size:
            kv[ids[-1], L % page_size:] = float("nan")
    kv[~used] = float("nan")
    q = torch.randn(batch, s_q, h_q, 576, generator=g) * q_std
    return (q.to(dtype), kv.to(dtype), block_table, torch.tensor(seqlens, dtype=torch.int32))


def tolerances(dtype):
    if dtype == torch.float32:
        return dict(rtol=2e-5, atol=2e-5)
    return dict(rtol=1.6e-2, atol=1e-2)


def check(q, kv, bt, sl, causal=True, window=None, metadata=None, scale=None, lse_tol=2e-5, out_tol=None):
    """Kernel vs reference; returns (out, lse). window: an SsaWindow (None = MLA)."""
    if window is None:
        out, lse = mla_decode(q, kv, bt, sl, softmax_scale=scale, causal=causal, metadata=metadata)
    else:
        out, lse = ssa_decode(q, kv, bt, sl, softmax_scale=scale, causal=causal, metadata=metadata, window=window)
    rout, rlse = reference.mla_decode(q, kv, bt, sl, 512, scale, causal, window)
    b, s_q, h_q, _ = q.shape
    assert out.shape == (b, s_q, h_q, 512) and out.dtype == q.dtype
    assert lse.shape == (b, h_q, s_q) and lse.dtype == torch.float32
    assert not out.isnan().any(), "NaN in out: a page or row past the sequence (or an invisible one) was read"
    tol = tolerances(q.dtype) if out_tol is None else dict(rtol=out_tol, atol=out_tol)
    torch.testing.assert_close(out, rout, **tol)
    torch.testing.assert_close(lse, rlse, rtol=lse_tol, atol=lse_tol)
    return out, lse


# ---- the grid ------------------------------------------------------------------------------

LENGTHS = [0, 1, 63, 64, 65, 1000]


def _grid():
    rng = random.Random(4)
    cases = []
    for batch, s_q, h_q, dtype, causal in itertools.product((1, 3, 8), (1, 2, 4), (1, 16, 64, 128), DTYPES,
                                                            (True, False)):
        pool = LENGTHS if h_q * s_q * batch <= 256 else [0, 1, 63, 64, 65, 200]  # big heads: small contexts
        cases.append((batch, s_q, h_q, dtype, causal, tuple(rng.choice(pool) for _ in range(batch))))
    return rng.sample(cases, 48)


@pytest.mark.parametrize("batch,s_q,h_q,dtype,causal,seqlens", _grid(), ids=str)
def test_grid(batch, s_q, h_q, dtype, causal, seqlens):
    q, kv, bt, sl = make_case(list(seqlens), s_q, h_q, dtype, seed=batch * 100 + s_q * 10 + h_q)
    check(q, kv, bt, sl, causal)


@pytest.mark.parametrize("L", LENGTHS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_each_length_alone(L, dtype):
    q, kv, bt, sl = make_case([L], 2, 16, dtype, seed=L)
    out, lse = check(q, kv, bt, sl)
    if L == 0:  # empty sequence: out 0, lse +inf
        assert (out == 0).all() and torch.isinf(lse).all() and (lse > 0).all()


def test_long_context_bf16():
    q, kv, bt, sl = make_case([8192 + 37, 3000], 1, 4, torch.bfloat16, seed=11)
    check(q, kv, bt, sl, lse_tol=1e-4)


def test_longcat_shape_split_kv():
    # h_q 64 at 2K context, one sequence: split over the workers, then combined.
    q, kv, bt, sl = make_case([2048], 1, 64, torch.bfloat16, seed=12)
    md = mla_decode_metadata(sl, 1, num_workers=4)
    assert int(md[1, 0]) > 1
    check(q, kv, bt, sl, metadata=md, lse_tol=1e-4)


def test_queries_before_the_cache_start_see_nothing():
    # s_q > L with causal: the first s_q - L queries sit before position 0.
    q, kv, bt, sl = make_case([2, 0, 5], 4, 3, torch.float32, seed=13)
    out, lse = check(q, kv, bt, sl)
    assert torch.isinf(lse[0, :, :2]).all() and (out[0, :2] == 0).all()
    assert torch.isfinite(lse[0, :, 2:]).all()


@pytest.mark.parametrize("page_size", [1, 16, 64, 100, 128])
def test_page_sizes(page_size):
    q, kv, bt, sl = make_case([0, 1, 99, 300], 2, 8, torch.bfloat16, page_size=page_size, seed=page_size)
    check(q, kv, bt, sl, lse_tol=1e-4)


def test_a_read_nan_shows_up():
    # The NaN poisoning is a real check: NaN in a visible token reaches out.
    q, kv, bt, sl = make_case([100], 1, 4, torch.float32, seed=14)
    kv[bt[0, 1], 3] = float("nan")  # token 67
    out, _ = mla_decode(q, kv, bt, sl)
    assert out.isnan().all()


def test_softmax_scale_and_sharp_logits():
    # Large logits (std ~20): the online softmax must rescale correctly across tiles and splits.
    # fp32 rounding of logits near 100 allows ~1e-5 relative error in the weights.
    q, kv, bt, sl = make_case([700, 130], 2, 16, torch.float32, seed=15, q_std=4.0)
    md = mla_decode_metadata(sl, 2, num_workers=5)
    check(q, kv, bt, sl, scale=0.2, metadata=md, lse_tol=1e-4, out_tol=2e-4)


def test_strided_q():
    q, kv, bt, sl = make_case([90, 200], 2, 8, torch.bfloat16, seed=16)
    wide = torch.cat([q, q], dim=-1)[..., :576]
    heads_t = q.transpose(1, 2).contiguous().transpose(1, 2)  # strided heads / tokens
    assert not wide.is_contiguous() and not heads_t.is_contiguous()
    a, la = mla_decode(q, kv, bt, sl)
    for qq in (wide, heads_t):
        b, lb = mla_decode(qq, kv, bt, sl)
        assert torch.equal(a, b) and torch.equal(la, lb)
    # a strided block table (a column slice of a wider one)
    bt_wide = torch.cat([bt, bt], dim=1)[:, : bt.shape[1]]
    c, lc = mla_decode(q, kv, bt_wide, sl)
    assert torch.equal(a, c) and torch.equal(la, lc)


def test_isa_copies(cpu_isa):
    for dtype in DTYPES:
        q, kv, bt, sl = make_case([0, 65, 300], 2, 20, dtype, seed=17)
        md = mla_decode_metadata(sl, 2, num_workers=3)
        check(q, kv, bt, sl, metadata=md, lse_tol=1e-4)
        check(q, kv, bt, sl, causal=False, window=SsaWindow(sink=1, local=2, block_size=64),
              lse_tol=1e-4)
        # few rows per sequence (the dot-product path on vector ISAs) and one or two rows (wide P V)
        for s_q, h_q in ((1, 3), (2, 1), (1, 1)):
            q, kv, bt, sl = make_case([0, 65, 300], s_q, h_q, dtype, seed=17 + h_q)
            check(q, kv, bt, sl, metadata=mla_decode_metadata(sl, s_q, num_workers=3), lse_tol=1e-4)


def test_threads_give_identical_results():
    q, kv, bt, sl = make_case([500, 64, 1], 2, 40, torch.bfloat16, seed=18)
    md = mla_decode_metadata(sl, 2, num_workers=4)
    n = longcat.num_threads()
    outs = []
    try:
        for threads in (1, 2, 3):
            longcat.set_num_threads(threads)
            outs.append(mla_decode(q, kv, bt, sl, metadata=md))
    finally:
        longcat.set_num_threads(n)
    for o, l in outs[1:]:
        assert torch.equal(o, outs[0][0]) and torch.equal(l, outs[0][1])


# ---- the planner ---------------------------------------------------------------------------

def visible_count(L, s_q, causal, window):
    """Keys the union of the s_q queries sees (the planner's unit), from the reference mask."""
    if L == 0:
        return 0
    q_pos = (torch.arange(s_q) + L - s_q) if causal else torch.full((s_q,), L - 1)
    return int(reference.attention_visible(q_pos, torch.arange(L), True, window).any(0).sum())


@settings(max_examples=60, deadline=None)
@given(seqlens=st.lists(st.integers(0, 5000), min_size=1, max_size=12), s_q=st.integers(1, 4),
       workers=st.integers(1, 200), causal=st.booleans(),
       window=st.one_of(st.none(),
                        st.tuples(st.just("blocks"), st.integers(0, 3), st.integers(1, 8), st.sampled_from([1, 64, 128])),
                        st.tuples(st.just("tokens"), st.integers(0, 300), st.integers(1, 700))))
def test_planner_property(seqlens, s_q, workers, causal, window):
    sl = torch.tensor(seqlens, dtype=torch.int32)
    batch = len(seqlens)
    if window is None:
        md, w = mla_decode_metadata(sl, s_q, workers, causal=causal), None
    else:
        w = (SsaWindow(sink=window[1], local=window[2], block_size=window[3]) if window[0] == "blocks" else
             SsaWindow(sink=window[1], local=window[2], tokens=True))
        md = mla_decode_metadata(sl, s_q, workers, causal=causal, window=w)
    assert md.shape == (batch + 1, 2) and md.dtype == torch.int32
    S = int(md[batch, 0])
    assert S <= batch + workers == _C.mla_decode_max_splits(batch, workers)
    assert int(md[0, 0]) == 0
    keys = [visible_count(L, s_q, causal, w) for L in seqlens]
    total = sum(k + 64 for k in keys)
    for b in range(batch):
        splits, chunk = int(md[b + 1, 0] - md[b, 0]), int(md[b, 1])
        assert chunk >= 64 and chunk % 64 == 0
        assert splits >= 1 and splits * chunk >= keys[b] and (splits - 1) * chunk < max(keys[b], 1)
        # balance: a split holds at most about an equal share of the work
        assert chunk <= max(64, math.ceil(total / workers) + 63)


def test_planner_window_covers_only_visible_keys():
    sl = torch.tensor([128 * 1000], dtype=torch.int32)
    full = mla_decode_metadata(sl, 1, 4)
    ssa = mla_decode_metadata(sl, 1, 4, window=SsaWindow(sink=1, local=7))
    assert int(full[1, 0]) == 4 and int(full[0, 1]) * 4 >= 128000
    assert int(ssa[0, 1]) * int(ssa[1, 0]) < 2 * 8 * 128 + 4 * 64  # planned over 8 blocks, not 1000


def test_metadata_reuse_across_layers():
    q, kv, bt, sl = make_case([300, 1000, 5], 2, 16, torch.bfloat16, seed=19)
    md = mla_decode_metadata(sl, 2)
    before = md.clone()
    first = mla_decode(q, kv, bt, sl, metadata=md)
    for layer in range(3):  # other layers: other q and cache values (same pages and NaN), same plan
        q2 = torch.randn(q.shape).to(q.dtype)
        kv2 = torch.where(kv.isnan(), kv, torch.randn(kv.shape).to(kv.dtype))
        o, l = mla_decode(q2, kv2, bt, sl, metadata=md)
        ro, rl = mla_decode(q2, kv2, bt, sl)
        assert not o.isnan().any()
        assert torch.equal(o, ro) and torch.equal(l, rl)
        torch.testing.assert_close(o, reference.mla_decode(q2, kv2, bt, sl)[0], **tolerances(q.dtype))
    again = mla_decode(q, kv, bt, sl, metadata=md)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert torch.equal(md, before)


def test_metadata_for_more_workers_and_bigger_splits():
    q, kv, bt, sl = make_case([700, 30], 1, 8, torch.float32, seed=21)
    for workers in (1, 2, 7, 64):
        check(q, kv, bt, sl, metadata=mla_decode_metadata(sl, 1, workers))


# ---- SSA ------------------------------------------------------------------------------------

SINK, LOCAL, BS = 1, 7, 128


def ssa_window(sink=SINK, local=LOCAL, bs=BS):
    return SsaWindow(sink=sink, local=local, block_size=bs)


@pytest.mark.parametrize("L", [1, 127, 128, 129, (SINK + LOCAL) * BS - 1, (SINK + LOCAL) * BS,
                               (SINK + LOCAL) * BS + 1, (SINK + LOCAL + 1) * BS, (SINK + LOCAL + 1) * BS + 1, 3000])
@pytest.mark.parametrize("s_q", [1, 2])
def test_ssa_block_boundaries(L, s_q):
    q, kv, bt, sl = make_case([L], s_q, 4, torch.bfloat16, seed=L)
    out, lse = check(q, kv, bt, sl, window=ssa_window(), lse_tol=1e-4)
    if L <= (SINK + LOCAL) * BS:  # everything fits in sink + local: equal to full attention
        fo, fl = mla_decode(q, kv, bt, sl)
        assert torch.equal(out, fo) and torch.equal(lse, fl)


def test_ssa_default_arguments_are_one_sink_seven_local_blocks():
    q, kv, bt, sl = make_case([2000, 1100], 1, 8, torch.float32, seed=22)
    a = ssa_decode(q, kv, bt, sl)
    b = ssa_decode(q, kv, bt, sl, window=SsaWindow(sink=1, local=7, block_size=128))
    assert torch.equal(a[0], b[0])
    ro, rl = reference.mla_decode(q, kv, bt, sl, 512, None, True, ssa_window())
    torch.testing.assert_close(a[0], ro, **tolerances(torch.float32))


@pytest.mark.parametrize("sink,window,L", [(4, 100, 99), (4, 100, 100), (4, 100, 105), (0, 1, 50), (0, 64, 1000),
                                            (16, 300, 2000), (200, 50, 240)])
@pytest.mark.parametrize("causal", [True, False])
def test_ssa_token_mode(sink, window, L, causal):
    q, kv, bt, sl = make_case([L, 3], 3, 8, torch.float32, seed=sink + window + L)
    check(q, kv, bt, sl, causal, window=SsaWindow(sink=sink, local=window, tokens=True))


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_ssa_small_blocks_batch(causal, dtype):
    # Small blocks keep many boundary crossings cheap; s_q = 4 spans two blocks of 3 sometimes.
    w = ssa_window(2, 3, 3)
    q, kv, bt, sl = make_case([0, 1, 5, 6, 7, 14, 15, 16, 17, 100], 4, 6, dtype, page_size=4, seed=23)
    check(q, kv, bt, sl, causal, window=w, lse_tol=1e-4)


def test_ssa_reads_only_visible_pages():
    # Poison every page no query can see: the result must not change (and contain no NaN).
    L, ps = 64 * 100 + 17, 64
    q, kv, bt, sl = make_case([L], 2, 8, torch.bfloat16, page_size=ps, seed=24)
    w = ssa_window(1, 2, 128)
    want = ssa_decode(q, kv, bt, sl, window=SsaWindow(sink=1, local=2))
    p_first = L - 2
    first_local_page = (p_first // 128 - 2 + 1) * 128 // ps
    poisoned = kv.clone()
    for p in range(128 // ps, first_local_page):
        poisoned[bt[0, p]] = float("nan")
    got = ssa_decode(q, poisoned, bt, sl, window=SsaWindow(sink=1, local=2))
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    check(q, kv, bt, sl, window=w, lse_tol=1e-4)


def test_ssa_with_split_metadata():
    q, kv, bt, sl = make_case([5000, 1200, 0], 2, 16, torch.bfloat16, seed=25)
    md = mla_decode_metadata(sl, 2, 6, window=SsaWindow(sink=1, local=7))
    check(q, kv, bt, sl, window=ssa_window(), metadata=md, lse_tol=1e-4)


# ---- torch integration -------------------------------------------------------------------

def test_opcheck():
    q, kv, bt, sl = make_case([70, 3], 2, 4, torch.float32, seed=26)
    md = mla_decode_metadata(sl, 2)
    torch.library.opcheck(torch.ops.longcat.mla_decode.default,
                          (q, kv, bt, sl, 512, 576 ** -0.5, True, md, None))
    torch.library.opcheck(torch.ops.longcat.mla_decode.default,
                          (q, kv, bt, sl, 512, 0.1, False, None, [0, 1, 1, 16]))


def test_torch_compile_fullgraph():
    q, kv, bt, sl = make_case([70, 130], 1, 4, torch.float32, seed=27)
    md = mla_decode_metadata(sl, 1)

    def step(q, kv, bt, sl, md):
        out, lse = mla_decode(q, kv, bt, sl, metadata=md)
        out2, _ = ssa_decode(q, kv, bt, sl, window=SsaWindow(sink=1, local=1, block_size=32))
        return out + out2, lse

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    got, want = compiled(q, kv, bt, sl, md), step(q, kv, bt, sl, md)
    torch.testing.assert_close(got, want)


def test_meta_tensors():
    q = torch.empty(2, 1, 16, 576, device="meta", dtype=torch.bfloat16)
    kv = torch.empty(10, 64, 1, 576, device="meta", dtype=torch.bfloat16)
    bt = torch.empty(2, 5, device="meta", dtype=torch.int32)
    sl = torch.empty(2, device="meta", dtype=torch.int32)
    md = torch.empty(3, 2, device="meta", dtype=torch.int32)
    out, lse = mla_decode(q, kv, bt, sl, metadata=md)
    assert out.shape == (2, 1, 16, 512) and out.dtype == torch.bfloat16 and out.device.type == "meta"
    assert lse.shape == (2, 16, 1) and lse.dtype == torch.float32


def test_no_grad_needed_under_autograd():
    q, kv, bt, sl = make_case([40], 1, 2, torch.float32, seed=28)
    out, _ = mla_decode(q.requires_grad_(), kv, bt, sl)  # forward works; no backward is defined
    torch.testing.assert_close(out, reference.mla_decode(q.detach(), kv, bt, sl)[0], **tolerances(torch.float32))


# ---- bad input: each names the argument ------------------------------------------------------

@pytest.fixture
def case():
    return make_case([100, 10], 1, 4, torch.bfloat16, seed=29)


def test_bad_shapes(case):
    q, kv, bt, sl = case
    with pytest.raises(ValueError, match=r"mla_decode: argument 'q' must have size 576 in dimension 3 \(512 latent \+ 64 rope values\), got 512"):
        mla_decode(q[..., :512], kv, bt, sl)
    with pytest.raises(ValueError, match=r"mla_decode: argument 'kv_cache' must have size 576 in dimension 3 \(512 latent \+ 64 rope values\), got 512"):
        mla_decode(q, kv[..., :512].contiguous(), bt, sl)
    with pytest.raises(ValueError, match=r"'q' must have 4 dimensions \[batch, s_q, h_q, 576\], got 3"):
        mla_decode(q[:, 0], kv, bt, sl)
    with pytest.raises(ValueError, match=r"'block_table' must have size 2 in dimension 0 \(the batch q.shape\[0\]\), got 1"):
        mla_decode(q, kv, bt[:1], sl)
    with pytest.raises(ValueError, match=r"'cache_seqlens' must have size 2 in dimension 0 \(the batch q.shape\[0\]\), got 3"):
        mla_decode(q, kv, bt, torch.tensor([100, 10, 3], dtype=torch.int32))
    with pytest.raises(ValueError, match=r"'head_dim_v' must be 512, got 128"):
        mla_decode(q, kv, bt, sl, head_dim_v=128)
    with pytest.raises(ValueError, match=r"'kv_cache' must have size 1 in dimension 2 \(one latent KV head\), got 2"):
        mla_decode(q, kv.view(kv.shape[0], 32, 2, 576), bt, sl)


def test_block_table_too_short_or_out_of_range(case):
    q, kv, bt, sl = case
    with pytest.raises(ValueError, match=r"'block_table' has 1 pages per sequence, but sequence 0 holds 100 tokens = 2 pages of 64 \(cache_seqlens\[0\]\)"):
        mla_decode(q, kv, bt[:, :1], sl)
    bad = bt.clone()
    bad[1, 0] = kv.shape[0]
    with pytest.raises(ValueError, match=rf"'block_table' must hold page ids in \[0, {kv.shape[0]}\) .*got {kv.shape[0]} at \[1, 0\]"):
        mla_decode(q, kv, bad, sl)
    bad[1, 0] = -1
    with pytest.raises(ValueError, match=r"got -1 at \[1, 0\]"):
        mla_decode(q, kv, bad, sl)


def test_negative_lengths(case):
    q, kv, bt, sl = case
    neg = torch.tensor([100, -3], dtype=torch.int32)
    with pytest.raises(ValueError, match=r"argument 'cache_seqlens' must hold lengths >= 0, got -3 at \[1\]"):
        mla_decode(q, kv, bt, neg)  # the plan made inside fails first
    with pytest.raises(ValueError, match=r"mla_decode: argument 'cache_seqlens' must hold lengths >= 0, got -3 at \[1\]"):
        mla_decode(q, kv, bt, neg, metadata=mla_decode_metadata(sl, 1))
    with pytest.raises(ValueError, match=r"mla_decode_metadata: argument 'cache_seqlens' must hold lengths >= 0, got -1 at \[0\]"):
        mla_decode_metadata(torch.tensor([-1], dtype=torch.int32), 1)


def test_bad_dtypes(case):
    q, kv, bt, sl = case
    with pytest.raises(TypeError, match=r"mla_decode: argument 'q' must have dtype bfloat16 or float32 on cpu, got float16"):
        mla_decode(q.half(), kv.half(), bt, sl)
    with pytest.raises(TypeError, match=r"'kv_cache' must have the dtype of 'q' \(bfloat16\), got float32"):
        mla_decode(q, kv.float(), bt, sl)
    with pytest.raises(TypeError, match=r"'block_table' must have dtype int32 on cpu, got int64"):
        mla_decode(q, kv, bt.long(), sl)
    with pytest.raises(TypeError, match=r"'cache_seqlens' must have dtype int32 on cpu, got int64"):
        mla_decode(q, kv, bt, sl.long())
    with pytest.raises(TypeError, match=r"'q' must be a torch.Tensor, got list"):
        mla_decode([1.0], kv, bt, sl)
    with pytest.raises(TypeError, match=r"'metadata' must have dtype int32 on cpu, got int64"):
        mla_decode(q, kv, bt, sl, metadata=mla_decode_metadata(sl, 1).long())


def test_bad_metadata(case):
    q, kv, bt, sl = case
    other_batch = mla_decode_metadata(torch.tensor([100, 10, 5], dtype=torch.int32), 1)
    with pytest.raises(ValueError, match=r"'metadata' must have size 3 in dimension 0 \(batch \+ 1 .*\), got 4"):
        mla_decode(q, kv, bt, sl, metadata=other_batch)
    stale = mla_decode_metadata(torch.tensor([10, 10], dtype=torch.int32), 1, num_workers=4)  # a past step
    with pytest.raises(ValueError, match=r"'metadata' does not match cache_seqlens, s_q, causal and the window at sequence 0 \(100 visible keys, 1 splits of 64 keys\)"):
        mla_decode(q, kv, bt, sl, metadata=stale)
    ssa_plan = mla_decode_metadata(torch.tensor([3000, 10], dtype=torch.int32), 1, 2, window=SsaWindow(sink=1, local=1))
    big_q, big_kv, big_bt, big_sl = make_case([3000, 10], 1, 2, torch.bfloat16, seed=30)
    with pytest.raises(ValueError, match=r"'metadata' does not match"):
        mla_decode(big_q, big_kv, big_bt, big_sl, metadata=ssa_plan)  # a plan for SSA used for full attention


def test_bad_options(case):
    q, kv, bt, sl = case
    with pytest.raises(ValueError, match=r"'softmax_scale' must be finite and > 0, got -1.0"):
        mla_decode(q, kv, bt, sl, softmax_scale=-1.0)
    with pytest.raises(ValueError, match=r"argument 'window.local' must be in \[1, 2\^31\], got 0"):
        ssa_decode(q, kv, bt, sl, window=SsaWindow(local=0))
    with pytest.raises(ValueError, match=r"'window.sink' must be in \[0, 2\^31\], got -1"):
        ssa_decode(q, kv, bt, sl, window=SsaWindow(sink=-1, local=4, tokens=True))
    with pytest.raises(TypeError, match=r"'window' must be a longcat.ops.SsaWindow, got tuple"):
        ssa_decode(q, kv, bt, sl, window=("blocks", 1, 7, 128))
    with pytest.raises(TypeError):  # the binding converts only integer fields
        _C.mla_decode_metadata(torch.empty(3, 2, dtype=torch.int32), sl, 1, 2, True, SsaWindow(block_size=128.0))
    with pytest.raises(ValueError, match=r"mla_decode_metadata: argument 'num_workers' must be >= 1, got 0"):
        mla_decode_metadata(sl, 1, 0)
    with pytest.raises(ValueError, match=r"'s_q' must be >= 1, got 0"):
        mla_decode_metadata(sl, 0)
    with pytest.raises(ValueError, match=r"mla_decode_metadata: argument 'h_q' must be >= 1, got 0"):
        mla_decode_metadata(sl, 1, h_q=0)
    # On CPU the query heads do not change the plan (CUDA divides its SMs by the 64-row tiles).
    assert torch.equal(mla_decode_metadata(sl, 2, h_q=128), mla_decode_metadata(sl, 2))
    with pytest.raises(ValueError, match=r"'kv_cache' must be on the device of 'q' \(cpu\), got meta"):
        mla_decode(q, torch.empty(kv.shape, dtype=kv.dtype, device="meta"), bt, sl)
    with pytest.raises(ValueError, match=r"window.block_size"):  # the C++ API checks the window too
        md = torch.empty(3, 2, dtype=torch.int32)
        _C.mla_decode_metadata(md, sl, 1, 2, True, SsaWindow(block_size=0))
    with pytest.raises(TypeError):
        _C.mla_decode_metadata(torch.empty(3, 2, dtype=torch.int32), sl, 1, 2, True, "ring")


def test_bad_workspace(case):
    q, kv, bt, sl = case
    md = mla_decode_metadata(sl, 1, 2)
    out = torch.empty(2, 1, 4, 512, dtype=q.dtype)
    lse = torch.empty(2, 4, 1)
    need = _C.mla_decode_workspace_size(2, 1, 4, 512, 2)
    with pytest.raises(ValueError, match=rf"'workspace' must hold at least {need} bytes"):
        _C.mla_decode(out, lse, q, kv, bt, sl, 512, 0.1, True, md, torch.empty(need - 1, dtype=torch.uint8), 2)
    q, kv, bt, sl = make_case([2000], 1, 4, torch.bfloat16, seed=31)
    many = mla_decode_metadata(sl, 1, 64)  # a plan for 64 workers, run with a workspace for 1
    with pytest.raises(ValueError, match=r"'metadata' plans 32 splits, more than batch \+ num_workers = 2 "
                                         r"\(pass the num_workers it was computed with\)"):
        _C.mla_decode(out[:1], lse[:1], q, kv, bt, sl, 512, 0.1, True, many,
                      torch.empty(_C.mla_decode_workspace_size(1, 1, 4, 512, 1), dtype=torch.uint8), 1)
    # the Python op sizes the workspace for such a plan itself
    check(q, kv, bt, sl, metadata=many, lse_tol=1e-4)


def test_empty_batch():
    q = torch.randn(0, 1, 4, 576)
    kv = torch.randn(2, 64, 1, 576)
    bt = torch.zeros(0, 3, dtype=torch.int32)
    sl = torch.zeros(0, dtype=torch.int32)
    assert mla_decode_metadata(sl, 1).tolist() == [[0, 0]]
    for op in (mla_decode, ssa_decode):
        out, lse = op(q, kv, bt, sl)
        assert out.shape == (0, 1, 4, 512) and lse.shape == (0, 4, 1)


# ---- plans made elsewhere (what mla_decode checks on CUDA before launching) -------------------

def test_plans_made_here_are_marked_until_changed_in_place():
    from longcat.ops.mla_decode import _made_here

    lens = torch.tensor([100, 300], dtype=torch.int32)
    md = mla_decode_metadata(lens, 1)
    assert _made_here(md)
    md[0, 1] += 0  # any in-place op: the plan may have changed
    assert not _made_here(md)
    assert not _made_here(md.clone())
    assert not _made_here(torch.zeros(3, 2, dtype=torch.int32))
    with torch.inference_mode():  # no version counter there: marked by who made it
        assert _made_here(mla_decode_metadata(lens, 1))


@pytest.mark.parametrize("starts, message", [
    ([0, 3, 9], "plans 9 splits, more than the workspace holds"),
    ([1, 2, 3], "must start at split 0 and never decrease"),
    ([0, 3, 2], "must start at split 0 and never decrease"),
    ([0, 1], "must start at split 0 and never decrease"),  # one sequence short
])
def test_check_plan_fits_refuses_what_the_workspace_cannot_hold(starts, message):
    from longcat.ops.mla_decode import check_plan_fits

    with pytest.raises(ValueError, match=message) as e:
        check_plan_fits(starts, 2, 4)
    assert "argument 'metadata'" in str(e.value)


def test_check_plan_fits_accepts_every_plan_of_the_planner():
    from longcat.ops.mla_decode import check_plan_fits

    lens = torch.tensor([0, 1, 64, 4096, 70000], dtype=torch.int32)
    for workers in (1, 3, 16, 132):
        md = mla_decode_metadata(lens, 2, workers)
        check_plan_fits(md[:, 0].tolist(), 5, 5 + workers)
