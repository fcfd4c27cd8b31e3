"""RMSNorm kernels against the plain-torch reference: shape grid, every ISA copy, strided and
in-place use, autograd, torch.compile, and bad input."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import longcat
from longcat.ops import fused_add_rms_norm, fused_add_rms_norm_, reference, rms_norm

DTYPES = [torch.float32, torch.bfloat16]
ROWS = [0, 1, 3, 64, 257]
HIDDEN = [1, 7, 8, 16, 17, 64, 512, 576, 4096, 6144]


def make(shape, dtype, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * scale).to(dtype)


def assert_matches(got, want):
    # Kernel and reference round identically; only the fp32 sum order differs, which can move
    # a bf16 result by one unit in the last place.
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("hidden", HIDDEN)
def test_rms_norm_grid(cpu_isa, dtype, rows, hidden):
    x, w = make((rows, hidden), dtype, 1), make((hidden,), dtype, 2)
    assert_matches(rms_norm(x, w, 1e-6), reference.rms_norm(x, w, 1e-6))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("hidden", [1, 17, 64, 6144])
def test_fused_add_grid(cpu_isa, dtype, rows, hidden):
    x, r, w = make((rows, hidden), dtype, 1), make((rows, hidden), dtype, 3), make((hidden,), dtype, 2)
    out, s = fused_add_rms_norm(x, r, w, 1e-5)
    want_out, want_s = reference.fused_add_rms_norm(x, r, w, 1e-5)
    assert torch.equal(s, want_s)  # one rounding of one add: exact
    assert_matches(out, want_out)


def test_bf16_bit_exact_on_most_elements(cpu_isa):
    x, w = make((64, 6144), torch.bfloat16, 5), make((6144,), torch.bfloat16, 6)
    got, want = rms_norm(x, w), reference.rms_norm(x, w, 1e-6)
    assert (got != want).float().mean().item() < 1e-3


def test_leading_dims_and_strided_rows(cpu_isa):
    # MLA normalises the latent part of the kv projection in place: kv[:, :512] of a [T, 576] tensor.
    kv = make((2, 5, 576), torch.bfloat16, 7)
    w = make((512,), torch.bfloat16, 8)
    latent = kv[..., :512]
    assert not latent.is_contiguous()
    assert_matches(rms_norm(latent, w), reference.rms_norm(latent, w, 1e-6))
    x3 = make((2, 3, 4, 64), torch.float32, 9)
    assert_matches(rms_norm(x3, make((64,), torch.float32)), reference.rms_norm(x3, make((64,), torch.float32), 1e-6))


def test_in_place_matches_functional(cpu_isa):
    x, r, w = make((9, 576), torch.bfloat16, 1), make((9, 576), torch.bfloat16, 2), make((576,), torch.bfloat16, 3)
    want_out, want_s = fused_add_rms_norm(x, r, w)
    x2, r2 = x.clone(), r.clone()
    assert fused_add_rms_norm_(x2, r2, w) is None
    assert torch.equal(x2, want_out) and torch.equal(r2, want_s)


def test_isa_copies_agree():
    x, w = make((33, 6144), torch.bfloat16, 11), make((6144,), torch.bfloat16, 12)
    before = longcat.cpu_isa()
    # Not `from conftest import available_isas`: with tests/cuda collected first, the module named
    # conftest is tests/cuda/conftest.py.
    order = ["scalar", "avx2", "avx512", "avx512bf16", "amx"]
    outs = []
    for isa in order[: order.index(longcat._C.cpu_isa_detected()) + 1]:
        longcat.set_cpu_isa(isa)
        outs.append(rms_norm(x, w))
    longcat.set_cpu_isa(before)
    for o in outs[1:]:
        assert_matches(o, outs[0])


def test_nan_and_inf_propagate(cpu_isa):
    x = make((3, 64), torch.bfloat16, 1)
    x[1, 5] = float("nan")
    x[2, 0] = float("inf")
    y = rms_norm(x, torch.ones(64, dtype=torch.bfloat16))
    assert torch.isfinite(y[0]).all()
    assert torch.isnan(y[1]).all()  # a NaN poisons its row's statistics, never other rows
    assert torch.isnan(y[2]).any()


def test_threads_split_rows_identically():
    x, w = make((1000, 512), torch.float32, 4), make((512,), torch.float32, 5)
    n = longcat.num_threads()
    try:
        longcat.set_num_threads(1)
        one = rms_norm(x, w)
        longcat.set_num_threads(3)
        three = rms_norm(x, w)
    finally:
        longcat.set_num_threads(n)
    assert torch.equal(one, three)


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(0, 40), hidden=st.integers(1, 300), bf16=st.booleans(), fused=st.booleans(),
       eps=st.sampled_from([0.0, 1e-6, 1e-5, 0.1]), scale=st.sampled_from([1e-3, 1.0, 300.0]))
def test_property_random_shapes(rows, hidden, bf16, fused, eps, scale):
    dtype = torch.bfloat16 if bf16 else torch.float32
    x, w = make((rows, hidden), dtype, rows, scale), make((hidden,), dtype, hidden)
    if fused:
        r = make((rows, hidden), dtype, rows + 1, scale)
        out, s = fused_add_rms_norm(x, r, w, eps)
        want_out, want_s = reference.fused_add_rms_norm(x, r, w, eps)
        assert torch.equal(s, want_s)
    else:
        out, want_out = rms_norm(x, w, eps), reference.rms_norm(x, w, eps)
    assert_matches(out, want_out)


def test_autograd_matches_reference():
    x = make((6, 40), torch.float32, 1).requires_grad_()
    w = (make((40,), torch.float32, 2) + 2).requires_grad_()
    g = make((6, 40), torch.float32, 3)
    rms_norm(x, w, 1e-5).backward(g)
    gx, gw = x.grad.clone(), w.grad.clone()
    x.grad = w.grad = None
    reference.rms_norm(x, w, 1e-5).backward(g)
    torch.testing.assert_close(gx, x.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gw, w.grad, rtol=1e-5, atol=1e-6)


def test_fused_autograd_matches_reference():
    x = make((5, 24), torch.float32, 1).requires_grad_()
    r = make((5, 24), torch.float32, 2).requires_grad_()
    w = (make((24,), torch.float32, 3) + 2).requires_grad_()
    g1, g2 = make((5, 24), torch.float32, 4), make((5, 24), torch.float32, 5)

    def grads(fn):
        out, s = fn(x, r, w, 1e-5)
        (out * g1 + s * g2).sum().backward()
        result = [t.grad.clone() for t in (x, r, w)]
        x.grad = r.grad = w.grad = None
        return result

    for got, want in zip(grads(fused_add_rms_norm), grads(reference.fused_add_rms_norm)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_opcheck():
    x, w = make((4, 32), torch.float32, 1), make((32,), torch.float32, 2)
    torch.library.opcheck(torch.ops.longcat.rms_norm.default, (x, w, 1e-6))
    torch.library.opcheck(torch.ops.longcat.fused_add_rms_norm.default, (x, x.clone(), w, 1e-6))
    torch.library.opcheck(torch.ops.longcat.fused_add_rms_norm_.default, (x.clone(), x.clone(), w, 1e-6))


def test_torch_compile_fullgraph():
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w1 = torch.nn.Parameter(torch.ones(64))
            self.w2 = torch.nn.Parameter(torch.ones(64))
            self.proj = torch.nn.Linear(64, 64)

        def forward(self, x, residual):
            h, residual = fused_add_rms_norm(x, residual, self.w1)
            return rms_norm(self.proj(h), self.w2), residual

    torch._dynamo.reset()
    block = Block()
    x, r = make((5, 64), torch.float32, 1), make((5, 64), torch.float32, 2)
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    got, want = compiled(x, r), block(x, r)
    assert_matches(got[0], want[0])
    assert torch.equal(got[1], want[1])


# ---- bad input: each names the argument --------------------------------------------------

def test_bad_dtype():
    x = torch.randn(2, 8, dtype=torch.float16)
    with pytest.raises(TypeError, match=r"'x' must have dtype bfloat16 or float32 on cpu, got float16"):
        rms_norm(x, torch.ones(8, dtype=torch.float16))
    with pytest.raises(TypeError, match=r"'weight' must have the dtype of 'x' \(float32\), got bfloat16"):
        rms_norm(torch.randn(2, 8), torch.ones(8, dtype=torch.bfloat16))
    with pytest.raises(TypeError, match=r"'x' must have dtype"):
        rms_norm(torch.ones(2, 8, dtype=torch.int32), torch.ones(8, dtype=torch.int32))


def test_bad_rank_and_shape():
    with pytest.raises(ValueError, match=r"'x' must have at least 1 dimension"):
        rms_norm(torch.tensor(1.0), torch.ones(1))
    with pytest.raises(ValueError, match=r"'weight' must have 1 dimensions, got 2"):
        rms_norm(torch.randn(2, 8), torch.ones(1, 8))
    with pytest.raises(ValueError, match=r"'weight' must have size 8 in dimension 0 \(the hidden size x.shape\[-1\]\), got 7"):
        rms_norm(torch.randn(2, 8), torch.ones(7))
    with pytest.raises(ValueError, match=r"'residual' must have the shape of 'x' \[2, 8\], got \[3, 8\]"):
        fused_add_rms_norm(torch.randn(2, 8), torch.randn(3, 8), torch.ones(8))


def test_bad_layout():
    x = torch.randn(8, 4).t()  # last dim strided
    with pytest.raises(ValueError, match=r"'x' must have a contiguous last dimension"):
        rms_norm(x, torch.ones(8))
    w = torch.ones(16)[::2]
    with pytest.raises(ValueError, match=r"'weight' must be contiguous"):
        rms_norm(torch.randn(2, 8), w)
    y = torch.randn(4, 6, 8)[:, ::2, :]  # leading dims do not flatten to one stride
    y = y.transpose(0, 1)
    with pytest.raises(ValueError, match=r"'x' must have leading dimensions that flatten"):
        rms_norm(y, torch.ones(8))


def test_bad_arguments():
    with pytest.raises(TypeError, match=r"'x' must be a torch.Tensor, got list"):
        rms_norm([1.0, 2.0], torch.ones(2))
    with pytest.raises(ValueError, match=r"'eps' must be finite and >= 0"):
        rms_norm(torch.randn(2, 8), torch.ones(8), -1.0)
    with pytest.raises(ValueError, match=r"'eps' must be finite"):
        rms_norm(torch.randn(2, 8), torch.ones(8), math.inf)


def test_bad_device():
    with pytest.raises(ValueError, match=r"'weight' must be on the device of 'x' \(cpu\), got meta"):
        rms_norm(torch.randn(2, 8), torch.ones(8, device="meta"))
    with pytest.raises(ValueError, match=r"'residual' must be on the device of 'x' \(cpu\), got meta"):
        fused_add_rms_norm(torch.randn(2, 8), torch.ones(2, 8, device="meta"), torch.ones(8))


def test_meta_tensors_give_shapes():
    y = rms_norm(torch.empty(2, 3, 8, device="meta"), torch.empty(8, device="meta"))
    assert y.shape == (2, 3, 8) and y.device.type == "meta"
