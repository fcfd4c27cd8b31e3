"""Grouped expert SwiGLU GEMM on CUDA (csrc/cuda/moe_gemm.cu: CUTLASS ptr-array grouped GEMM +
SwiGLU kernel) against the plain-torch per-expert reference, on the device: shape grid with
empty groups, one-expert and many-expert segmentations, rows not a multiple of the 128-row
tile, autograd through the op, and the CUDA-only argument rules (bf16 only, H and F multiples of 8)."""
from __future__ import annotations

import pytest
import torch

import longcat
from longcat.ops import moe_grouped_swiglu, reference

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or longcat.build_info().get("cuda", "off").lower() != "on",
    reason="needs a CUDA device and a longcat built with its CUDA kernels")


def make(R, H, F, E, seed=0, empty=0.3):
    g = torch.Generator().manual_seed(seed)
    w13 = (torch.randn(E, 2 * F, H, generator=g) / H ** 0.5).bfloat16().cuda()
    w2 = (torch.randn(E, H, F, generator=g) / F ** 0.5).bfloat16().cuda()
    x = torch.randn(R, H, generator=g).bfloat16().cuda()
    weights = torch.rand(E, generator=g)
    weights[torch.rand(E, generator=g) < empty] = 0
    if weights.sum() == 0:
        weights[0] = 1
    counts = torch.bincount(torch.multinomial(weights, R, replacement=True, generator=g), minlength=E) if R else torch.zeros(E, dtype=torch.int64)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)]).int().cuda()
    return x, offsets, w13, w2


def assert_matches(got, want):
    torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("E", [1, 8, 64])
@pytest.mark.parametrize("F", [32, 128, 2048])
@pytest.mark.parametrize("H", [64, 256, 6144])
@pytest.mark.parametrize("R", [0, 1, 7, 128, 1000])
def test_grid(R, H, F, E):
    x, offsets, w13, w2 = make(R, H, F, E, seed=R + H + F + E)
    assert_matches(moe_grouped_swiglu(x, offsets, w13, w2), reference.moe_grouped_swiglu(x, offsets, w13, w2))


def test_all_rows_in_one_expert_and_empty_groups():
    x, _, w13, w2 = make(777, 256, 128, 8)
    offsets = torch.tensor([0, 0, 0, 777, 777, 777, 777, 777, 777], dtype=torch.int32, device="cuda")
    assert_matches(moe_grouped_swiglu(x, offsets, w13, w2), reference.moe_grouped_swiglu(x, offsets, w13, w2))


def test_no_host_sync_and_stream_order():
    # Runs on a side stream: the op must order its work on torch's current stream.
    x, offsets, w13, w2 = make(300, 256, 128, 8)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        got = moe_grouped_swiglu(x, offsets, w13, w2)
    s.synchronize()
    assert_matches(got, reference.moe_grouped_swiglu(x, offsets, w13, w2))


def test_autograd_on_device():
    x, offsets, w13, w2 = make(50, 64, 32, 4)
    x, w13, w2 = (t.float().bfloat16().requires_grad_() for t in (x, w13, w2))
    moe_grouped_swiglu(x, offsets, w13, w2).float().sum().backward()
    assert x.grad is not None and w13.grad is not None and w2.grad is not None
    assert torch.isfinite(w13.grad.float()).all()


def test_cuda_argument_rules():
    x, offsets, w13, w2 = make(16, 64, 32, 2)
    with pytest.raises(TypeError, match=r"'x_perm' must have dtype bfloat16 on cuda, got float32"):
        moe_grouped_swiglu(x.float(), offsets, w13.float(), w2.float())
    x2, off2, a2, b2 = make(16, 60, 32, 2)
    with pytest.raises(ValueError, match=r"multiples of 8"):
        moe_grouped_swiglu(x2, off2, a2, b2)


def test_tma_base_pointer_alignment():
    # TMA boxes start at 16-byte aligned addresses: a view one element in is a ValueError naming
    # the argument, not a device fault.
    x, offsets, w13, w2 = make(16, 64, 32, 2)
    shifted = torch.empty(16 * 64 + 1, dtype=torch.bfloat16, device="cuda")[1:].view(16, 64)
    shifted.copy_(x)
    with pytest.raises(ValueError, match=r"argument 'x_perm' must start at a 16-byte aligned address"):
        moe_grouped_swiglu(shifted, offsets, w13, w2)


def test_zero_intermediate_is_zero_on_device():
    x, offsets, _, _ = make(16, 64, 32, 2)
    w13, w2 = torch.empty(2, 0, 64, dtype=torch.bfloat16, device="cuda"), torch.empty(2, 64, 0, dtype=torch.bfloat16, device="cuda")
    torch.empty(16, 64, dtype=torch.bfloat16, device="cuda").fill_(float("nan"))  # stale memory to reuse
    assert torch.equal(moe_grouped_swiglu(x, offsets, w13, w2), torch.zeros(16, 64, dtype=torch.bfloat16, device="cuda"))
