"""Grouped SwiGLU GEMM: the edges of the CPU kernels' blocking, on every ISA copy.

Rows per expert around each path switch (0, 1, the weight-streaming limits 4 and 8, the
micro-tile heights 6/8, the vdpbf16ps micro-tiles' 16-row vectors (1-2 vectors x 8 weight rows up
to 32 rows, then up to 6 vectors x 4), the row block 96 and its multiples), odd H and F (the CPU API takes any
size: vector tails, partial column tiles, several K steps and a masked tail on the vdpbf16ps
path), and NaN propagation (a NaN reaches exactly the outputs the reference makes NaN)."""
import pytest
import torch

import longcat
from longcat.ops import moe_grouped_swiglu, reference

from test_moe_gemm import assert_matches, make_weights, make_x

DTYPES = [torch.float32, torch.bfloat16]
ROWS = [0, 1, 3, 4, 5, 7, 8, 9, 16, 17, 32, 33, 48, 63, 64, 65, 80, 96, 97, 257]


def offsets_for(counts):
    return torch.tensor([0, *torch.tensor(counts).cumsum(0).tolist()], dtype=torch.int32)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("H,F", [(600, 130), (97, 33)])
def test_rows_per_expert(cpu_isa, H, F, dtype):
    # Expert 1 gets r rows for every r (between an empty and a one-row expert), in one call per r.
    E = 3
    w13, w2 = make_weights(E, H, F, dtype, seed=H)
    for r in ROWS:
        offsets = offsets_for([0, r, 1])
        x = make_x(r + 1, H, dtype, seed=r)
        got = moe_grouped_swiglu(x, offsets, w13, w2)
        assert_matches(got, reference.moe_grouped_swiglu(x, offsets, w13, w2))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("rows", [2, 8, 64])  # the streaming path, its limit, the packed path
@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")  # said by mkldnn.flags
def test_nan_propagates_like_the_reference(cpu_isa, rows, dtype):
    E, H, F = 3, 300, 70
    w13, w2 = make_weights(E, H, F, dtype)
    offsets = offsets_for([rows, rows, rows])
    x = make_x(3 * rows, H, dtype)
    x[1, 5] = float("nan")                      # one row of expert 0
    w13[1, 3, 17] = float("nan")                # a gate row of expert 1: all of its rows
    w2[2, 7, 11] = float("nan")                 # one output column of expert 2
    got = moe_grouped_swiglu(x, offsets, w13, w2)
    # torch 2.13's oneDNN bf16 linear on an AMX CPU lets a NaN of one row reach another (seen
    # at K = 70 with 64 rows: row 1's NaN also fills row 0; not at K = 16-64, 96 or 130), so
    # the reference runs on torch's own kernels here.
    with torch.backends.mkldnn.flags(enabled=False):
        want = reference.moe_grouped_swiglu(x, offsets, w13, w2)
    assert torch.equal(got.isnan(), want.isnan())
    assert got.isnan().any() and not got.isnan().all()
    finite = ~want.isnan()
    assert_matches(torch.where(finite, got, 0), torch.where(finite, want, 0))


@pytest.mark.parametrize("rows", [5, 40])  # the streaming path, the vectorised SwiGLU epilogue
def test_gates_far_outside_the_unit_range(cpu_isa, rows):
    # Gates of magnitude up to ~100: exp(-g) overflows and underflows in the SwiGLU epilogue.
    E, H, F = 2, 128, 48
    w13, w2 = make_weights(E, H, F, torch.bfloat16)
    scale = torch.ones(1, 2 * F, 1)
    scale[:, :F], scale[:, F:] = 60, 1 / 60  # gates x60, up values /60: the output stays O(1)
    w13 = (w13.float() * scale).to(torch.bfloat16)
    offsets = offsets_for([rows, rows])
    x = make_x(2 * rows, H, torch.bfloat16)
    got = moe_grouped_swiglu(x, offsets, w13, w2)
    want = reference.moe_grouped_swiglu(x, offsets, w13, w2)
    h = x.float() @ w13[0, :F].float().T
    assert h.abs().max() > 50  # the gates do reach the range this test is about
    assert_matches(got, want)


def test_rows_too_many_to_pack_up_front():
    # The vdpbf16ps path packs a GEMM's rows once, into the workspace, up to 64 MB of packed rows
    # ((R + 16 E) * ceil(K / 2) words); beyond that each tile packs its own. Here the gate/up GEMM
    # (K = H = 4096) is over the cap and the down GEMM (K = F = 8) under it: both ways in one call.
    # A CPU without AVX512-BF16 checks the same large call on its best copy.
    isa = "avx512bf16" if "avx512bf16" in longcat.cpu_isas_available() else longcat.cpu_isa()
    E, H, F, rows = 2, 4096, 8, 4100
    assert (2 * rows + 16 * E) * (H // 2) * 4 > 64 << 20 > (2 * rows + 16 * E) * (F // 2) * 4
    w13, w2 = make_weights(E, H, F, torch.bfloat16)
    offsets = offsets_for([rows, rows])
    x = make_x(2 * rows, H, torch.bfloat16)
    before = longcat.cpu_isa()
    longcat.set_cpu_isa(isa)
    try:
        got = moe_grouped_swiglu(x, offsets, w13, w2)
    finally:
        longcat.set_cpu_isa(before)
    assert_matches(got, reference.moe_grouped_swiglu(x, offsets, w13, w2))
