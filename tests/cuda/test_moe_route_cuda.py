"""MoE CUDA kernels (csrc/cuda/moe_route.cu) against the plain-torch references, on the device.

Covers the router's two block shapes (4 tokens per block, and 1 when T < 4), its float4 path
(H a multiple of 4) and scalar path (odd H), fp32 / fp16 / bf16 hidden states, softmax and
sigmoid scores with and without renormalisation, ties (all-equal scores go to ids 0..k-1), the
dispatch layout (shared-memory histogram and the global-atomics path for n_routed > 8192),
alignment padding, zero experts, and combine's 16-byte and scalar paths.
"""
from __future__ import annotations

import itertools

import pytest
import torch

import longcat
from longcat.ops import moe_combine, moe_dispatch, moe_route, reference

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or longcat.build_info().get("cuda", "off").lower() != "on",
    reason="needs a CUDA device and a longcat built with its CUDA kernels")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def make(T, H, n_routed, n_zero, dtype, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    E = n_routed + n_zero
    hidden = torch.randn(T, H, generator=g, device="cuda").to(dtype)
    weight = torch.randn(E, H, generator=g, device="cuda") / max(H, 1) ** 0.5
    bias = torch.randn(E, generator=g, device="cuda") * 0.05
    return hidden, weight, bias


def check_route(hidden, weight, bias, k, nr, nz, scale=1.0, score="softmax", renormalize=False):
    ids, w = moe_route(hidden, weight, bias, k, nr, nz, scale, score, renormalize)
    rids, rw = reference.moe_route(hidden, weight, bias, k, nr, nz, scale, score, renormalize)
    if torch.equal(ids, rids):
        torch.testing.assert_close(w, rw, rtol=1e-5, atol=1e-6)
        return ids, w
    # Near-ties may flip under another summation order: the chosen biased scores must agree.
    z = torch.nn.functional.linear(hidden.float(), weight)
    s = z.softmax(-1) if score == "softmax" else z.sigmoid()
    biased = s + bias if bias is not None else s
    torch.testing.assert_close(biased.gather(1, ids.long()), biased.gather(1, rids.long()), rtol=0, atol=2e-6)
    return ids, w


def check_pipeline(T, H, k, nr, nz, dtype, align, seed=0, **kw):
    hidden, weight, bias = make(T, H, nr, nz, dtype, seed)
    ids, w = check_route(hidden, weight, bias, k, nr, nz, **kw)
    got = moe_dispatch(hidden, ids, nr, align)
    want = reference.moe_dispatch(hidden, ids, nr, align)
    for name, a, b in zip(["x_perm", "counts", "offsets", "row_token", "slot_row"], got, want):
        assert a.shape == b.shape and torch.equal(a, b), name
    expert_out = (got[0].float() * 0.5 + 1).to(dtype)
    y = moe_combine(expert_out, got[4], ids, w, hidden, nr)
    y_ref = reference.moe_combine(expert_out, got[4], ids, w, hidden, nr)
    torch.testing.assert_close(y, y_ref, **({"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {}))


GRID = list(itertools.product([1, 3, 7, 128, 1000], [64, 257, 6144], [1, 8, 12], [8, 64, 512], [0, 256]))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("T,H,k,nr,nz", [g for g in GRID if g[2] <= g[3] + g[4] and not (g[0] == 1000 and g[1] == 6144)])
def test_pipeline_grid(T, H, k, nr, nz, dtype):
    check_pipeline(T, H, k, nr, nz, dtype, (1, 16, 128)[(T + k + nr) % 3], seed=T + H, routed_scaling_factor=2.5)


@pytest.mark.parametrize("score,renormalize", [("softmax", True), ("sigmoid", False), ("sigmoid", True)])
def test_score_variants(score, renormalize):
    check_pipeline(300, 512, 8, 64, 16, torch.bfloat16, 16, seed=3, score=score, renormalize=renormalize)


def test_longcat_shape():
    check_pipeline(512, 6144, 12, 512, 256, torch.bfloat16, 128, seed=4, routed_scaling_factor=6.0)


def test_ties_and_zero_experts():
    hidden = torch.randn(9, 64, device="cuda")
    weight = torch.zeros(72, 64, device="cuda")
    ids, w = moe_route(hidden, weight, None, 8, 64, 8, 2.0)
    assert torch.equal(ids.cpu(), torch.arange(8, dtype=torch.int32).expand(9, 8))
    bias = torch.zeros(72, device="cuda")
    bias[64:] = 1.0
    ids, w = moe_route(hidden, weight, bias, 4, 64, 8)
    assert (ids >= 64).all()
    x_perm, counts, offsets, row_token, slot = moe_dispatch(hidden, ids, 64, 16)
    assert x_perm.shape == (0, 64) and (slot == -1).all() and (counts == 0).all()
    y = moe_combine(x_perm, slot, ids, w, hidden, 64)
    torch.testing.assert_close(y, w.sum(1, keepdim=True) * hidden)


def test_many_experts_global_histogram():
    hidden, weight, bias = make(64, 64, 9000, 0, torch.bfloat16, 5)
    ids = torch.randint(0, 9000, (64, 4), device="cuda", dtype=torch.int32)
    got = moe_dispatch(hidden, ids, 9000, 1)
    want = reference.moe_dispatch(hidden, ids, 9000, 1)
    for a, b in zip(got, want):
        assert torch.equal(a, b)


def test_negative_ids_raise():
    hidden = torch.randn(4, 64, device="cuda")
    ids = torch.tensor([[0, 1], [-1, 2], [3, 3], [1, 0]], dtype=torch.int32, device="cuda")
    with pytest.raises(ValueError, match="topk_ids"):
        moe_dispatch(hidden, ids, 8)


def test_gradients_on_device():
    hidden, weight, bias = make(16, 64, 8, 4, torch.float32, 6)
    h1, h2 = hidden.clone().requires_grad_(), hidden.clone().requires_grad_()

    def run(route, dispatch, combine, h):
        ids, w = route(h, weight, bias, 3, 8, 4, 1.5)
        x_perm, _, _, _, slot = dispatch(h, ids, 8, 4)
        return combine(x_perm * 2, slot, ids, w, h, 8)

    run(moe_route, moe_dispatch, moe_combine, h1).sum().backward()
    run(reference.moe_route, reference.moe_dispatch, reference.moe_combine, h2).sum().backward()
    torch.testing.assert_close(h1.grad, h2.grad, rtol=1e-4, atol=1e-5)
