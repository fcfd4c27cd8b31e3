"""MoE layer benchmark at the LongCat-Flash expert shape (H=6144, F=2048, 512 routed + 256 zero
experts, top-12) and a small shape.

Peers, measured in the same run: (a) the per-expert loop exactly as transformers'
LongcatFlashExperts runs it, on the same weights; (b) torch's bf16 dense ``F.linear`` of the same
FLOPs as the expert GEMMs; (c) the machine's copy bandwidth, for dispatch + combine.

The full LongCat expert set holds 38 GB of weights, more than this machine's memory, so each
row simulates it with fewer experts of the same shape and proportionally fewer tokens: the
rows per expert, the share of zero experts and the top-k stay those of the real layer at
``tokens_equiv`` tokens, and so does the weight traffic per token. tokens/s is that of the
simulated layer, which is the real layer's when every expert's weights stream from memory.
"""
from __future__ import annotations

import types

import torch

from longcat import ops
from longcat.bench.common import BenchResult, copy_bandwidth_gbs, machine_info, measure
from longcat.nn import MoE, MoEConfig


def transformers_loop(hidden, topk_ids, topk_weights, w13, w2, n_routed, n_zero):
    """transformers' LongcatFlashExperts.forward on our weights (its own code when installed)."""
    try:
        from transformers.models.longcat_flash.modeling_longcat_flash import LongcatFlashExperts
    except ImportError:  # pragma: no cover - transformers is a test dependency
        LongcatFlashExperts = None
    this = types.SimpleNamespace(gate_up_proj=w13, down_proj=w2, num_routed_experts=n_routed,
                                 total_experts=n_routed + n_zero, act_fn=torch.nn.functional.silu,
                                 identity_expert=torch.nn.Identity())
    if LongcatFlashExperts is not None:
        return LongcatFlashExperts.forward(this, hidden, topk_ids.long(), topk_weights)
    out = torch.zeros_like(hidden)
    for e in range(n_routed + n_zero):
        token, slot = torch.where(topk_ids == e)
        if token.numel() == 0:
            continue
        h = hidden[token]
        if e < n_routed:
            gate, up = torch.nn.functional.linear(h, w13[e]).chunk(2, dim=-1)
            h = torch.nn.functional.linear(torch.nn.functional.silu(gate) * up, w2[e])
        out.index_add_(0, token, (h * topk_weights[token, slot, None]).to(hidden.dtype))
    return out


# name, H, F, routed experts simulated, real routed, real zero, top-k, real token counts
CASES = [
    ("longcat", 6144, 2048, 64, 512, 256, 12, [16, 128, 512]),
    ("small", 1024, 512, 64, 64, 32, 8, [256]),
]
QUICK_CASES = [("small", 1024, 512, 16, 64, 32, 8, [256])]


def run(device: str = "cpu", quick: bool = False) -> BenchResult:
    dtype = torch.bfloat16
    min_time = 0.05 if quick else 0.5
    bw = copy_bandwidth_gbs(device, quick)
    result = BenchResult(
        area="moe",
        title=f"MoE layer on {device}, bf16 (median per call; copy bandwidth {bw:.1f} GB/s)",
        columns=["shape", "experts_sim", "tokens_equiv", "tokens", "routed_rows", "layer_ms", "loop_ms",
                 "vs_loop", "tokens/s", "gemm_ms", "gemm_TFLOP/s", "dense_TFLOP/s", "gemm_vs_dense",
                 "disp+comb_GB/s", "of_copy_bw"],
        context={"machine": machine_info(device), "copy_bandwidth_gbs": bw},
    )
    for name, H, F, n_sim, n_real, zero_real, topk, token_counts in (QUICK_CASES if quick else CASES):
        zero_sim = max(zero_real * n_sim // n_real, 0)
        cfg = MoEConfig(hidden_size=H, expert_ffn_hidden_size=F, n_routed_experts=n_sim,
                        zero_expert_num=zero_sim, moe_topk=min(topk, n_sim + zero_sim),
                        routed_scaling_factor=6.0)
        torch.manual_seed(0)
        moe = MoE(cfg, dtype=dtype, device=device).requires_grad_(False)
        moe.router_weight.normal_(0, 1.0)  # spread the routing over all experts
        for t_real in token_counts:
            T = max(1, t_real * n_sim // n_real)
            x = torch.randn(T, H, device=device).to(dtype)
            with torch.no_grad():
                ids, w = moe.route(x)
                x_perm, counts, offsets, row_token, slot_row = ops.moe_dispatch(x, ids, n_sim)
                R = x_perm.shape[0]
                t_layer = measure(lambda: moe(x), device, min_time, warmup=1)
                t_loop = measure(lambda: transformers_loop(x, ids, w, moe.w13, moe.w2, n_sim, zero_sim),
                                 device, min_time, warmup=1)
                t_gemm = measure(lambda: ops.moe_grouped_swiglu(x_perm, offsets, moe.w13, moe.w2),
                                 device, min_time, warmup=1)
                y_perm = ops.moe_grouped_swiglu(x_perm, offsets, moe.w13, moe.w2)
                t_dc = measure(lambda: ops.moe_combine(ops.moe_dispatch(x, ids, n_sim)[0], slot_row, ids, w, x,
                                                       n_sim), device, min_time)
                flops = 6.0 * R * H * F
                # torch's bf16 linear (weight [3F, H], as nn.Linear stores it): its fast path on CPU;
                # `a @ b` with b [H, 3F] takes a far slower one there.
                a = torch.randn(max(R, 1), H, device=device).to(dtype)
                b = torch.randn(3 * F, H, device=device).to(dtype)
                t_dense = measure(lambda: torch.nn.functional.linear(a, b), device, min_time, warmup=1)
                del y_perm
            es = x.element_size()
            dc_bytes = (3 * R + 2 * T) * H * es  # dispatch: read+write R rows; combine: R + x in, T out
            dense_tflops = 6.0 * max(R, 1) * H * F / t_dense / 1e12
            gemm_tflops = flops / t_gemm / 1e12
            result.add(shape=name, experts_sim=n_sim, tokens_equiv=t_real, tokens=T, routed_rows=R,
                       layer_ms=t_layer * 1e3, loop_ms=t_loop * 1e3, vs_loop=t_loop / t_layer,
                       **{"tokens/s": T / t_layer, "gemm_ms": t_gemm * 1e3, "gemm_TFLOP/s": gemm_tflops,
                          "dense_TFLOP/s": dense_tflops, "gemm_vs_dense": gemm_tflops / dense_tflops,
                          "disp+comb_GB/s": dc_bytes / t_dc / 1e9, "of_copy_bw": dc_bytes / t_dc / 1e9 / bw})
    return result


def main(argv: list[str] | None = None) -> None:
    from longcat.cli import main as cli_main

    cli_main(["bench", "moe", *(argv or [])])
