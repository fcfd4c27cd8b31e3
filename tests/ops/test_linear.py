"""The weight-streaming linear kernel against the plain-torch reference: a shape grid on every
ISA copy (M = 0, odd N and K, tails of every row-group size), strided and 3-D inputs, NaN / Inf
propagation (and no read past a row), autograd, the torch.library registration, bad input."""
import pytest
import torch
import torch.nn.functional as F

import longcat
from longcat.ops import linear, reference

DTYPES = [torch.float32, torch.bfloat16]


def make(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(dtype)


def assert_matches(got, want, x, w):
    """Kernel and reference both sum in fp32 and round once; the sum order differs. Bound the
    difference by the size of the terms: fp32 rounding over K terms, plus one unit in the last
    place of the output dtype."""
    assert got.shape == want.shape and got.dtype == want.dtype
    scale = x.float().abs().reshape(-1, x.shape[-1]) @ w.float().abs().t()
    K = max(1, x.shape[-1])
    ulp = 2.0 ** -8 if got.dtype == torch.bfloat16 else 2.0 ** -23
    tol = scale.reshape(got.shape) * (K * 2.0 ** -24 + ulp) + 1e-30
    err = (got.float() - want.float()).abs()
    assert (err <= tol).all(), f"max error {err.max().item()} (tolerance {tol.min().item()} ..)"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M", [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 33])
@pytest.mark.parametrize("N,K", [(1, 1), (17, 3), (33, 31), (16, 32), (48, 33), (100, 100), (64, 512)])
def test_grid_every_isa(cpu_isa, dtype, M, N, K):
    x, w = make((M, K), dtype, M * 100 + K), make((N, K), dtype, N)
    assert_matches(linear(x, w), reference.linear(x, w), x, w)


@pytest.mark.parametrize("dtype", DTYPES)
def test_model_shapes_match_torch(dtype):
    # The small preset's decode GEMMs (fused q_a + kv_a, q_b, o, gate + up, down, lm_head).
    for N, K in [(832, 512), (512, 256), (512, 256), (2048, 512), (512, 1024), (4096, 512)]:
        for M in (1, 8, 32):
            x, w = make((M, K), dtype, M), make((N, K), dtype, N) * 0.05
            got = linear(x, w)
            assert_matches(got, reference.linear(x, w), x, w)
            assert_matches(got, F.linear(x, w), x, w)


def test_empty_sums_are_zero():
    x, w = torch.empty(3, 0, dtype=torch.bfloat16), torch.empty(5, 0, dtype=torch.bfloat16)
    assert torch.equal(linear(x, w), torch.zeros(3, 5, dtype=torch.bfloat16))
    assert linear(torch.empty(0, 4), torch.ones(6, 4)).shape == (0, 6)
    assert linear(torch.ones(2, 4), torch.empty(0, 4)).shape == (2, 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_strided_and_batched_inputs(cpu_isa, dtype):
    big = make((9, 100), dtype, 1)
    big[:, :3] = float("nan")  # outside the slice: must never be read
    big[:, 3 + 65:] = float("nan")
    x = big[:, 3:3 + 65]  # a column slice: rows 100 apart, read in place
    w = make((37, 65), dtype, 2)
    got = linear(x, w)
    assert torch.isfinite(got).all()
    assert_matches(got, reference.linear(x.contiguous(), w), x, w)
    xt = make((65, 9), dtype, 3).t()  # last dim not contiguous: copied
    assert_matches(linear(xt, w), reference.linear(xt, w), xt, w)
    x3 = make((2, 5, 65), dtype, 4)
    assert_matches(linear(x3, w), reference.linear(x3, w), x3, w)
    wt = make((65, 37), dtype, 5).t()  # a non-contiguous weight is copied
    assert_matches(linear(x, wt), reference.linear(x, wt), x, wt)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_and_inf_propagate(cpu_isa, dtype):
    x, w = make((9, 70), dtype, 1), make((19, 70), dtype, 2)
    x[1, 5] = float("nan")
    w[3, 69] = float("inf")  # the last element: in the masked / scalar tail
    got = linear(x, w)
    want = reference.linear(x, w)
    assert torch.isnan(got[1]).all()
    assert torch.equal(torch.isnan(got), torch.isnan(want)) and torch.equal(torch.isinf(got), torch.isinf(want))
    rows = [0, 2, 3, 4, 5, 6, 7, 8]
    cols = [c for c in range(19) if c != 3]
    assert_matches(got[rows][:, cols], want[rows][:, cols], x[rows], w[cols])


def test_threads_agree():
    x, w = make((8, 512), torch.bfloat16, 1), make((4096, 512), torch.bfloat16, 2)
    before = longcat.num_threads()
    try:
        longcat.set_num_threads(1)
        one = linear(x, w)
        longcat.set_num_threads(2)
        two = linear(x, w)
    finally:
        longcat.set_num_threads(before)
    assert torch.equal(one, two)  # each output is computed by one thread in one order


def test_autograd_and_registration():
    x = make((5, 33), torch.float32, 1).requires_grad_()
    w = make((7, 33), torch.float32, 2).requires_grad_()
    linear(x, w).square().sum().backward()
    gx, gw = x.grad, w.grad
    x.grad = w.grad = None
    F.linear(x, w).square().sum().backward()
    torch.testing.assert_close(gx, x.grad)
    torch.testing.assert_close(gw, w.grad)
    torch.library.opcheck(torch.ops.longcat.linear.default, (make((4, 16), torch.float32), make((3, 16), torch.float32)))
    with torch.device("meta"):
        assert linear(torch.empty(2, 3, 16), torch.empty(5, 16)).shape == (2, 3, 5)


def test_bad_input():
    x, w = torch.ones(2, 8), torch.ones(3, 8)
    with pytest.raises(TypeError, match="'x' must be a torch.Tensor"):
        linear([1.0], w)
    with pytest.raises(TypeError, match="'x' must have dtype float32 or bfloat16, got float16"):
        linear(x.half(), w.half())
    with pytest.raises(TypeError, match="'weight' must have the dtype of 'x'"):
        linear(x, w.bfloat16())
    with pytest.raises(ValueError, match=r"'weight' must have shape \[N, 8\]"):
        linear(x, torch.ones(3, 7))
    with pytest.raises(ValueError, match=r"'weight' must have shape \[N, 8\]"):
        linear(x, torch.ones(8))
    with pytest.raises(ValueError, match="at least 1 dimension"):
        linear(torch.tensor(1.0), w)


def test_c_api_validates():
    from longcat import _C

    x, w = torch.ones(2, 8), torch.ones(3, 8)
    with pytest.raises(ValueError, match="'out' must have size 3 in dimension 1"):
        _C.linear(torch.empty(2, 4), x, w)
    with pytest.raises(ValueError, match="'out'"):  # out overlapping x
        buf = torch.ones(2, 8)
        _C.linear(buf[:, :3], buf, w)
    with pytest.raises(TypeError, match="'weight'"):
        _C.linear(torch.empty(2, 3), x, w.double())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("G,M,N,K", [(1, 1, 16, 32), (4, 8, 512, 64), (4, 3, 64, 512), (3, 5, 17, 33), (2, 0, 5, 7)])
def test_batched_per_group_weights(cpu_isa, dtype, G, M, N, K):
    # x as the model passes it: one head of a [M, heads, K'] tensor, a transposed view.
    q = make((M, G, K + 6), dtype, G * M + K)
    x = q[..., 3:3 + K].transpose(0, 1)  # [G, M, K], rows G * (K + 6) apart, groups K + 6
    w = make((G, N, K), dtype, N)
    got = linear(x, w)
    want = reference.linear(x, w)
    assert got.shape == (G, M, N)
    for g in range(G):
        assert_matches(got[g], want[g], x[g], w[g])
        assert_matches(got[g], linear(x[g].contiguous(), w[g]), x[g], w[g])


def test_batched_bad_input_and_grad():
    with pytest.raises(ValueError, match=r"with a 3-D 'weight' \[G, N, K\]"):
        linear(torch.ones(2, 3, 8), torch.ones(3, 4, 8))
    with pytest.raises(ValueError, match=r"with a 3-D 'weight' \[G, N, K\]"):
        linear(torch.ones(3, 8), torch.ones(3, 4, 8))
    x = make((3, 4, 16), torch.float32, 1).requires_grad_()
    w = make((3, 5, 16), torch.float32, 2).requires_grad_()
    linear(x, w).square().sum().backward()
    gx, gw = x.grad, w.grad
    x.grad = w.grad = None
    torch.bmm(x, w.transpose(1, 2)).square().sum().backward()
    torch.testing.assert_close(gx, x.grad)
    torch.testing.assert_close(gw, w.grad)
    torch.library.opcheck(torch.ops.longcat.linear.default, (make((3, 4, 16), torch.float32),
                                                             make((3, 5, 16), torch.float32)))


def test_negative_and_zero_strides():
    import numpy as np

    from longcat import _C

    x = np.random.default_rng(0).standard_normal((6, 8)).astype(np.float32)[::-1]
    w, out = np.ones((3, 8), np.float32), np.empty((6, 3), np.float32)
    with pytest.raises(ValueError, match=r"linear: argument 'x' has a negative stride -8 in dimension 0"):
        _C.linear(out, x, w)
    with pytest.raises(ValueError, match=r"linear: argument 'out' has a negative stride"):
        _C.linear(np.empty((6, 3), np.float32)[::-1], np.ascontiguousarray(x), w)
    # An expanded x (row stride 0) is read as it is: every row the same.
    row = make((1, 40), torch.bfloat16, 1)
    wt = make((9, 40), torch.bfloat16, 2)
    got = linear(row.expand(5, 40), wt)
    assert torch.equal(got, linear(row, wt).expand(5, 9))


def test_bench_quick_runs():
    from longcat.bench import AREAS
    from longcat.bench.linear import run

    assert AREAS["linear"] == "longcat.bench.linear"
    result = run(quick=True)
    assert {(r["matrix"], r["rows"]) for r in result.rows} >= {("gate+up", 8), ("lm_head", 1)}
    for row in result.rows:
        assert row["longcat_us"] > 0 and row["F.linear_us"] > 0 and row["vs_F.linear"] > 0
    assert result.context["isa_copies_us_gate+up_8_rows"]  # at least the active copy


@pytest.mark.parametrize("dtype", DTYPES)
def test_out_strided_rows_and_groups(cpu_isa, dtype):
    # As MLA decode uses it: per-head projections written into the first 512 values of each head
    # of a [M, heads, 576] buffer (rows heads * 576 apart, groups 576), the rest untouched.
    G, M, N, K = 4, 5, 512, 64
    x = make((M, G, K), dtype, 1).transpose(0, 1)
    w = make((G, N, K), dtype, 2)
    buf = torch.full((M, G, N + 64), float("nan"), dtype=dtype)
    out = buf[..., :N].transpose(0, 1)
    assert linear(x, w, out=out) is out
    assert torch.equal(out, linear(x, w))
    assert torch.isnan(buf[..., N:]).all()
    # 2-D: rows of a wider buffer; and x with more dims than a 2-D weight.
    x2, w2 = make((7, 33), dtype, 3), make((17, 33), dtype, 4)
    wide = torch.zeros(7, 40, dtype=dtype)
    linear(x2, w2, out=wide[:, 2:19])
    assert torch.equal(wide[:, 2:19], linear(x2, w2))
    assert (wide[:, :2] == 0).all() and (wide[:, 19:] == 0).all()
    x3 = make((2, 3, 33), dtype, 5)
    out3 = torch.empty(2, 3, 17, dtype=dtype)
    assert torch.equal(linear(x3, w2, out=out3), linear(x3, w2))


def test_out_bad_input():
    from longcat import _C

    x, w = torch.ones(2, 8), torch.ones(3, 8)
    with pytest.raises(ValueError, match=r"'out' must have shape \[2, 3\] and dtype torch.float32, got \[2, 4\]"):
        linear(x, w, out=torch.empty(2, 4))
    with pytest.raises(ValueError, match="'out' must have shape"):
        linear(x, w, out=torch.empty(2, 3, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="'out' must have a contiguous last dimension"):
        linear(x, w, out=torch.empty(3, 2).t())
    with pytest.raises(TypeError, match="'out' must be a torch.Tensor"):
        linear(x, w, out=[0.0])
    with pytest.raises(ValueError, match="merge into one row stride"):
        linear(torch.ones(2, 3, 8), w, out=torch.empty(3, 2, 3).transpose(0, 1))
    with pytest.raises(RuntimeError, match="does not support autograd"):
        linear(x.requires_grad_(), w, out=torch.empty(2, 3))
    # The C API: rows that share memory, and out overlapping x, are refused.
    with pytest.raises(ValueError, match="'out' has elements that share memory"):
        _C.linear(torch.empty(1, 3).expand(2, 3), torch.ones(2, 8), w)
    with pytest.raises(ValueError, match="'out' has elements that share memory"):
        _C.linear(torch.empty(12).as_strided((2, 3), (2, 1)), torch.ones(2, 8), w)
    buf = torch.zeros(2, 11)
    with pytest.raises(ValueError, match="'out' overlaps 'x'"):
        _C.linear(buf[:, 8:], buf[:, :8], w)
