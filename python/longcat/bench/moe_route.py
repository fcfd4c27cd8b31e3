"""MoE routing benchmark at LongCat-Flash's shape (hidden 6144, 512 routed + 256 zero experts,
top-12, bf16 activations, fp32 router).

``route`` rows: longcat's router vs the plain-torch reference (transformers' LongcatFlashTopkRouter:
fp32 F.linear, softmax, topk over biased scores, gather), both end to end.
``dispatch+combine`` rows: moe_dispatch (align 1) followed by moe_combine over the dispatched rows
(the expert GEMM left out), against a torch implementation with index_select / index_add_, and
as GB/s against the copy bandwidth measured in the same run. ``route`` rows are repeated for every
CPU ISA copy of the kernels (``isa`` column); dispatch+combine rows use the active one. ``longcat_us`` is the ops as users
call them (allocating outputs); ``kernel_us`` the kernels into preallocated outputs, which the
GFLOP/s and GB/s columns use. On the CPU, ``vs_torch_1t_cpu`` compares the two routers again on one
thread each (torch and longcat) by the process's CPU time: the cost of a call whatever else the
shared cores run, and without the thread pools' different ways of waiting for work. Bytes counted: dispatch reads each
routed row of x and writes R rows; combine reads R rows, x (for the zero experts) and writes y.
"""
from __future__ import annotations

import torch

from longcat import _C
import longcat
import time

from longcat.bench.common import (BenchResult, copy_bandwidth_gbs, cpu_isa_copies, machine_info, measure,
                                  measure_interleaved, using_isa, using_threads)
from longcat.ops import moe_combine, moe_dispatch, moe_route, reference
from longcat.ops._common import stream_of

H, N_ROUTED, N_ZERO, TOP_K, SCALE = 6144, 512, 256, 12, 6.0
TOKENS = [16, 128, 512]
QUICK_TOKENS = [16, 128]
DC_TOKENS = [128, 512, 2048]
QUICK_DC_TOKENS = [128]


def torch_dispatch_combine(x: torch.Tensor, ids: torch.Tensor, w: torch.Tensor, n_routed: int) -> torch.Tensor:
    """The same two steps with torch's gather/scatter ops: a stable sort by expert, index_select
    of the routed rows, then index_add_ of the weighted rows back (zero experts: w * x)."""
    T, k = ids.shape
    flat = ids.reshape(-1)
    routed = flat < n_routed
    order = torch.argsort(flat.masked_fill(~routed, n_routed), stable=True)
    perm = order[: int(routed.sum())]
    token = perm // k
    x_perm = x.index_select(0, token)                                      # dispatch
    y = x.float() * (w * ~routed.view(T, k)).sum(1, keepdim=True)          # zero experts
    y.index_add_(0, token, x_perm.float() * w.reshape(-1)[perm, None])     # combine
    return y.to(x.dtype)


def run(device: str = "cpu", quick: bool = False) -> BenchResult:
    min_time = 0.05 if quick else 0.3
    bw = copy_bandwidth_gbs(device, quick)
    E = N_ROUTED + N_ZERO
    result = BenchResult(
        area="moe_route",
        title=f"MoE routing on {device}: H {H}, {N_ROUTED} routed + {N_ZERO} zero experts, top-{TOP_K} "
              f"(median per call; copy bandwidth {bw:.1f} GB/s)",
        columns=["op", "isa", "tokens", "longcat_us", "kernel_us", "torch_us", "vs_torch", "vs_torch_1t_cpu",
                 "GFLOP/s", "GB/s", "of_copy_bw"],
        context={"machine": machine_info(device), "copy_bandwidth_gbs": bw,
                 "note": "route: torch = the plain-torch reference router, timed in alternation with each ISA copy "
                         "(medians); vs_torch_1t_cpu: the same on one thread each, by process CPU time; dispatch+combine: torch = "
                         "index_select / index_add_; GB/s counts the rows moved (see module docstring)"},
    )
    g = torch.Generator(device=device).manual_seed(0)
    weight = torch.randn(E, H, generator=g, device=device) / H ** 0.5
    bias = torch.randn(E, generator=g, device=device) * 0.01
    for T in (QUICK_TOKENS if quick else TOKENS):
        hidden = torch.randn(T, H, generator=g, device=device).to(torch.bfloat16)
        ours = lambda: moe_route(hidden, weight, bias, TOP_K, N_ROUTED, N_ZERO, SCALE)  # noqa: E731
        ref = lambda: reference.moe_route(hidden, weight, bias, TOP_K, N_ROUTED, N_ZERO, SCALE)  # noqa: E731
        ids, w = ours()
        kernel = lambda: _C.moe_route(ids, w, hidden, weight, bias, N_ROUTED, N_ZERO, SCALE,  # noqa: E731
                                      "softmax", False, stream_of(hidden))
        for isa in cpu_isa_copies(device):
            with using_isa(isa):
                # The reference in alternation with each copy: same load on a shared machine.
                t_ours, t_ref = measure_interleaved([ours, ref], device, min_time, min_rounds=5)
                t_kernel = measure(kernel, device, min_time)
                one_thread = {}
                if device == "cpu":
                    with using_threads(1):
                        c_ours, c_ref = measure_interleaved([ours, ref], device, min_time, min_rounds=5,
                                                            clock=time.process_time)
                    one_thread = {"vs_torch_1t_cpu": c_ref / c_ours}
            result.add(op="route", isa=isa, tokens=T, longcat_us=t_ours * 1e6, kernel_us=t_kernel * 1e6,
                       torch_us=t_ref * 1e6, vs_torch=t_ref / t_ours,
                       **{"GFLOP/s": 2 * T * E * H / t_kernel / 1e9}, **one_thread)
    for T in (QUICK_DC_TOKENS if quick else DC_TOKENS):
        x = torch.randn(T, H, generator=g, device=device).to(torch.bfloat16)
        ids, w = moe_route(x, weight, bias, TOP_K, N_ROUTED, N_ZERO, SCALE)

        def ours():
            x_perm, _, _, _, slot = moe_dispatch(x, ids, N_ROUTED)
            return moe_combine(x_perm, slot, ids, w, x, N_ROUTED)

        peer = lambda: torch_dispatch_combine(x, ids, w, N_ROUTED)  # noqa: E731
        torch.testing.assert_close(ours(), peer())
        # The kernels alone, into preallocated outputs (fresh multi-MB outputs cost page faults).
        x_perm, counts, offsets, row_token, slot = moe_dispatch(x, ids, N_ROUTED)
        y = torch.empty_like(x)
        s = stream_of(x)

        def kernel():
            _C.moe_dispatch_layout(counts, offsets, ids, N_ROUTED, 1, s)
            _C.moe_dispatch(x_perm, row_token, slot, x, ids, counts, offsets, N_ROUTED, s)
            _C.moe_combine(y, x_perm, slot, ids, w, x, N_ROUTED, s)

        t_ours, t_peer = measure(ours, device, min_time), measure(peer, device, min_time)
        t_kernel = measure(kernel, device, min_time)
        n_routed_rows = int((ids < N_ROUTED).sum())
        esize = x.element_size()
        nbytes = (2 * n_routed_rows + n_routed_rows + 2 * T) * H * esize
        gbs = nbytes / t_kernel / 1e9
        result.add(op="dispatch+combine", isa=longcat.cpu_isa(), tokens=T, longcat_us=t_ours * 1e6, kernel_us=t_kernel * 1e6,
                   torch_us=t_peer * 1e6,
                   vs_torch=t_peer / t_ours, **{"GB/s": gbs, "of_copy_bw": gbs / bw})
    return result


def main(argv: list[str] | None = None) -> None:
    from longcat.cli import main as cli_main

    cli_main(["bench", "moe_route", *(argv or [])])
