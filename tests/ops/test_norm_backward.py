"""The RMSNorm backward kernel (``longcat::rms_norm_backward``, what autograd through ``rms_norm``
and ``fused_add_rms_norm`` runs) against float64 autograd through the plain-torch reference:
shape grid over every ISA copy, strided rows, NaN, thread and ISA independence, and bad input
to the C++ op."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import longcat
from longcat import _C
from longcat.ops import fused_add_rms_norm, reference, rms_norm

ROWS = [1, 3, 64, 65, 257]      # 64 rows is one row per partial sum on CPU; 65 and 257 share blocks
HIDDEN = [1, 7, 16, 17, 64, 576, 6144]


def make(shape, dtype, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * scale).to(dtype)


def kernel_grads(x, w, g, eps=1e-6):
    x, w = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    rms_norm(x, w, eps).backward(g)
    return x.grad, w.grad


def exact_grads(x, w, g, eps=1e-6):
    """float64 autograd through the reference: the gradient of the math the kernel differentiates."""
    x64, w64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    reference.rms_norm(x64, w64, eps).backward(g.double())
    return x64.grad, w64.grad


def term_scale(x, w, g, eps=1e-6):
    """The largest |r * g * w|: grad_x is that term minus c * x, so fp32 cancellation between
    the two is relative to it, not to grad_x (with one column the two cancel exactly)."""
    x64 = x.double()
    r = torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + eps)
    return (r * g.double() * w.double()).abs().max().item() if x.numel() else 0.0


def assert_close_to_exact(got, want, dtype, scale=0.0):
    # fp32: sum-order noise only. bf16: the inputs are rounded alike on both sides; the results
    # round once to bf16 (8 bits of mantissa), so about one unit in the last place of the largest.
    scale = max(scale, want.abs().max().item() if want.numel() else 0.0)
    tol = (1e-5 if dtype == torch.float32 else 1e-2) * max(scale, 1.0)
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), want, rtol=0, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("hidden", HIDDEN)
def test_backward_grid(cpu_isa, dtype, rows, hidden):
    x, w, g = make((rows, hidden), dtype, 1), make((hidden,), dtype, 2) + 1, make((rows, hidden), dtype, 3)
    gx, gw = kernel_grads(x, w, g)
    want_x, want_w = exact_grads(x, w, g)
    assert_close_to_exact(gx, want_x, dtype, term_scale(x, w, g))
    assert_close_to_exact(gw, want_w, dtype)


def test_backward_strided_rows_and_leading_dims(cpu_isa):
    # MLA normalises kv[..., :512] of a [.., 576] projection: the backward reads x with that stride.
    kv = make((2, 5, 576), torch.bfloat16, 7)
    latent, w, g = kv[..., :512], make((512,), torch.bfloat16, 8), make((2, 5, 512), torch.bfloat16, 9)
    assert not latent.is_contiguous()
    for got, want in zip(kernel_grads(latent, w, g), exact_grads(latent, w, g)):
        assert_close_to_exact(got, want, torch.bfloat16)
    # An expanded gradient (stride 0, what .sum().backward() hands in) is made contiguous first.
    x = make((4, 3, 40), torch.float32, 10).requires_grad_()
    w = (make((40,), torch.float32, 11) + 2).requires_grad_()
    rms_norm(x, w, 1e-5).sum().backward()
    want_x, want_w = exact_grads(x, w, torch.ones(4, 3, 40), 1e-5)
    assert_close_to_exact(x.grad, want_x, torch.float32)
    assert_close_to_exact(w.grad, want_w, torch.float32)


def test_fused_backward_bf16(cpu_isa):
    x, r = make((33, 576), torch.bfloat16, 1).requires_grad_(), make((33, 576), torch.bfloat16, 2).requires_grad_()
    w = (make((576,), torch.bfloat16, 3) + 1).requires_grad_()
    g1, g2 = make((33, 576), torch.bfloat16, 4), make((33, 576), torch.bfloat16, 5)
    out, s = fused_add_rms_norm(x, r, w, 1e-5)
    (out.float() * g1.float() + s.float() * g2.float()).sum().backward()
    s64 = (x.detach() + r.detach()).double().requires_grad_()   # s as the kernel rounded it
    w64 = w.detach().double().requires_grad_()
    (reference.rms_norm(s64, w64, 1e-5) * g1.double() + s64 * g2.double()).sum().backward()
    assert torch.equal(x.grad, r.grad)
    assert_close_to_exact(x.grad, s64.grad, torch.bfloat16)
    assert_close_to_exact(w.grad, w64.grad, torch.bfloat16)


def test_backward_nan_stays_in_its_row(cpu_isa):
    x, w, g = make((70, 64), torch.float32, 1), make((64,), torch.float32, 2), make((70, 64), torch.float32, 3)
    x[5, 3] = float("nan")
    gx, gw = kernel_grads(x, w, g)
    want_x, want_w = exact_grads(x, w, g)
    assert torch.equal(torch.isnan(gx), torch.isnan(want_x))   # row 5 only, as torch
    assert torch.isnan(gx[5]).all() and torch.isfinite(gx[torch.arange(70) != 5]).all()
    assert torch.isnan(gw).all() and torch.isnan(want_w).all()


def test_backward_no_rows_writes_zero_partials():
    x, w = torch.empty(0, 96), torch.ones(96)
    gx = torch.empty(0, 96)
    partial = torch.full((3, 96), float("nan"))  # poisoned: every element must be written
    _C.rms_norm_backward(gx, partial, torch.empty(0, 96), x, w, 1e-6)
    assert torch.equal(partial, torch.zeros(3, 96))
    # More partial sums than rows: the blocks without rows are zero too.
    x, g = make((2, 96), torch.float32, 1), make((2, 96), torch.float32, 2)
    partial = torch.full((5, 96), float("nan"))
    _C.rms_norm_backward(torch.empty(2, 96), partial, g, x, w, 1e-6)
    assert torch.equal(partial[2:], torch.zeros(3, 96)) and torch.isfinite(partial[:2]).all()
    _, want_w = exact_grads(x, w, g)
    torch.testing.assert_close(partial.sum(0).double(), want_w)


def test_backward_threads_and_isa_copies_agree():
    x, w, g = make((1000, 576), torch.bfloat16, 4), make((576,), torch.bfloat16, 5), make((1000, 576), torch.bfloat16, 6)
    n, before = longcat.num_threads(), longcat.cpu_isa()
    try:
        longcat.set_num_threads(1)
        one = kernel_grads(x, w, g)
        longcat.set_num_threads(3)
        three = kernel_grads(x, w, g)
        copies = []
        for isa in longcat.cpu_isas_available():
            longcat.set_cpu_isa(isa)
            copies.append(kernel_grads(x, w, g))
    finally:
        longcat.set_num_threads(n)
        longcat.set_cpu_isa(before)
    assert torch.equal(one[0], three[0]) and torch.equal(one[1], three[1])  # blocks fixed by shape
    want_x, want_w = exact_grads(x, w, g)
    for gx, gw in copies:
        assert_close_to_exact(gx, want_x, torch.bfloat16)
        assert_close_to_exact(gw, want_w, torch.bfloat16)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(0, 150), hidden=st.integers(1, 200), bf16=st.booleans(),
       eps=st.sampled_from([0.0, 1e-6, 0.1]), scale=st.sampled_from([1e-2, 1.0, 100.0]))
def test_backward_property(rows, hidden, bf16, eps, scale):
    dtype = torch.bfloat16 if bf16 else torch.float32
    x, w = make((rows, hidden), dtype, rows, scale), make((hidden,), dtype, hidden) + 1
    g = make((rows, hidden), dtype, rows + 7)
    got, want = kernel_grads(x, w, g, eps), exact_grads(x, w, g, eps)
    assert_close_to_exact(got[0], want[0], dtype, term_scale(x, w, g, eps))
    assert_close_to_exact(got[1], want[1], dtype)


def test_backward_opcheck():
    x, w, g = make((6, 40), torch.float32, 1), make((40,), torch.float32, 2), make((6, 40), torch.float32, 3)
    torch.library.opcheck(torch.ops.longcat.rms_norm_backward.default, (g, x, w, 1e-6))


def test_backward_bad_input():
    x, w, g = torch.randn(4, 8), torch.ones(8), torch.randn(4, 8)
    gx, partial = torch.empty(4, 8), torch.empty(2, 8)
    with pytest.raises(TypeError, match=r"rms_norm_backward: argument 'grad_w_partial' must have dtype float32 on cpu, got bfloat16"):
        _C.rms_norm_backward(gx, partial.bfloat16(), g, x, w, 1e-6)
    with pytest.raises(ValueError, match=r"'grad_w_partial' must have size 8 in dimension 1 \(the hidden size x.shape\[-1\]\), got 7"):
        _C.rms_norm_backward(gx, torch.empty(2, 7), g, x, w, 1e-6)
    with pytest.raises(ValueError, match=r"'grad_w_partial' must have at least one row"):
        _C.rms_norm_backward(gx, torch.empty(0, 8), g, x, w, 1e-6)
    with pytest.raises(ValueError, match=r"'grad_w_partial' must have 2 dimensions, got 1"):
        _C.rms_norm_backward(gx, torch.empty(8), g, x, w, 1e-6)
    with pytest.raises(ValueError, match=r"'grad_out' must have the shape of 'x' \[4, 8\], got \[3, 8\]"):
        _C.rms_norm_backward(gx, partial, torch.randn(3, 8), x, w, 1e-6)
    with pytest.raises(TypeError, match=r"'grad_out' must have the dtype of 'x' \(float32\), got bfloat16"):
        _C.rms_norm_backward(gx, partial, g.bfloat16(), x, w, 1e-6)
    with pytest.raises(ValueError, match=r"'grad_x' must have the shape of 'x' \[4, 8\], got \[4, 9\]"):
        _C.rms_norm_backward(torch.empty(4, 9), partial, g, x, w, 1e-6)
    with pytest.raises(ValueError, match=r"'grad_x' must be contiguous"):
        _C.rms_norm_backward(torch.empty(4, 16)[:, :8], partial, g, x, w, 1e-6)
    with pytest.raises(ValueError, match=r"'eps' must be finite and >= 0"):
        _C.rms_norm_backward(gx, partial, g, x, w, -1.0)
    with pytest.raises(ValueError, match=r"argument 'grad_x' overlaps 'x' in memory"):
        _C.rms_norm_backward(x, partial, g, x, w, 1e-6)
    with pytest.raises(ValueError, match=r"argument 'grad_w_partial' overlaps 'grad_out' in memory"):
        _C.rms_norm_backward(gx, g[:2], g, x, w, 1e-6)
    # numpy hands over negative strides; the op names the argument instead of reading backwards.
    xn = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)[::-1]
    with pytest.raises(ValueError, match=r"argument 'x' has a negative stride -8 in dimension 0"):
        _C.rms_norm_backward(gx.numpy(), partial.numpy(), g.numpy(), xn, w.numpy(), 1e-6)
