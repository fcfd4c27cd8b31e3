"""Varlen MLA / SSA prefill kernel against the plain-torch reference: grids over batch, lengths
(0, 1, around the 64-key tile and the 128-token SSA block, total_k > total_q), heads (GQA), head
dims and dtypes; SSA window boundaries in block and token mode; every ISA copy, thread counts;
hypothesis property test over random varlen layouts; strided views; opcheck, torch.compile and
meta tensors; bad input."""
import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import longcat
from longcat.ops import SsaWindow, mla_prefill, reference, ssa_prefill

DTYPES = [torch.float32, torch.bfloat16]


def make_inputs(lens_q, lens_k, h=4, h_k=None, d=64, dv=64, dtype=torch.float32, seed=0):
    h_k = h if h_k is None else h_k
    g = torch.Generator().manual_seed(seed)
    tq, tk = sum(lens_q), sum(lens_k)
    q = torch.randn(tq, h, d, generator=g).to(dtype)
    k = torch.randn(tk, h_k, d, generator=g).to(dtype)
    v = torch.randn(tk, h_k, dv, generator=g).to(dtype)
    cq = torch.tensor([0] + list(itertools.accumulate(lens_q)), dtype=torch.int32)
    ck = torch.tensor([0] + list(itertools.accumulate(lens_k)), dtype=torch.int32)
    return q, k, v, cq, ck


def tol(dtype):
    # bf16 output: one rounding of a value of magnitude <= max |v| (~4 for randn).
    return dict(rtol=2e-2, atol=2e-2) if dtype == torch.bfloat16 else dict(rtol=2e-5, atol=2e-5)


def check(lens_q, lens_k, h=4, h_k=None, d=64, dv=64, dtype=torch.float32, causal=True, window=None,
          seed=0, scale=None, inputs=None):
    q, k, v, cq, ck = inputs if inputs is not None else make_inputs(lens_q, lens_k, h, h_k, d, dv, dtype, seed)
    mq, mk = max(lens_q, default=0), max(lens_k, default=0)
    s = q.shape[-1] ** -0.5 if scale is None else scale
    if window is None:
        out, lse = mla_prefill(q, k, v, cq, ck, mq, mk, scale, causal)
    else:
        out, lse = ssa_prefill(q, k, v, cq, ck, mq, mk, scale, window=window)
    ro, rl = reference.mla_prefill(q, k, v, cq, ck, s, causal, window)
    assert out.shape == ro.shape and out.dtype == q.dtype and out.is_contiguous()
    assert lse.shape == (q.shape[1], q.shape[0]) and lse.dtype == torch.float32
    torch.testing.assert_close(out.float(), ro.float(), **tol(q.dtype))
    # lse is computed from the same (bf16-valued) inputs in fp32 on both sides.
    torch.testing.assert_close(lse, rl, rtol=1e-5, atol=1e-4)
    return out, lse


# ---- grids ---------------------------------------------------------------------------------

LENGTHS = [
    ([1], [1]),
    ([5], [5]),
    ([63], [63]),
    ([64], [64]),
    ([65], [65]),
    ([127, 128, 129], [127, 128, 129]),
    ([0, 3, 0], [0, 3, 0]),            # empty sequences
    ([3, 0, 70], [10, 5, 200]),        # chunked prefill: keys before the queries; a query-less sequence
    ([70], [0]),                       # no keys at all: out 0, lse +inf
    ([100], [40]),                     # len_k < len_q: the first 60 queries see nothing
]


@pytest.mark.parametrize("lens", LENGTHS, ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [True, False])
def test_lengths(lens, dtype, causal):
    check(*lens, dtype=dtype, causal=causal)


@pytest.mark.parametrize("h,h_k", [(1, 1), (4, 1), (6, 2), (16, 16)])
@pytest.mark.parametrize("d,dv", [(192, 128), (64, 64), (576, 512), (8, 24), (40, 8)])
def test_heads_and_dims(h, h_k, d, dv):
    check([37, 90], [37, 150], h=h, h_k=h_k, d=d, dv=dv, dtype=torch.bfloat16, seed=h + d)


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_batch_mla_shape(batch):
    lens = [(17 * i + 5) % 150 + 1 for i in range(batch)]
    check(lens, lens, h=2, d=192, dv=128, dtype=torch.bfloat16, seed=batch)


def test_many_short_sequences():
    # Decode-like batches: hundreds of sequences of 0-5 queries, each its own partial tile.
    g = torch.Generator().manual_seed(5)
    lq = torch.randint(0, 6, (200,), generator=g).tolist()
    lk = [x + e for x, e in zip(lq, torch.randint(0, 4, (200,), generator=g).tolist())]
    check(lq, lk, h=8, h_k=2, d=192, dv=128, dtype=torch.bfloat16)
    check(lq, lk, h=8, h_k=2, d=192, dv=128, window=tokens(1, 2))


def test_no_visible_key_gives_zero_and_inf():
    q, k, v, cq, ck = make_inputs([80], [20], h=2)
    out, lse = mla_prefill(q, k, v, cq, ck, 80, 20)
    assert (out[:60] == 0).all() and torch.isinf(lse[:, :60]).all() and (lse[:, :60] > 0).all()
    assert torch.isfinite(lse[:, 60:]).all()
    # The first query that sees anything sees exactly key 0: out = v[0].
    torch.testing.assert_close(out[60], v[0], rtol=1e-6, atol=1e-6)


def test_softmax_scale_and_default():
    q, k, v, cq, ck = make_inputs([50], [50], d=192, dv=128)
    check([50], [50], scale=0.3, inputs=(q, k, v, cq, ck))
    a = mla_prefill(q, k, v, cq, ck, 50, 50)
    b = mla_prefill(q, k, v, cq, ck, 50, 50, softmax_scale=192 ** -0.5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_long_sequence_many_tiles():
    check([700], [1000], h=2, d=64, dv=64, dtype=torch.bfloat16)


# ---- SSA windows ---------------------------------------------------------------------------

def blocks(sink, local, bs):
    return SsaWindow(sink=sink, local=local, block_size=bs)


def tokens(sink, local):
    return SsaWindow(sink=sink, local=local, tokens=True)


@pytest.mark.parametrize("n", [127, 128, 129, 8 * 128, 8 * 128 + 1, 9 * 128, 9 * 128 + 77])
def test_ssa_default_window_block_edges(n):
    check([n], [n], h=2, d=64, dv=64, window=blocks(1, 7, 128), dtype=torch.bfloat16, seed=n)


@pytest.mark.parametrize("window", [blocks(0, 1, 16), blocks(2, 3, 16), blocks(1, 2, 64), blocks(3, 1, 32),
                                    blocks(1, 2, 50), blocks(5, 40, 8)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
def test_ssa_block_mode_grid(window, dtype):
    check([300, 1, 64, 0, 129], [300, 1, 64, 0, 129], window=window, dtype=dtype)


@pytest.mark.parametrize("window", [tokens(0, 1), tokens(1, 1), tokens(4, 10), tokens(64, 64), tokens(5, 63),
                                    tokens(0, 65), tokens(130, 7)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
def test_ssa_token_mode_grid(window, dtype):
    check([300, 1, 64, 129], [300, 1, 64, 129], window=window, dtype=dtype)


@pytest.mark.parametrize("window", [blocks(1, 2, 32), tokens(3, 40)], ids=str)
def test_ssa_chunked_prefill(window):
    # Chunks at an offset into the sequence: the window is applied at absolute positions.
    check([50, 64, 1], [350, 64 + 200, 129], window=window, h=4, h_k=2)


def test_ssa_equals_full_attention_when_everything_fits():
    n = 8 * 128  # 1 sink + 7 local blocks cover the whole sequence
    q, k, v, cq, ck = make_inputs([n], [n], h=2, dtype=torch.bfloat16)
    a = ssa_prefill(q, k, v, cq, ck, n, n)
    b = mla_prefill(q, k, v, cq, ck, n, n)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # One more token: only the last query loses a block (block 1 leaves its window).
    q, k, v, cq, ck = make_inputs([n + 1], [n + 1], h=2, dtype=torch.bfloat16)
    a = ssa_prefill(q, k, v, cq, ck, n + 1, n + 1)
    b = mla_prefill(q, k, v, cq, ck, n + 1, n + 1)
    assert torch.equal(a[0][:n], b[0][:n]) and torch.equal(a[1][:, :n], b[1][:, :n])
    assert not torch.allclose(a[1][:, n], b[1][:, n])


def test_ssa_token_window_boundary_is_exact():
    # window_tokens = 3: query p sees p-2, p-1, p (and the sink). Put a huge value on one key
    # and check exactly which queries see it.
    n, key = 40, 20
    q = torch.ones(n, 1, 8)
    k = torch.zeros(n, 1, 8)
    v = torch.zeros(n, 1, 8)
    k[key] = 1.0
    v[key] = 1.0
    c = torch.tensor([0, n], dtype=torch.int32)
    out, _ = ssa_prefill(q, k, v, c, c, n, n, softmax_scale=10.0, window=tokens(2, 3))
    sees = out[:, 0, 0] > 0.5
    assert sees.nonzero().flatten().tolist() == [20, 21, 22]


def test_ssa_block_window_boundary_is_exact():
    # block_size 4, sink 1, local 2: query in block qb sees blocks 0, qb-1 and qb (causal).
    n, key = 40, 13  # key in block 3
    q = torch.ones(n, 1, 8)
    k = torch.zeros(n, 1, 8)
    v = torch.zeros(n, 1, 8)
    k[key] = 1.0
    v[key] = 1.0
    c = torch.tensor([0, n], dtype=torch.int32)
    out, _ = ssa_prefill(q, k, v, c, c, n, n, softmax_scale=10.0, window=blocks(1, 2, 4))
    sees = out[:, 0, 0] > 0.5
    assert sees.nonzero().flatten().tolist() == [13, 14, 15, 16, 17, 18, 19]


@pytest.mark.parametrize("window", [blocks(1, 2, 32), tokens(5, 40)], ids=["blocks", "tokens"])
@pytest.mark.filterwarnings("ignore:.*flex_attention called without torch.compile")
def test_ssa_block_mask_matches_flex_attention(window):
    # The FlexAttention mask the benchmarks compare against encodes the same visibility.
    from torch.nn.attention.flex_attention import flex_attention

    from longcat.ops.mla_prefill import ssa_block_mask

    n = 300
    q, k, v, cq, ck = make_inputs([n], [n], h=2, d=16, dv=16)
    out = flex_attention(*(x.transpose(0, 1)[None] for x in (q, k, v)), block_mask=ssa_block_mask(n, window),
                         scale=0.25)[0].transpose(0, 1)
    want, _ = reference.mla_prefill(q, k, v, cq, ck, 0.25, True, window)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    got, _ = ssa_prefill(q, k, v, cq, ck, n, n, 0.25, window=window)
    torch.testing.assert_close(got, want, rtol=2e-5, atol=2e-5)


# ---- ISA copies, threads, strides ------------------------------------------------------------

def test_isa_copies(cpu_isa):
    for dtype in DTYPES:
        check([70, 130], [70, 200], h=4, h_k=2, d=192, dv=128, dtype=dtype)
        check([300], [300], window=blocks(1, 2, 64), dtype=dtype)
        check([150], [150], window=tokens(3, 33), dtype=dtype, d=24, dv=40)


def test_threads_give_identical_results():
    q, k, v, cq, ck = make_inputs([130, 7, 260], [130, 70, 300], h=3, d=64, dv=64, dtype=torch.bfloat16)
    before = longcat.num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            longcat.set_num_threads(n)
            results.append(mla_prefill(q, k, v, cq, ck, 260, 300))
    finally:
        longcat.set_num_threads(before)
    for o, l in results[1:]:
        assert torch.equal(o, results[0][0]) and torch.equal(l, results[0][1])


def test_strided_views():
    # MLA prefill reads q / k as slices of wider projections and v from a strided buffer.
    g = torch.Generator().manual_seed(3)
    qw = torch.randn(90, 4, 256, generator=g).to(torch.bfloat16)
    kvw = torch.randn(90, 4, 192 + 128 + 16, generator=g).to(torch.bfloat16)
    q, k, v = qw[..., :192], kvw[..., :192], kvw[..., 192:320]
    assert not q.is_contiguous() and not v.is_contiguous()
    c = torch.tensor([0, 30, 90], dtype=torch.int32)
    check([30, 60], [30, 60], inputs=(q, k, v, c, c))
    # A head-strided k (heads not adjacent in memory).
    kt = torch.randn(4, 90, 64, generator=g).transpose(0, 1)
    vt = torch.randn(90, 4, 64, generator=g)
    qt = torch.randn(90, 4, 64, generator=g)
    check([30, 60], [30, 60], inputs=(qt, kt, vt, c, c))


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_property_random_varlen(data):
    batch = data.draw(st.integers(1, 4))
    lens_q = data.draw(st.lists(st.integers(0, 150), min_size=batch, max_size=batch))
    extra = data.draw(st.lists(st.integers(0, 100), min_size=batch, max_size=batch))
    causal = data.draw(st.booleans())
    lens_k = [lq + e for lq, e in zip(lens_q, extra)] if data.draw(st.booleans()) else \
        data.draw(st.lists(st.integers(0, 150), min_size=batch, max_size=batch))
    h_k = data.draw(st.sampled_from([1, 2]))
    h = h_k * data.draw(st.sampled_from([1, 3]))
    d = data.draw(st.sampled_from([8, 32, 48]))
    dv = data.draw(st.sampled_from([8, 16, 40]))
    dtype = data.draw(st.sampled_from(DTYPES))
    window = None
    if causal:
        kind = data.draw(st.sampled_from(["none", "blocks", "tokens"]))
        if kind == "blocks":
            window = blocks(data.draw(st.integers(0, 3)), data.draw(st.integers(1, 4)), data.draw(st.integers(1, 40)))
        elif kind == "tokens":
            window = tokens(data.draw(st.integers(0, 70)), data.draw(st.integers(1, 90)))
    check(lens_q, lens_k, h=h, h_k=h_k, d=d, dv=dv, dtype=dtype, causal=causal, window=window,
          seed=data.draw(st.integers(0, 1000)))


# ---- torch integration --------------------------------------------------------------------------

def test_opcheck():
    q, k, v, cq, ck = make_inputs([20, 30], [25, 30], h=2, d=16, dv=8)
    torch.library.opcheck(torch.ops.longcat.mla_prefill.default,
                          (q, k, v, cq, ck, 30, 30, 0.25, True, None))
    torch.library.opcheck(torch.ops.longcat.mla_prefill.default,
                          (q, k, v, cq, ck, 30, 30, 0.25, True, [1, 2, 5, 1]))


def test_torch_compile_fullgraph():
    q, k, v, cq, ck = make_inputs([20, 30], [25, 30], h=2, d=16, dv=8)

    def f(q, k, v):
        out, lse = ssa_prefill(q, k, v, cq, ck, 30, 30, window=blocks(1, 1, 8))
        return out * 2, lse

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    got, want = compiled(q, k, v), f(q, k, v)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_meta_tensors():
    q = torch.empty(10, 4, 192, device="meta", dtype=torch.bfloat16)
    k = torch.empty(12, 4, 192, device="meta", dtype=torch.bfloat16)
    v = torch.empty(12, 4, 128, device="meta", dtype=torch.bfloat16)
    c = torch.empty(3, device="meta", dtype=torch.int32)
    out, lse = mla_prefill(q, k, v, c, c, 8, 8)
    assert out.shape == (10, 4, 128) and out.dtype == torch.bfloat16 and lse.shape == (4, 10)


def test_requires_grad_inputs_run_without_autograd():
    q, k, v, cq, ck = make_inputs([20], [20], h=2, d=16, dv=8)
    out, _ = mla_prefill(q.requires_grad_(), k, v, cq, ck, 20, 20)
    torch.testing.assert_close(out, reference.mla_prefill(q.detach(), k, v, cq, ck, 0.25)[0])


# ---- bad input ------------------------------------------------------------------------------------

def base():
    return make_inputs([10, 20], [10, 20], h=4, d=16, dv=8)


def test_bad_heads_and_dims():
    q, k, v, cq, ck = base()
    with pytest.raises(ValueError, match="query heads q.shape\\[1\\] = 4 must be a positive multiple of the key heads"):
        mla_prefill(q, k[:, :3], v[:, :3], cq, ck, 20, 20)
    with pytest.raises(ValueError, match="'v' must have size 4 in dimension 1"):
        mla_prefill(q, k, v[:, :2], cq, ck, 20, 20)
    with pytest.raises(ValueError, match="'k' must have size 16 in dimension 2"):
        mla_prefill(q, k[..., :8], v, cq, ck, 20, 20)
    with pytest.raises(ValueError, match="'q' must have a last dimension that is a multiple of 8"):
        mla_prefill(q[..., :12], k[..., :12], v, cq, ck, 20, 20)
    with pytest.raises(ValueError, match="'v' must have size 30 in dimension 0"):
        mla_prefill(q, k, v[:29], cq, ck, 20, 20)
    with pytest.raises(ValueError, match="'q' must have 3 dimensions"):
        mla_prefill(q[0], k, v, cq, ck, 20, 20)
    with pytest.raises(ValueError, match="'k' must have a contiguous last dimension"):
        mla_prefill(q, k.transpose(1, 2).contiguous().transpose(1, 2), v, cq, ck, 20, 20)


def test_bad_cu_seqlens():
    q, k, v, cq, ck = base()
    i32 = lambda *x: torch.tensor(x, dtype=torch.int32)  # noqa: E731
    with pytest.raises(ValueError, match="'cu_seqlens_q' must start at 0, got 1"):
        mla_prefill(q, k, v, i32(1, 10, 30), ck, 20, 20)
    with pytest.raises(ValueError, match="'cu_seqlens_k' must be non-decreasing, got 20 then 10"):
        mla_prefill(q, k, v, cq, i32(0, 20, 10), 20, 20)
    with pytest.raises(ValueError, match="'cu_seqlens_k' must have size 3 in dimension 0 \\(batch \\+ 1\\), got 4"):
        mla_prefill(q, k, v, cq, i32(0, 20, 25, 30), 20, 20)
    with pytest.raises(ValueError, match="'cu_seqlens_k' must end at total_k = k.shape\\[0\\] = 30, got 29"):
        mla_prefill(q, k, v, cq, i32(0, 10, 29), 20, 20)
    with pytest.raises(ValueError, match="above 'max_seqlen_q' = 19"):
        mla_prefill(q, k, v, cq, ck, 19, 20)
    with pytest.raises(ValueError, match="above 'max_seqlen_k' = 5"):
        mla_prefill(q, k, v, cq, ck, 20, 5)
    with pytest.raises(TypeError, match="'cu_seqlens_q' must have dtype int32"):
        mla_prefill(q, k, v, cq.long(), ck, 20, 20)
    with pytest.raises(ValueError, match="'max_seqlen_q' must be >= 0"):
        mla_prefill(q, k, v, cq, ck, -1, 20)
    with pytest.raises(TypeError, match="'max_seqlen_k' must be an int"):
        mla_prefill(q, k, v, cq, ck, 20, 20.0)
    with pytest.raises(ValueError, match="'cu_seqlens_q' must have at least 1 element"):
        mla_prefill(q[:0], k, v, i32(), ck, 20, 20)


def test_bad_dtypes():
    q, k, v, cq, ck = base()
    with pytest.raises(TypeError, match="'k' must have the dtype of 'q' \\(float32\\), got bfloat16"):
        mla_prefill(q, k.bfloat16(), v, cq, ck, 20, 20)
    with pytest.raises(TypeError, match="'v' must have the dtype of 'q' \\(float32\\), got float16"):
        mla_prefill(q, k, v.half(), cq, ck, 20, 20)
    with pytest.raises(TypeError, match=r"'v' must have the dtype of 'q' \(float32\), got float64"):
        mla_prefill(q, k, v.double(), cq, ck, 20, 20)
    with pytest.raises(TypeError, match="'q' must have dtype bfloat16 or float32 on cpu, got float16"):
        mla_prefill(q.half(), k.half(), v.half(), cq, ck, 20, 20)
    with pytest.raises(TypeError, match="'q' must be a torch.Tensor"):
        mla_prefill(q.numpy(), k, v, cq, ck, 20, 20)


def test_bad_window_and_scale():
    q, k, v, cq, ck = base()
    with pytest.raises(ValueError, match="requires causal=True"):
        ssa_prefill(q, k, v, cq, ck, 20, 20, causal=False)
    with pytest.raises(ValueError, match="'window.local' must be in \\[1, 2\\^31\\], got 0"):
        ssa_prefill(q, k, v, cq, ck, 20, 20, window=blocks(1, 0, 128))
    with pytest.raises(ValueError, match="'window.local' must be in \\[1, 2\\^31\\], got 0"):
        ssa_prefill(q, k, v, cq, ck, 20, 20, window=tokens(1, 0))
    with pytest.raises(ValueError, match="'window.sink' must be in \\[0, 2\\^31\\], got -1"):
        ssa_prefill(q, k, v, cq, ck, 20, 20, window=blocks(-1, 7, 128))
    with pytest.raises(ValueError, match="'window.block_size' must be in \\[1, 2\\^20\\]"):
        ssa_prefill(q, k, v, cq, ck, 20, 20, window=blocks(1, 7, 0))
    with pytest.raises(TypeError, match="'window' must be a longcat.ops.SsaWindow, got dict"):
        ssa_prefill(q, k, v, cq, ck, 20, 20, window={"sink": 1})
    with pytest.raises(ValueError, match="'softmax_scale' must be finite and > 0"):
        mla_prefill(q, k, v, cq, ck, 20, 20, softmax_scale=-1.0)
    with pytest.raises(ValueError, match="'softmax_scale' must be finite and > 0"):
        mla_prefill(q, k, v, cq, ck, 20, 20, softmax_scale=math.inf)
    # The C++ API rejects a window without causal too (callers that skip the Python checks).
    out, lse = torch.empty(30, 4, 8), torch.empty(4, 30)
    with pytest.raises(ValueError, match="requires causal=True"):
        longcat._C.mla_prefill(out, lse, q, k, v, cq, ck, 20, 20, 0.25, False, SsaWindow())
    with pytest.raises(ValueError, match="'window.block_size' must be in \\[1, 2\\^20\\]"):
        longcat._C.mla_prefill(out, lse, q, k, v, cq, ck, 20, 20, 0.25, True, blocks(1, 7, 0))
    with pytest.raises(TypeError):
        longcat._C.mla_prefill(out, lse, q, k, v, cq, ck, 20, 20, 0.25, True, "blocks")
    with pytest.raises(ValueError, match="'lse' must have size 30 in dimension 1"):
        longcat._C.mla_prefill(out, lse[:, :29], q, k, v, cq, ck, 20, 20, 0.25, True, None)
