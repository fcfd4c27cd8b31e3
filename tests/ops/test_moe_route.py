"""MoE routing, dispatch and combine kernels against the plain-torch references: a shape grid
(route -> dispatch -> combine per case), the edge cases of zero-computation experts (all tokens
to one expert, only zero experts, experts with no tokens, ties), every ISA copy, thread counts,
hypothesis property tests, gradients, opcheck, torch.compile(fullgraph=True), and bad input."""
import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import longcat
from longcat.ops import moe_combine, moe_dispatch, moe_route, reference

DTYPES = [torch.float32, torch.bfloat16]


def make_router(T, H, n_routed, n_zero, dtype=torch.float32, seed=0, bias=True):
    g = torch.Generator().manual_seed(seed)
    E = n_routed + n_zero
    hidden = torch.randn(T, H, generator=g).to(dtype)
    weight = torch.randn(E, H, generator=g) / max(H, 1) ** 0.5
    b = torch.randn(E, generator=g) * 0.05 if bias else None
    return hidden, weight, b


def ref_scores(hidden, weight, bias, score):
    z = torch.nn.functional.linear(hidden.float(), weight.float())
    s = z.softmax(-1) if score == "softmax" else z.sigmoid()
    return s, (s if bias is None else s + bias)


def check_route(hidden, weight, bias, top_k, n_routed, n_zero, routed_scaling_factor=1.0, score="softmax",
                renormalize=False):
    """Kernel vs reference. Ids must match exactly, except where the reference's biased scores
    of the two choices agree to fp32 noise (the kernel sums the logits in another order)."""
    scale = routed_scaling_factor
    ids, w = moe_route(hidden, weight, bias, top_k, n_routed, n_zero, scale, score, renormalize)
    rids, rw = reference.moe_route(hidden, weight, bias, top_k, n_routed, n_zero, scale, score,
                                   renormalize)
    T = hidden.shape[0]
    assert ids.dtype == torch.int32 and w.dtype == torch.float32
    assert ids.shape == (T, top_k) and w.shape == (T, top_k)
    if torch.equal(ids, rids):
        torch.testing.assert_close(w, rw, rtol=1e-5, atol=1e-7)
        return ids, w
    assert ((ids >= 0) & (ids < n_routed + n_zero)).all()
    if top_k > 1:
        assert (ids.sort(dim=1).values.diff(dim=1) > 0).all(), "an expert chosen twice"
    s, biased = ref_scores(hidden, weight, bias, score)
    torch.testing.assert_close(biased.gather(1, ids.long()), biased.gather(1, rids.long()),
                               rtol=0, atol=2e-6)
    want = s.gather(1, ids.long())
    if renormalize:
        want = want / (want.sum(-1, keepdim=True) + 1e-20)
    torch.testing.assert_close(w, want * scale, rtol=1e-5, atol=1e-7)
    return ids, w


def check_dispatch(x, ids, n_routed, align):
    got = moe_dispatch(x, ids, n_routed, align)
    want = reference.moe_dispatch(x, ids, n_routed, align)
    names = ["x_perm", "counts", "offsets", "row_token", "slot_row"]
    for name, a, b in zip(names, got, want):
        assert a.dtype == b.dtype and a.shape == b.shape, (name, a.shape, b.shape)
        assert torch.equal(a, b), name
    offsets = got[2]
    assert (offsets % align == 0).all()
    return got


def check_combine(expert_out, slot_row, ids, w, x, n_routed):
    y = moe_combine(expert_out, slot_row, ids, w, x, n_routed)
    want = reference.moe_combine(expert_out, slot_row, ids, w, x, n_routed)
    assert y.dtype == x.dtype and y.shape == x.shape
    torch.testing.assert_close(y, want, rtol=1e-5 if x.dtype == torch.float32 else None,
                               atol=1e-5 if x.dtype == torch.float32 else None)
    return y


def pipeline(T, H, top_k, n_routed, n_zero, dtype, align, seed=0, **route_kw):
    hidden, weight, bias = make_router(T, H, n_routed, n_zero, dtype, seed)
    ids, w = check_route(hidden, weight, bias, top_k, n_routed, n_zero, **route_kw)
    x_perm, counts, offsets, row_token, slot_row = check_dispatch(hidden, ids, n_routed, align)
    # A stand-in expert: scale each row by (1 + its expert id / 8); padding rows stay 0.
    expert_of_row = torch.bucketize(torch.arange(x_perm.shape[0]), offsets[1:].long(), right=True)
    expert_out = (x_perm.float() * (1 + expert_of_row[:, None] / 8)).to(dtype)
    check_combine(expert_out, slot_row, ids, w, hidden, n_routed)


# ---- the grid ------------------------------------------------------------------------------

# H 6144 only for small T, T 1000 only with H 64: the plain-torch references dominate the time.
TH = [(T, H) for T in (0, 1, 7) for H in (64, 256, 6144)] + [(128, 64), (128, 256), (1000, 64)]
GRID = [(T, H, k, nr, nz) for (T, H), k, nr, nz in itertools.product(TH, (1, 2, 8, 12), (1, 8, 64, 512), (0, 4, 256))
        if k <= nr + nz]


@pytest.mark.parametrize("T,H,top_k,n_routed,n_zero", GRID)
def test_grid(T, H, top_k, n_routed, n_zero):
    # dtype and align cycle over the cases (every combination of them still occurs many times),
    # which keeps the file within about a minute on 2 cores.
    i = GRID.index((T, H, top_k, n_routed, n_zero))
    dtype, align = DTYPES[i % 2], (1, 16, 128)[(i // 2) % 3]
    pipeline(T, H, top_k, n_routed, n_zero, dtype, align, seed=T + H + top_k, routed_scaling_factor=2.5)


@pytest.mark.parametrize("score,renormalize", [("softmax", True), ("sigmoid", False), ("sigmoid", True)])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_score_variants(score, renormalize, dtype):
    pipeline(100, 256, 8, 64, 4, dtype, 16, seed=3, score=score, renormalize=renormalize,
             routed_scaling_factor=2.5)


def test_longcat_shape_small_batch():
    # LongCat-Flash: H 6144, 512 routed + 256 zero experts, top-12, scale 6.
    pipeline(16, 6144, 12, 512, 256, torch.bfloat16, 128, seed=5, routed_scaling_factor=6.0)


def test_isa_copies(cpu_isa):
    for dtype in DTYPES:
        pipeline(37, 200, 8, 64, 4, dtype, 16, seed=7, routed_scaling_factor=1.5)
        pipeline(5, 6144, 12, 512, 256, dtype, 1, seed=8)


def test_threads_give_identical_results():
    hidden, weight, bias = make_router(300, 512, 64, 16, torch.bfloat16, 9)
    n = longcat.num_threads()
    outs = []
    try:
        for threads in (1, 2, 3):
            longcat.set_num_threads(threads)
            ids, w = moe_route(hidden, weight, bias, 8, 64, 16)
            x_perm, *_, slot = moe_dispatch(hidden, ids, 64, 16)
            outs.append((ids, w, x_perm, moe_combine(x_perm, slot, ids, w, hidden, 64)))
    finally:
        longcat.set_num_threads(n)
    for o in outs[1:]:
        for a, b in zip(o, outs[0]):
            assert torch.equal(a, b)


# ---- edge cases ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_token_to_one_expert(dtype):
    T, H, nr, nz = 50, 64, 8, 4
    hidden, weight, _ = make_router(T, H, nr, nz, dtype, 1)
    bias = torch.zeros(nr + nz)
    bias[3] = 10.0
    ids, w = check_route(hidden, weight, bias, 1, nr, nz)
    assert (ids == 3).all()
    x_perm, counts, offsets, row_token, slot_row = check_dispatch(hidden, ids, nr, 16)
    assert counts.tolist() == [0, 0, 0, 50, 0, 0, 0, 0]  # the others get no tokens
    assert offsets.tolist() == [0, 0, 0, 0, 64, 64, 64, 64, 64]
    assert torch.equal(x_perm[:50], hidden) and (x_perm[50:] == 0).all()
    assert torch.equal(row_token[:50], torch.arange(50, dtype=torch.int32)) and (row_token[50:] == -1).all()
    check_combine(x_perm * 2, slot_row, ids, w, hidden, nr)


@pytest.mark.parametrize("align", [1, 16, 128])
def test_only_zero_experts(align):
    T, H, nr, nz = 20, 64, 8, 4
    hidden, weight, _ = make_router(T, H, nr, nz, torch.bfloat16, 2)
    bias = torch.zeros(nr + nz)
    bias[nr:] = 10.0
    ids, w = check_route(hidden, weight, bias, 3, nr, nz, 2.0)
    assert (ids >= nr).all()
    x_perm, counts, offsets, row_token, slot_row = check_dispatch(hidden, ids, nr, align)
    assert x_perm.shape == (0, H) and row_token.shape == (0,)
    assert (counts == 0).all() and (offsets == 0).all() and (slot_row == -1).all()
    y = check_combine(x_perm, slot_row, ids, w, hidden, nr)
    torch.testing.assert_close(y, (w.sum(1, keepdim=True) * hidden.float()).to(hidden.dtype))


def test_ties_go_to_lowest_id():
    T, H, nr, nz = 6, 32, 64, 4
    hidden = torch.randn(T, H)
    weight = torch.zeros(nr + nz, H)  # every logit 0: all scores equal 1/E
    ids, w = check_route(hidden, weight, None, 8, nr, nz, 3.0)
    assert torch.equal(ids, torch.arange(8, dtype=torch.int32).expand(T, 8))
    torch.testing.assert_close(w, torch.full((T, 8), 3.0 / (nr + nz)))
    # Duplicate biases: the biased ties among experts 5, 9, 2 resolve by id.
    bias = torch.zeros(nr + nz)
    bias[[9, 5, 2]] = 0.5
    bias[40] = 0.7
    ids, _ = check_route(hidden, weight, bias, 5, nr, nz)
    assert torch.equal(ids, torch.tensor([40, 2, 5, 9, 0], dtype=torch.int32).expand(T, 5))
    ids, w = check_route(hidden, weight, bias, 4, nr, nz, renormalize=True)
    torch.testing.assert_close(w, torch.full((T, 4), 0.25))


def test_dispatch_stable_in_token_order_with_duplicates():
    # The kernel's contract is the flattened (t, j) order, including a repeated id in one row.
    ids = torch.tensor([[2, 0], [0, 2], [2, 2], [5, 1]], dtype=torch.int32)
    x = torch.arange(4 * 8, dtype=torch.float32).view(4, 8)
    x_perm, counts, offsets, row_token, slot_row = check_dispatch(x, ids, 4, 2)
    assert counts.tolist() == [2, 1, 4, 0]
    assert offsets.tolist() == [0, 2, 4, 8, 8]
    assert row_token.tolist() == [0, 1, 3, -1, 0, 1, 2, 2]
    assert slot_row.tolist() == [[4, 0], [1, 5], [6, 7], [-1, 2]]


def test_strided_hidden_rows():
    hidden, weight, bias = make_router(9, 96, 16, 4, torch.bfloat16, 4)
    wide = torch.cat([hidden, hidden], dim=1)[:, :96]  # rows with stride 192
    assert not wide.is_contiguous()
    ids, w = check_route(wide, weight, bias, 4, 16, 4)
    x_perm, _, _, _, slot = check_dispatch(wide, ids, 16, 1)
    check_combine(torch.cat([x_perm, x_perm], 1)[:, :96], slot, ids, w, wide, 16)


def test_nan_rows_give_valid_ids_and_stay_in_their_row():
    hidden, weight, _ = make_router(5, 64, 8, 4, torch.float32, 16)
    hidden[1, 3] = float("nan")
    hidden[2, 0] = float("inf")
    ids, w = moe_route(hidden, weight, None, 4, 8, 4)
    assert ((ids >= 0) & (ids < 12)).all()
    assert torch.isnan(w[1]).all()
    keep = [0, 3, 4]
    rids, rw = reference.moe_route(hidden[keep], weight, None, 4, 8, 4)
    assert torch.equal(ids[keep], rids)
    torch.testing.assert_close(w[keep], rw)


@settings(max_examples=40, deadline=None)
@given(T=st.integers(0, 60), H=st.integers(0, 130), n_routed=st.integers(0, 40), n_zero=st.integers(0, 20),
       k_frac=st.floats(0, 1), bf16=st.booleans(), align=st.sampled_from([1, 2, 3, 16, 128]),
       bias=st.booleans(), score=st.sampled_from(["softmax", "sigmoid"]), renormalize=st.booleans(),
       seed=st.integers(0, 1000))
def test_property_random_shapes(T, H, n_routed, n_zero, k_frac, bf16, align, bias, score, renormalize, seed):
    E = n_routed + n_zero
    if E == 0:
        return
    top_k = 1 + int(k_frac * (E - 1))
    dtype = torch.bfloat16 if bf16 else torch.float32
    hidden, weight, b = make_router(T, H, n_routed, n_zero, dtype, seed, bias)
    ids, w = check_route(hidden, weight, b, top_k, n_routed, n_zero, 1.7, score, renormalize)
    x_perm, counts, offsets, row_token, slot_row = check_dispatch(hidden, ids, n_routed, align)
    check_combine((x_perm.float() * 0.5).to(dtype), slot_row, ids, w, hidden, n_routed)


# ---- autograd, opcheck, torch.compile ----------------------------------------------------------

@pytest.mark.parametrize("score,renormalize", [("softmax", False), ("softmax", True), ("sigmoid", True)])
def test_route_gradients_match_reference(score, renormalize):
    hidden, weight, bias = make_router(10, 24, 8, 4, torch.float32, 11)
    g = torch.randn(10, 3)

    def grads(fn):
        h, wt = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        ids, w = fn(h, wt, bias, 3, 8, 4, 2.0, score, renormalize)
        (w * g).sum().backward()
        return ids, h.grad, wt.grad

    ids, gh, gw = grads(moe_route)
    rids, rgh, rgw = grads(reference.moe_route)
    assert torch.equal(ids, rids)
    torch.testing.assert_close(gh, rgh, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gw, rgw, rtol=1e-5, atol=1e-6)


def test_dispatch_combine_gradients_match_reference():
    hidden, weight, bias = make_router(12, 16, 6, 3, torch.float32, 12)
    ids, w0 = moe_route(hidden, weight, bias, 4, 6, 3)
    g = torch.randn(12, 16)
    w_expert = torch.randn(16, 16)

    def grads(dispatch, combine):
        x = hidden.clone().requires_grad_()
        w = w0.clone().requires_grad_()
        x_perm, _, _, _, slot = dispatch(x, ids, 6, 4)
        y = combine(x_perm @ w_expert, slot, ids, w, x, 6)
        (y * g).sum().backward()
        return x.grad, w.grad

    for got, want in zip(grads(moe_dispatch, moe_combine), grads(reference.moe_dispatch, reference.moe_combine)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_combine_gradients_match_reference(dtype):
    # Every input of combine at once, with padding rows (their gradient is 0) and zero experts.
    hidden, weight, bias = make_router(9, 16, 4, 2, dtype, 13)
    ids, w0 = moe_route(hidden, weight, bias, 3, 4, 2)
    x_perm, _, _, _, slot = moe_dispatch(hidden, ids, 4, 4)
    assert (ids >= 4).any() and x_perm.shape[0] > (ids < 4).sum()
    gy = torch.randn(9, 16).to(dtype)

    def grads(combine):
        eo, w, x = (t.clone().requires_grad_() for t in (x_perm, w0, hidden))
        combine(eo, slot, ids, w, x, 4).backward(gy)
        return eo.grad, w.grad, x.grad

    tol = {} if dtype == torch.bfloat16 else {"rtol": 1e-5, "atol": 1e-6}
    for got, want in zip(grads(moe_combine), grads(reference.moe_combine)):
        torch.testing.assert_close(got, want, **tol)


def test_opcheck():
    hidden, weight, bias = make_router(6, 16, 8, 4, torch.float32, 14)
    torch.library.opcheck(torch.ops.longcat.moe_route.default,
                          (hidden, weight, bias, 3, 8, 4, 2.0, "softmax", False))
    ids, w = moe_route(hidden, weight, bias, 3, 8, 4)
    torch.library.opcheck(torch.ops.longcat.moe_dispatch.default, (hidden, ids, 8, 4))
    x_perm, _, _, _, slot = moe_dispatch(hidden, ids, 8, 4)
    torch.library.opcheck(torch.ops.longcat.moe_combine.default, (x_perm, slot, ids, w, hidden, 8))


def test_torch_compile_fullgraph():
    def moe(h, router_w, bias, w_expert):
        ids, w = moe_route(h, router_w, bias, 3, 8, 4, 1.5)
        x_perm, counts, offsets, row_token, slot = moe_dispatch(h, ids, 8, 16)
        return moe_combine(x_perm @ w_expert, slot, ids, w, h, 8)

    torch._dynamo.reset()
    hidden, router_w, bias = make_router(10, 32, 8, 4, torch.float32, 15)
    w_expert = torch.randn(32, 32) / 6
    compiled = torch.compile(moe, fullgraph=True, backend="aot_eager")
    h1 = hidden.clone().requires_grad_()
    h2 = hidden.clone().requires_grad_()
    got, want = compiled(h1, router_w, bias, w_expert), moe(h2, router_w, bias, w_expert)
    torch.testing.assert_close(got, want)
    got.sum().backward()
    want.sum().backward()
    torch.testing.assert_close(h1.grad, h2.grad)


def test_meta_tensors():
    h = torch.empty(5, 16, device="meta")
    ids, w = moe_route(h, torch.empty(12, 16, device="meta"), None, 3, 8, 4)
    assert ids.shape == (5, 3) and ids.dtype == torch.int32 and w.dtype == torch.float32
    y = moe_combine(torch.empty(7, 16, device="meta"), ids, ids, w, h, 8)
    assert y.shape == (5, 16) and y.device.type == "meta"


# ---- bad input: each names the argument ------------------------------------------------------

def route_args(**over):
    hidden, weight, bias = make_router(4, 16, 8, 4)
    args = dict(hidden=hidden, weight=weight, correction_bias=bias, top_k=2, n_routed=8, n_zero=4)
    args.update(over)
    return args


def test_route_bad_dtypes():
    with pytest.raises(TypeError, match=r"moe_route: argument 'hidden' must have dtype bfloat16 or float32 on cpu, got float16"):
        moe_route(**route_args(hidden=torch.randn(4, 16).half()))
    with pytest.raises(TypeError, match=r"'weight' must have dtype float32 on cpu, got bfloat16"):
        moe_route(**route_args(weight=torch.randn(12, 16).bfloat16()))
    with pytest.raises(TypeError, match=r"'correction_bias' must have dtype float32 on cpu, got float64"):
        moe_route(**route_args(correction_bias=torch.zeros(12, dtype=torch.float64)))
    with pytest.raises(TypeError, match=r"'hidden' must be a torch.Tensor, got list"):
        moe_route(**route_args(hidden=[[1.0]]))
    with pytest.raises(TypeError, match=r"'top_k' must be an int, got float"):
        moe_route(**route_args(top_k=2.0))


def test_route_bad_shapes():
    with pytest.raises(ValueError, match=r"'weight' must have size 16 in dimension 1 \(the hidden size hidden.shape\[1\]\), got 15"):
        moe_route(**route_args(weight=torch.randn(12, 15)))
    with pytest.raises(ValueError, match=r"'weight' must have size 12 in dimension 0 \(the number of experts E = n_routed \+ n_zero\), got 11"):
        moe_route(**route_args(weight=torch.randn(11, 16)))
    with pytest.raises(ValueError, match=r"'correction_bias' must have size 12 in dimension 0"):
        moe_route(**route_args(correction_bias=torch.zeros(13)))
    with pytest.raises(ValueError, match=r"'hidden' must have 2 dimensions, got 3"):
        moe_route(**route_args(hidden=torch.randn(2, 2, 16)))
    with pytest.raises(ValueError, match=r"'top_k' must be in \[1, E\] with E = n_routed \+ n_zero = 12, got 13"):
        moe_route(**route_args(top_k=13))
    with pytest.raises(ValueError, match=r"'top_k' must be in \[1, E\].*got 0"):
        moe_route(**route_args(top_k=0))
    with pytest.raises(ValueError, match=r"'n_zero' must be >= 0, got -1"):
        moe_route(**route_args(n_zero=-1))


def test_route_bad_layout_and_options():
    with pytest.raises(ValueError, match=r"'weight' must be contiguous"):
        moe_route(**route_args(weight=torch.randn(16, 12).t()))
    with pytest.raises(ValueError, match=r"'hidden' must have a contiguous last dimension"):
        moe_route(**route_args(hidden=torch.randn(16, 4).t()))
    with pytest.raises(ValueError, match=r"'correction_bias' must be contiguous"):
        moe_route(**route_args(correction_bias=torch.zeros(24)[::2]))
    with pytest.raises(ValueError, match=r"'score' must be 'softmax' or 'sigmoid', got 'relu'"):
        moe_route(**route_args(), score="relu")
    with pytest.raises(ValueError, match=r"'routed_scaling_factor' must be finite"):
        moe_route(**route_args(), routed_scaling_factor=float("nan"))
    with pytest.raises(ValueError, match=r"'weight' must be on the device of 'hidden' \(cpu\), got meta"):
        moe_route(**route_args(weight=torch.empty(12, 16, device="meta")))
    with pytest.raises(ValueError, match=r"score"):  # the C++ API checks the string too
        longcat._C.moe_route(torch.empty(4, 2, dtype=torch.int32), torch.empty(4, 2), torch.randn(4, 16),
                             torch.randn(12, 16), None, 8, 4, 1.0, "tanh")


def test_dispatch_bad_input():
    x = torch.randn(4, 16)
    ids = torch.tensor([[0, 1], [2, 3], [1, 1], [0, 9]], dtype=torch.int32)
    with pytest.raises(ValueError, match=r"moe_dispatch_layout: argument 'topk_ids' must hold expert ids >= 0, got -1 at \[1, 0\]"):
        moe_dispatch(x, torch.tensor([[0, 1], [-1, 3], [1, 1], [0, 9]], dtype=torch.int32), 8)
    with pytest.raises(TypeError, match=r"'topk_ids' must have dtype int32 on cpu, got int64"):
        moe_dispatch(x, ids.long(), 8)
    with pytest.raises(TypeError, match=r"'x' must have dtype bfloat16 or float32 on cpu, got float16"):
        moe_dispatch(x.half(), ids, 8)
    with pytest.raises(ValueError, match=r"'topk_ids' must have size 4 in dimension 0 \(the number of tokens x.shape\[0\]\), got 3"):
        moe_dispatch(x, ids[:3], 8)
    with pytest.raises(ValueError, match=r"'topk_ids' must be contiguous"):
        moe_dispatch(x, torch.zeros(2, 4, dtype=torch.int32).t(), 8)
    with pytest.raises(ValueError, match=r"'align' must be >= 1, got 0"):
        moe_dispatch(x, ids, 8, 0)
    with pytest.raises(ValueError, match=r"'n_routed' must be >= 0, got -2"):
        moe_dispatch(x, ids, -2)
    with pytest.raises(ValueError, match=r"'topk_ids' must have 2 dimensions, got 1"):
        moe_dispatch(x, ids.flatten(), 8)


def test_dispatch_cpp_checks_layout_consistency():
    x = torch.randn(4, 16)
    ids = torch.tensor([[0, 1], [2, 3], [1, 1], [0, 9]], dtype=torch.int32)
    counts, offsets = torch.empty(8, dtype=torch.int32), torch.empty(9, dtype=torch.int32)
    longcat._C.moe_dispatch_layout(counts, offsets, ids, 8, 1)
    R = int(offsets[-1])
    outs = (torch.empty(R + 1, 16), torch.empty(R + 1, dtype=torch.int32), torch.empty(4, 2, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"'x_perm' must have R = offsets\[n_routed\] = 7 rows"):
        longcat._C.moe_dispatch(*outs, x, ids, counts, offsets, 8)
    bad = counts.clone()
    bad[0] -= 1
    outs = (torch.empty(R, 16), torch.empty(R, dtype=torch.int32), torch.empty(4, 2, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"'counts'"):
        longcat._C.moe_dispatch(*outs, x, ids, bad, offsets, 8)


def test_combine_bad_input():
    hidden, weight, bias = make_router(4, 16, 8, 4)
    ids, w = moe_route(hidden, weight, bias, 2, 8, 4)
    x_perm, _, _, _, slot = moe_dispatch(hidden, ids, 8)
    routed = (ids < 8).nonzero()[0].tolist()
    bad_slot = slot.clone()
    bad_slot[routed[0], routed[1]] = x_perm.shape[0]
    with pytest.raises(ValueError, match=r"moe_combine: argument 'slot_row' must hold a row of expert_out in \[0, "):
        moe_combine(x_perm, bad_slot, ids, w, hidden, 8)
    neg = ids.clone()
    neg[0, 0] = -3
    with pytest.raises(ValueError, match=r"'topk_ids' must hold expert ids >= 0, got -3"):
        moe_combine(x_perm, slot, neg, w, hidden, 8)
    with pytest.raises(TypeError, match=r"'expert_out' must have the dtype of 'x' \(float32\), got bfloat16"):
        moe_combine(x_perm.bfloat16(), slot, ids, w, hidden, 8)
    with pytest.raises(TypeError, match=r"'topk_weights' must have dtype float32 on cpu, got bfloat16"):
        moe_combine(x_perm, slot, ids, w.bfloat16(), hidden, 8)
    with pytest.raises(ValueError, match=r"'expert_out' must have size 16 in dimension 1"):
        moe_combine(x_perm[:, :8], slot, ids, w, hidden, 8)
    with pytest.raises(ValueError, match=r"'topk_weights' must have size 2 in dimension 1"):
        moe_combine(x_perm, slot, ids, w[:, :1].contiguous(), hidden, 8)
    with pytest.raises(ValueError, match=r"'slot_row' must be contiguous"):
        moe_combine(x_perm, slot.t().contiguous().t(), ids, w, hidden, 8)
