"""Grouped expert SwiGLU GEMM (CPU kernels) against the per-expert plain-torch reference: shape
grid, every ISA copy, segmentations (empty, one expert, padded tails, random), thread counts,
autograd, torch.compile, and bad input."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import longcat
from longcat import _C
from longcat.ops import moe_grouped_swiglu, reference
from longcat.ops.moe_gemm import workspace_size

DTYPES = [torch.float32, torch.bfloat16]


def make_weights(E, H, F, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Scaled so that gate/up and the output are O(1): the tolerances below are then relative.
    w13 = (torch.randn(E, 2 * F, H, generator=g) / H ** 0.5).to(dtype)
    w2 = (torch.randn(E, H, F, generator=g) / F ** 0.5).to(dtype)
    return w13, w2


def make_x(R, H, dtype, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(R, H, generator=g).to(dtype)


def split_rows(R, E, seed=2, empty_fraction=0.3):
    """offsets [E+1] int32: a random segmentation of R rows over E experts, some segments empty."""
    g = torch.Generator().manual_seed(seed)
    weights = torch.rand(E, generator=g)
    weights[torch.rand(E, generator=g) < empty_fraction] = 0
    if weights.sum() == 0:
        weights[0] = 1
    counts = torch.zeros(E, dtype=torch.int64)
    if R:
        counts = torch.bincount(torch.multinomial(weights, R, replacement=True, generator=g), minlength=E)
    return torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)]).to(torch.int32)


def assert_matches(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    if got.dtype == torch.bfloat16:
        # Same roundings as the reference; only the fp32 summation order differs, which can flip
        # the last bit of a rounded gate/up/h value and so move an output by a few bf16 ulps.
        torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2)
    else:
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def check(R, H, F, E, dtype, offsets=None, seed=0):
    w13, w2 = make_weights(E, H, F, dtype, seed)
    x = make_x(R, H, dtype, seed + 1)
    offsets = split_rows(R, E, seed + 2) if offsets is None else offsets
    got = moe_grouped_swiglu(x, offsets, w13, w2)
    assert_matches(got, reference.moe_grouped_swiglu(x, offsets, w13, w2))
    return got


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("E", [1, 8, 64])
@pytest.mark.parametrize("F", [32, 128])
@pytest.mark.parametrize("H", [64, 256])
@pytest.mark.parametrize("R", [0, 1, 7, 128, 1000])
def test_grid(cpu_isa, R, H, F, E, dtype):
    check(R, H, F, E, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("E", [1, 8, 64])
@pytest.mark.parametrize("R", [1, 7, 20])
def test_wide_intermediate(cpu_isa, R, E, dtype):
    check(R, 64, 2048, E, dtype)  # F = 2048 as LongCat-Flash, few rows (decode)


@pytest.mark.parametrize("dtype", DTYPES)
def test_all_rows_in_one_expert(cpu_isa, dtype):
    E, R = 8, 300
    offsets = torch.tensor([0, 0, 0, R, R, R, R, R, R], dtype=torch.int32)
    check(R, 256, 128, E, dtype, offsets)


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_first_and_last_segments(cpu_isa, dtype):
    offsets = torch.tensor([0, 0, 5, 5, 105, 106, 106], dtype=torch.int32)
    check(106, 64, 32, 6, dtype, offsets)


@pytest.mark.parametrize("dtype", DTYPES)
def test_padded_tails(cpu_isa, dtype):
    # Each segment ends with zero rows (padding to a block multiple, as aligned dispatch does):
    # they are computed like any other row, and SwiGLU of zero is exactly zero.
    E, H, F = 4, 64, 32
    w13, w2 = make_weights(E, H, F, dtype)
    offsets = torch.tensor([0, 16, 32, 32, 48], dtype=torch.int32)
    x = make_x(48, H, dtype)
    pad = torch.zeros(48, dtype=torch.bool)
    pad[11:16] = pad[29:32] = pad[40:48] = True
    x[pad] = 0
    got = moe_grouped_swiglu(x, offsets, w13, w2)
    assert_matches(got, reference.moe_grouped_swiglu(x, offsets, w13, w2))
    assert torch.equal(got[pad], torch.zeros_like(got[pad]))


def test_odd_sizes_and_tiles(cpu_isa):
    # Sizes that are not multiples of the vector width, the micro-tile or the K/N/M blocks.
    for R, H, F, E in [(97, 300, 70, 3), (193, 513, 17, 2), (5, 1, 1, 2), (3, 7, 3, 1)]:
        for dtype in DTYPES:
            check(R, H, F, E, dtype, seed=R)


def test_bf16_close_to_bit_exact(cpu_isa):
    R, H, F, E = 64, 256, 128, 4
    w13, w2 = make_weights(E, H, F, torch.bfloat16)
    x = make_x(R, H, torch.bfloat16)
    offsets = split_rows(R, E, empty_fraction=0)
    got = moe_grouped_swiglu(x, offsets, w13, w2)
    want = reference.moe_grouped_swiglu(x, offsets, w13, w2)
    assert (got != want).float().mean().item() < 0.1


def available_isas():
    # (not `from conftest import ...`: with tests/cuda/conftest.py also loaded, that name is ambiguous)
    order = ["scalar", "avx2", "avx512", "avx512bf16", "amx"]
    return order[: order.index(_C.cpu_isa_detected()) + 1]


def test_isa_copies_agree():
    R, H, F, E = 150, 256, 96, 5
    w13, w2 = make_weights(E, H, F, torch.bfloat16)
    x, offsets = make_x(R, H, torch.bfloat16), split_rows(R, E)
    before = longcat.cpu_isa()
    outs = []
    try:
        for isa in available_isas():
            longcat.set_cpu_isa(isa)
            outs.append(moe_grouped_swiglu(x, offsets, w13, w2))
    finally:
        longcat.set_cpu_isa(before)
    for o in outs[1:]:
        assert_matches(o, outs[0])


def test_threads_give_identical_results():
    # Each output tile is computed by one thread in a fixed order: the thread count cannot change bits.
    R, H, F, E = 400, 256, 128, 3
    w13, w2 = make_weights(E, H, F, torch.bfloat16)
    x, offsets = make_x(R, H, torch.bfloat16), split_rows(R, E)
    n = longcat.num_threads()
    try:
        longcat.set_num_threads(1)
        one = moe_grouped_swiglu(x, offsets, w13, w2)
        longcat.set_num_threads(3)
        three = moe_grouped_swiglu(x, offsets, w13, w2)
    finally:
        longcat.set_num_threads(n)
    assert torch.equal(one, three)


@settings(max_examples=40, deadline=None)
@given(R=st.integers(0, 200), H=st.integers(1, 96), F=st.integers(1, 80), E=st.integers(1, 12),
       bf16=st.booleans(), seed=st.integers(0, 1000), empty=st.sampled_from([0.0, 0.3, 0.8]))
def test_property_random_segmentations(R, H, F, E, bf16, seed, empty):
    dtype = torch.bfloat16 if bf16 else torch.float32
    check(R, H, F, E, dtype, split_rows(R, E, seed, empty), seed=seed)


# ---- autograd, torch.library, torch.compile ------------------------------------------------

def _grads(fn, x, offsets, w13, w2, g):
    x, w13, w2 = (t.detach().clone().requires_grad_() for t in (x, w13, w2))
    fn(x, offsets, w13, w2).backward(g)
    return x.grad, w13.grad, w2.grad


def test_autograd_matches_reference_fp32():
    R, H, F, E = 40, 24, 16, 5
    w13, w2 = make_weights(E, H, F, torch.float32)
    x, offsets = make_x(R, H, torch.float32), split_rows(R, E)
    g = make_x(R, H, torch.float32, 7)
    for got, want in zip(_grads(moe_grouped_swiglu, x, offsets, w13, w2, g),
                         _grads(reference.moe_grouped_swiglu, x, offsets, w13, w2, g)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_gradcheck_double_path():
    # torch.autograd.gradcheck on the backward formula itself: float64 inputs through the fp32
    # kernel would not be precise enough, so check the formula against finite differences of the
    # float64 reference.
    from longcat.ops.moe_gemm import _moe_grouped_swiglu_backward

    R, H, F, E = 9, 6, 4, 3
    w13, w2 = make_weights(E, H, F, torch.float64)
    x, offsets = make_x(R, H, torch.float64), torch.tensor([0, 4, 4, 9], dtype=torch.int32)
    g = make_x(R, H, torch.float64, 5)
    gx, gw13, gw2 = _moe_grouped_swiglu_backward(g, x, offsets, w13, w2)
    rx, rw13, rw2 = _grads(reference.moe_grouped_swiglu, x, offsets, w13, w2, g)
    torch.testing.assert_close(gx, rx)
    torch.testing.assert_close(gw13, rw13)
    torch.testing.assert_close(gw2, rw2)
    assert torch.autograd.gradcheck(
        lambda a, b, c: reference.moe_grouped_swiglu(a, offsets, b, c),
        (x.clone().requires_grad_(), w13.clone().requires_grad_(), w2.clone().requires_grad_()))


def test_autograd_bf16_close_to_reference():
    R, H, F, E = 30, 32, 16, 3
    w13, w2 = make_weights(E, H, F, torch.bfloat16)
    x, offsets = make_x(R, H, torch.bfloat16), split_rows(R, E)
    g = make_x(R, H, torch.bfloat16, 7)
    for got, want in zip(_grads(moe_grouped_swiglu, x, offsets, w13, w2, g),
                         _grads(reference.moe_grouped_swiglu, x, offsets, w13, w2, g)):
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got.float(), want.float(), rtol=5e-2, atol=5e-2)


def test_opcheck():
    R, H, F, E = 12, 16, 8, 3
    w13, w2 = make_weights(E, H, F, torch.float32)
    x, offsets = make_x(R, H, torch.float32), split_rows(R, E)
    torch.library.opcheck(torch.ops.longcat.moe_grouped_swiglu.default, (x, offsets, w13, w2))
    torch.library.opcheck(torch.ops.longcat.moe_grouped_swiglu_backward.default,
                          (make_x(R, H, torch.float32, 3), x, offsets, w13, w2))


def test_torch_compile_fullgraph_trains():
    class Experts(torch.nn.Module):
        def __init__(self, E, H, F):
            super().__init__()
            w13, w2 = make_weights(E, H, F, torch.float32)
            self.gate_up_proj = torch.nn.Parameter(w13)
            self.down_proj = torch.nn.Parameter(w2)

        def forward(self, x, offsets):
            return moe_grouped_swiglu(x * 2, offsets, self.gate_up_proj, self.down_proj).sum(-1)

    torch._dynamo.reset()
    m = Experts(4, 32, 16)
    x, offsets = make_x(20, 32, torch.float32), split_rows(20, 4)
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    got = compiled(x, offsets)
    torch.testing.assert_close(got, m(x, offsets))
    got.sum().backward()
    g_compiled = m.gate_up_proj.grad.clone()
    m.zero_grad()
    m(x, offsets).sum().backward()
    torch.testing.assert_close(g_compiled, m.gate_up_proj.grad)


def test_meta_tensors_give_shapes():
    y = moe_grouped_swiglu(torch.empty(10, 64, device="meta"), torch.empty(5, dtype=torch.int32, device="meta"),
                           torch.empty(4, 64, 64, device="meta"), torch.empty(4, 64, 32, device="meta"))
    assert y.shape == (10, 64) and y.device.type == "meta"


# ---- bad input: each names the argument ----------------------------------------------------

def _ok(R=6, H=16, F=8, E=3, dtype=torch.float32):
    w13, w2 = make_weights(E, H, F, dtype)
    return make_x(R, H, dtype), torch.tensor([0, 2, 2, R], dtype=torch.int32)[: E + 1], w13, w2


def test_bad_offsets_values():
    x, off, w13, w2 = _ok()
    with pytest.raises(ValueError, match=r"'offsets' must be non-decreasing, got offsets\[2\] = 1 < offsets\[1\] = 3"):
        moe_grouped_swiglu(x, torch.tensor([0, 3, 1, 6], dtype=torch.int32), w13, w2)
    with pytest.raises(ValueError, match=r"'offsets' must end at the number of rows x_perm.shape\[0\] = 6, got offsets\[3\] = 5"):
        moe_grouped_swiglu(x, torch.tensor([0, 2, 2, 5], dtype=torch.int32), w13, w2)
    with pytest.raises(ValueError, match=r"'offsets' must start at 0, got offsets\[0\] = 1"):
        moe_grouped_swiglu(x, torch.tensor([1, 2, 2, 6], dtype=torch.int32), w13, w2)


def test_bad_offsets_shape_and_dtype():
    x, off, w13, w2 = _ok()
    with pytest.raises(ValueError, match=r"'offsets' must have shape \[n_routed \+ 1\] = \[4\], got \[3\]"):
        moe_grouped_swiglu(x, off[:3], w13, w2)
    with pytest.raises(TypeError, match=r"'offsets' must have dtype int32, got int64"):
        moe_grouped_swiglu(x, off.long(), w13, w2)


def test_bad_dtypes():
    x, off, w13, w2 = _ok()
    with pytest.raises(TypeError, match=r"'x_perm' must have dtype bfloat16 or float32 on cpu, got float16"):
        moe_grouped_swiglu(x.half(), off, w13.half(), w2.half())
    with pytest.raises(TypeError, match=r"'w13' must have the dtype of 'x_perm' \(float32\), got bfloat16"):
        moe_grouped_swiglu(x, off, w13.bfloat16(), w2)
    with pytest.raises(TypeError, match=r"'w2' must have the dtype of 'x_perm' \(float32\), got bfloat16"):
        moe_grouped_swiglu(x, off, w13, w2.bfloat16())


def test_bad_shapes():
    x, off, w13, w2 = _ok()
    with pytest.raises(ValueError, match=r"'w13' must have size 16 in dimension 2 \(the hidden size"):
        moe_grouped_swiglu(x, off, w13[:, :, :8], w2)
    with pytest.raises(ValueError, match=r"'w2' must have shape \[n_routed, H, F\] = \[3, 16, 8\]"):
        moe_grouped_swiglu(x, off, w13, w2[:, :, :4])
    with pytest.raises(ValueError, match=r"'w2' must have shape \[n_routed, H, F\] = \[3, 16, 8\]"):
        moe_grouped_swiglu(x, off, w13, w2[:2])
    with pytest.raises(ValueError, match=r"'w13' must have an even size in dimension 1"):
        moe_grouped_swiglu(x, off, w13[:, :15], w2)
    with pytest.raises(ValueError, match=r"'x_perm' must have 2 dimensions"):
        moe_grouped_swiglu(x[None], off, w13, w2)


def test_non_contiguous():
    x, off, w13, w2 = _ok()
    with pytest.raises(ValueError, match=r"'w13' must be contiguous"):
        moe_grouped_swiglu(x, off, w13.transpose(1, 2).contiguous().transpose(1, 2), w2)
    with pytest.raises(ValueError, match=r"'w2' must be contiguous"):
        moe_grouped_swiglu(x, off, w13, torch.cat([w2, w2], 2)[:, :, ::2])
    with pytest.raises(ValueError, match=r"'x_perm' must be contiguous"):
        moe_grouped_swiglu(torch.cat([x, x], 1)[:, ::2], off, w13, w2)


def test_bad_arguments_and_devices():
    x, off, w13, w2 = _ok()
    with pytest.raises(TypeError, match=r"'offsets' must be a torch.Tensor, got list"):
        moe_grouped_swiglu(x, [0, 2, 2, 6], w13, w2)
    with pytest.raises(ValueError, match=r"'w2' must be on the device of 'x_perm' \(cpu\), got meta"):
        moe_grouped_swiglu(x, off, w13, w2.to("meta"))


def test_c_api_checks_workspace_and_out():
    # The C++ API validates on its own (framework authors call it without the Python checks).
    x, off, w13, w2 = _ok()
    out = torch.empty_like(x)
    need = workspace_size(6, 16, 8, 3, torch.float32)
    with pytest.raises(ValueError, match=rf"'workspace' must have at least {need} bytes .* got 10"):
        _C.moe_grouped_swiglu(out, x, off, w13, w2, torch.empty(10, dtype=torch.uint8))
    ws = torch.empty(need, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"'out' must have the shape of 'x_perm' \[6, 16\], got \[5, 16\]"):
        _C.moe_grouped_swiglu(out[:5], x, off, w13, w2, ws)
    with pytest.raises(ValueError, match=r"'w2' must have size 8 in dimension 2 \(the intermediate size"):
        _C.moe_grouped_swiglu(out, x, off, w13, w2[:, :, :4].contiguous(), ws)
    with pytest.raises(ValueError, match=r"'w2' must be contiguous"):
        _C.moe_grouped_swiglu(out, x, off, w13, w2.transpose(1, 2).contiguous().transpose(1, 2), ws)
    _C.moe_grouped_swiglu(out, x, off, w13, w2, ws)
    assert_matches(out, reference.moe_grouped_swiglu(x, off, w13, w2))
