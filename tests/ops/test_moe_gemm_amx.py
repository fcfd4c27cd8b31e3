"""The AMX copy of the grouped SwiGLU GEMM against the plain-torch reference.

Two runs of the same kernel code: the emulated copy (tile instructions emulated in scalar C++
after the Intel SDM pseudocode; runs on every machine, through a private test entry point), and
the hardware copy (TDPBF16PS; where the CPU has no AMX its cases are skipped with that reason, and
``test_hardware_copy_runs_exactly_where_the_cpu_has_amx`` checks that asking for it is refused).
Shapes cover ragged tiles (rows, columns and K not multiples of 16 / 16 / 32, K across the
256-wide K step), experts with 0 rows, F = 0 and NaN propagation."""
import pytest
import torch

import longcat
from longcat import _C
from longcat.ops import moe_grouped_swiglu, reference
from longcat.ops.moe_gemm import _run

from test_moe_gemm import assert_matches, make_weights, make_x, split_rows


def emulated(x, offsets, w13, w2):
    return _run(x, offsets, w13, w2, amx_emulated=True)


def hardware(x, offsets, w13, w2):
    before = longcat.cpu_isa()
    longcat.set_cpu_isa("amx")
    try:
        return moe_grouped_swiglu(x, offsets, w13, w2)
    finally:
        longcat.set_cpu_isa(before)


HAS_AMX = _C.cpu_isa_detected() == "amx"
# The hardware copy's cases are collected everywhere and skipped, with this reason, where the
# CPU has no AMX (`pytest -rs` lists it).
NEEDS_AMX = pytest.mark.skipif(not HAS_AMX, reason=f"no AMX on this CPU (best ISA: {_C.cpu_isa_detected()}): "
                                                  "the hardware TDPBF16PS copy does not run here")


@pytest.fixture(params=["emulated", pytest.param("hardware", marks=NEEDS_AMX)])
def amx_copy(request):
    return emulated if request.param == "emulated" else hardware


def test_hardware_copy_runs_exactly_where_the_cpu_has_amx():
    """On an AMX CPU the amx copy can be chosen and `longcat info` says it is used; elsewhere
    asking for it is a clear error that leaves the active copy as it was."""
    from longcat.cli import info_dict

    before = longcat.cpu_isa()
    if HAS_AMX:
        longcat.set_cpu_isa("amx")
        try:
            assert longcat.cpu_isa() == "amx"
            assert info_dict()["cpu.amx_copies"] == "moe_grouped_swiglu, mla_prefill, mla_decode (active)"
        finally:
            longcat.set_cpu_isa(before)
    else:
        with pytest.raises(ValueError, match="supports up to .*got 'amx'"):
            longcat.set_cpu_isa("amx")
        assert longcat.cpu_isa() == before
        assert info_dict()["cpu.amx_copies"].startswith(
            "moe_grouped_swiglu, mla_prefill, mla_decode (not used: this CPU's best is")


def check(run, R, H, F, E, dtype=torch.bfloat16, offsets=None, seed=0):
    w13, w2 = make_weights(E, H, F, dtype, seed)
    x = make_x(R, H, dtype, seed + 1)
    offsets = split_rows(R, E, seed + 2) if offsets is None else offsets
    got = run(x, offsets, w13, w2)
    want = reference.moe_grouped_swiglu(x, offsets, w13, w2)
    assert_matches(got, want)
    return got, want


# H: one partial 32-wide K chunk, ragged chunks, and K across the 256 K step (odd: a half pair).
@pytest.mark.parametrize("H,F", [(64, 32), (100, 17), (301, 70)])
@pytest.mark.parametrize("R,E", [(9, 1), (40, 3), (130, 2)])
def test_grid(amx_copy, R, H, F, E):
    check(amx_copy, R, H, F, E)


def test_rows_per_expert(amx_copy):
    # Around every path switch: the streaming limits (4 emulated, 8 on hardware), 16-row token
    # tiles and their pairs, the 96-row block and past it.
    H, F = 97, 33
    w13, w2 = make_weights(3, H, F, torch.bfloat16, seed=H)
    for r in [0, 1, 4, 5, 8, 9, 15, 16, 17, 31, 32, 33, 48, 64, 95, 96, 97, 113]:
        offsets = torch.tensor([0, 0, r, r + 1], dtype=torch.int32)
        x = make_x(r + 1, H, torch.bfloat16, seed=r)
        assert_matches(amx_copy(x, offsets, w13, w2), reference.moe_grouped_swiglu(x, offsets, w13, w2))


def test_close_to_bit_exact(amx_copy):
    got, want = check(amx_copy, 64, 256, 128, 2, offsets=torch.tensor([0, 40, 64], dtype=torch.int32))
    assert (got != want).float().mean().item() < 0.1


def test_float32_runs_the_fp32_path(amx_copy):
    check(amx_copy, 37, 50, 20, 2, dtype=torch.float32)


def test_experts_without_rows(amx_copy):
    # Empty first, middle and last experts; a 97-row expert has a second row block of 1 row.
    offsets = torch.tensor([0, 0, 17, 17, 114, 130, 130], dtype=torch.int32)
    check(amx_copy, 130, 64, 48, 6, offsets=offsets)


def test_intermediate_zero_gives_zeros(amx_copy):
    w13, w2 = make_weights(2, 32, 0, torch.bfloat16)
    x = make_x(20, 32, torch.bfloat16)
    got = amx_copy(x, torch.tensor([0, 12, 20], dtype=torch.int32), w13, w2)
    assert torch.equal(got, torch.zeros_like(got))


def test_nan_propagates_to_exactly_the_rows_that_see_it(amx_copy):
    E, H, F = 3, 64, 40
    w13, w2 = make_weights(E, H, F, torch.bfloat16)
    x = make_x(60, H, torch.bfloat16)
    offsets = torch.tensor([0, 20, 40, 60], dtype=torch.int32)
    x[5, 7] = float("nan")            # one row of expert 0
    w13[1, 3, 50] = float("nan")      # a gate weight of expert 1: all its rows
    w2[2, 10, 39] = float("nan")      # a down weight of expert 2 (the last K element): one column
    got = amx_copy(x, offsets, w13, w2)
    want = reference.moe_grouped_swiglu(x, offsets, w13, w2)
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    assert torch.isnan(got[5]).all() and torch.isnan(got[20:40]).all() and torch.isnan(got[40:, 10]).all()
    keep = ~torch.isnan(want)
    torch.testing.assert_close(got[keep].float(), want[keep].float(), rtol=2e-2, atol=2e-2)


def test_denormal_inputs_read_as_zero():
    # TDPBF16PS treats denormal inputs as zero (DAZ): products of a large x with denormal weights
    # vanish on the AMX copy, where fp32 arithmetic keeps them. (Shows the tile path ran; the
    # bf16 reference is no witness: torch's bf16 matmul may run on vdpbf16ps, DAZ as well.)
    E, H, F, R = 1, 64, 32, 16
    w13, w2 = make_weights(E, H, F, torch.bfloat16)
    w13[:, :, 0] = 1e-39                               # denormal in bf16 (min normal 1.2e-38)
    x = torch.zeros(R, H, dtype=torch.bfloat16)
    x[:, 0] = 1e30
    offsets = torch.tensor([0, R], dtype=torch.int32)
    want = reference.moe_grouped_swiglu(x.float(), offsets, w13.float(), w2.float())
    assert want.abs().max() > 0
    got = emulated(x, offsets, w13, w2)
    assert torch.equal(got, torch.zeros_like(got))


def test_bad_input_names_the_argument():
    w13, w2 = make_weights(2, 32, 16, torch.bfloat16)
    x = make_x(8, 32, torch.bfloat16)
    with pytest.raises(ValueError, match="offsets"):
        emulated(x, torch.tensor([0, 5, 7], dtype=torch.int32), w13, w2)
