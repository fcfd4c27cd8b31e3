"""Plain-torch references for every longcat kernel: written for clarity, not speed.

Each function defines the semantics its kernel must reproduce; tests compare the two.
"""
from __future__ import annotations

import torch


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm as Hugging Face transformers' LongcatFlashRMSNorm / LlamaRMSNorm computes it:
    statistics in fp32, the normalised value rounded to x's dtype, then multiplied by weight."""
    dtype = x.dtype
    xf = x.float()
    variance = xf.pow(2).mean(-1, keepdim=True)
    return weight * (xf * torch.rsqrt(variance + eps)).to(dtype)


def fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                       eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoder's residual step: s = x + residual (in x's dtype), then (rms_norm(s), s)."""
    s = x + residual
    return rms_norm(s, weight, eps), s


def moe_grouped_swiglu(x_perm: torch.Tensor, offsets: torch.Tensor, w13: torch.Tensor,
                       w2: torch.Tensor) -> torch.Tensor:
    """The grouped expert MLP of the MoE layer, one expert at a time, as Hugging Face
    transformers' LongcatFlashExperts runs it: rows ``offsets[e]:offsets[e+1]`` of ``x_perm``
    (grouped by expert) go through expert e's SwiGLU MLP,
    ``gate, up = F.linear(x, w13[e]).chunk(2, -1)``; ``F.linear(F.silu(gate) * up, w2[e])``.

    w13 is ``gate_up_proj [E, 2F, H]`` (gate rows first), w2 is ``down_proj [E, H, F]``. In bf16
    every op rounds its result to bf16 (matmuls accumulate in fp32), which fixes the rounding
    the kernels reproduce."""
    bounds = [int(b) for b in offsets.tolist()]
    outs = []
    for e in range(w13.shape[0]):
        x = x_perm[bounds[e]:bounds[e + 1]]
        gate, up = torch.nn.functional.linear(x, w13[e]).chunk(2, dim=-1)
        outs.append(torch.nn.functional.linear(torch.nn.functional.silu(gate) * up, w2[e]))
    return torch.cat(outs, dim=0)
