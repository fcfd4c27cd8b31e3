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
