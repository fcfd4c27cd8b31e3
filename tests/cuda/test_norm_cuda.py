"""RMSNorm CUDA kernels (csrc/cuda/norm.cu) against the plain-torch reference, on the device.

Covers both kernel paths: the 16-byte vector path (hidden a multiple of 16 / sizeof(T), aligned
rows) and the scalar path (hidden 1 or 7, or a row start that is not 16-byte aligned, as
x[:, 1:513]); strided rows (x[:, :512] of a [T, 576] latent-KV-like tensor); zero rows; and the
three entry points: rms_norm, fused_add_rms_norm and in-place fused_add_rms_norm_.
"""
from __future__ import annotations

import pytest
import torch

import longcat
from longcat.ops import reference

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or longcat.build_info().get("cuda", "off").lower() != "on",
    reason="needs a CUDA device and a longcat built with its CUDA kernels")

EPS = 1e-6
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
ROWS = [0, 1, 7, 300]
HIDDEN = [1, 7, 64, 576, 4096, 6144]
# Column slices of a [T, 576] tensor: [:, :512] keeps 16-byte aligned rows (vector path) with a
# row stride of 576; [:, 1:513] starts each row off alignment, which forces the scalar path.
SLICES = {"cols0_512": slice(0, 512), "cols1_513": slice(1, 513)}


def tol(dtype: torch.dtype) -> dict:
    """torch.testing's default tolerances, except float16.

    Kernel and reference round twice (x * r to the dtype, then times weight), and their fp32
    sums of squares differ by an ulp or so (another reduction order), so r can differ in its
    last bit. When x * r lies that close to a rounding boundary, the rounded value moves one
    ulp, which the weight multiply can stretch to two ulps of the output: up to 2 * 2^-10
    relative in float16, just over its default rtol of 1e-3. In bfloat16 the same two ulps
    (2 * 2^-7) fit its default rtol of 1.6e-2, and in float32 they are far below 1.3e-6.
    """
    return {"rtol": 2e-3, "atol": 1e-5} if dtype == torch.float16 else {}


def make(rows: int, hidden: int, dtype: torch.dtype, seed: int):
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(rows, hidden, generator=g, device="cuda").to(dtype)
    residual = torch.randn(rows, hidden, generator=g, device="cuda").to(dtype)
    weight = (torch.randn(hidden, generator=g, device="cuda") * 0.5 + 1.0).to(dtype)
    return x, residual, weight


def strided(rows: int, cols: slice, dtype: torch.dtype, seed: int):
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(rows, 576, generator=g, device="cuda").to(dtype)[:, cols]
    residual = torch.randn(rows, 576, generator=g, device="cuda").to(dtype)[:, cols]
    weight = (torch.randn(512, generator=g, device="cuda") * 0.5 + 1.0).to(dtype)
    assert x.shape == (rows, 512) and x.stride() == (576, 1)
    return x, residual, weight


def check_rms_norm(x, weight):
    x_before = x.clone()
    out = longcat.ops.rms_norm(x, weight, EPS)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert out.is_contiguous()
    torch.testing.assert_close(out, reference.rms_norm(x, weight, EPS), **tol(x.dtype))
    torch.testing.assert_close(x, x_before, rtol=0, atol=0)  # input untouched


def check_fused(x, residual, weight):
    x_before, r_before = x.clone(), residual.clone()
    expect_out, expect_sum = reference.fused_add_rms_norm(x, residual, weight, EPS)
    out, res_out = longcat.ops.fused_add_rms_norm(x, residual, weight, EPS)
    # s = x + residual is one rounding of an exact fp32 sum in both: equal bit for bit.
    torch.testing.assert_close(res_out, expect_sum, rtol=0, atol=0)
    torch.testing.assert_close(out, expect_out, **tol(x.dtype))
    torch.testing.assert_close(x, x_before, rtol=0, atol=0)
    torch.testing.assert_close(residual, r_before, rtol=0, atol=0)


def check_fused_inplace(x, residual, weight):
    expect_out, expect_sum = reference.fused_add_rms_norm(x.clone(), residual.clone(), weight, EPS)
    x_ptr, r_ptr = x.data_ptr(), residual.data_ptr()
    assert longcat.ops.fused_add_rms_norm_(x, residual, weight, EPS) is None
    assert x.data_ptr() == x_ptr and residual.data_ptr() == r_ptr
    torch.testing.assert_close(residual, expect_sum, rtol=0, atol=0)
    torch.testing.assert_close(x, expect_out, **tol(x.dtype))


@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_rms_norm(dtype, rows, hidden):
    x, _, weight = make(rows, hidden, dtype, seed=rows * 10007 + hidden)
    check_rms_norm(x, weight)


@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fused_add_rms_norm(dtype, rows, hidden):
    x, residual, weight = make(rows, hidden, dtype, seed=rows * 10007 + hidden + 1)
    check_fused(x, residual, weight)


@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fused_add_rms_norm_inplace(dtype, rows, hidden):
    x, residual, weight = make(rows, hidden, dtype, seed=rows * 10007 + hidden + 2)
    check_fused_inplace(x, residual, weight)


@pytest.mark.parametrize("cols", list(SLICES.values()), ids=list(SLICES))
@pytest.mark.parametrize("rows", [1, 7, 300])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_strided_rows(dtype, rows, cols):
    x, residual, weight = strided(rows, cols, dtype, seed=rows + cols.start)
    check_rms_norm(x, weight)
    check_fused(x, residual, weight)
    check_fused(x, residual.contiguous(), weight)  # only x strided
    check_fused_inplace(x, residual, weight)        # out aliases the strided x


def test_3d_input():
    x, _, weight = make(4 * 5, 576, torch.bfloat16, seed=3)
    x = x.view(4, 5, 576)
    check_rms_norm(x, weight)


@pytest.mark.parametrize("op", ["rms_norm", "fused_add_rms_norm", "fused_add_rms_norm_"])
def test_weight_on_cpu_is_rejected(op):
    x, residual, weight = make(4, 64, torch.bfloat16, seed=4)
    args = (x,) if op == "rms_norm" else (x, residual)
    with pytest.raises(ValueError, match="weight"):
        getattr(longcat.ops, op)(*args, weight.cpu(), EPS)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [1, 7, 300, 3000])
@pytest.mark.parametrize("hidden", [1, 7, 576, 6144])
def test_backward_matches_float64_autograd(dtype, rows, hidden):
    # The backward kernel (one block per partial sum of grad_w; 3000 rows share blocks) against
    # float64 autograd through the reference, on rows sliced from a wider tensor.
    g = torch.Generator(device="cuda").manual_seed(rows * 31 + hidden)
    wide = torch.randn(rows, hidden + 5, device="cuda", generator=g).to(dtype)
    x = wide[:, :hidden].requires_grad_()
    w = (torch.randn(hidden, device="cuda", generator=g) + 1).to(dtype).requires_grad_()
    go = torch.randn(rows, hidden, device="cuda", generator=g).to(dtype)
    longcat.ops.rms_norm(x, w, EPS).backward(go)
    x64, w64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    reference.rms_norm(x64, w64, EPS).backward(go.double())
    r = torch.rsqrt(x64.detach().pow(2).mean(-1, keepdim=True) + EPS)
    term = (r * go.double() * w64.detach()).abs().max().item()   # grad_x cancels against this term
    rel = {torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 1e-2}[dtype]
    for got, want, scale in ((x.grad, x64.grad, term), (w.grad, w64.grad, 0.0)):
        atol = rel * max(scale, want.abs().max().item(), 1.0)
        torch.testing.assert_close(got.double(), want, rtol=0, atol=atol)
