"""LongCat-Flash MoE layer: router with zero-computation experts, dispatch, grouped SwiGLU
experts, combine; optionally expert-parallel over a torch.distributed group.

Numerically the layer equals Hugging Face transformers' ``LongcatFlashMoE`` given the same
weights (``MoE.from_hf`` copies them); it differs in how it runs: tokens are grouped by expert
and every expert's rows go through one grouped GEMM instead of a Python loop over experts, and
zero-computation experts never enter a GEMM.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from longcat import ops


@dataclass
class MoEConfig:
    """Field names follow transformers' LongcatFlashConfig."""

    hidden_size: int = 6144
    expert_ffn_hidden_size: int = 2048
    n_routed_experts: int = 512
    zero_expert_num: int = 256
    moe_topk: int = 12
    routed_scaling_factor: float = 6.0
    score: str = "softmax"        # "sigmoid" for DeepSeek-style routers
    renormalize: bool = False

    def __post_init__(self):
        for name in ("hidden_size", "expert_ffn_hidden_size", "n_routed_experts", "moe_topk"):
            if getattr(self, name) < 1:
                raise ValueError(f"MoEConfig: '{name}' must be >= 1, got {getattr(self, name)}")
        if self.zero_expert_num < 0:
            raise ValueError(f"MoEConfig: 'zero_expert_num' must be >= 0, got {self.zero_expert_num}")
        if self.moe_topk > self.n_experts:
            raise ValueError(f"MoEConfig: 'moe_topk' ({self.moe_topk}) exceeds the number of experts "
                             f"({self.n_experts} = n_routed_experts + zero_expert_num)")

    @property
    def n_experts(self) -> int:
        return self.n_routed_experts + self.zero_expert_num

    @classmethod
    def from_hf(cls, config) -> "MoEConfig":
        """From a transformers LongcatFlashConfig (or any object with its field names)."""
        if getattr(config, "router_bias", False):
            raise ValueError("MoEConfig.from_hf: router_bias=True is not supported (LongCat-Flash has none)")
        return cls(hidden_size=config.hidden_size, expert_ffn_hidden_size=config.expert_ffn_hidden_size,
                   n_routed_experts=config.n_routed_experts, zero_expert_num=config.zero_expert_num or 0,
                   moe_topk=config.moe_topk, routed_scaling_factor=config.routed_scaling_factor)


def _hf_moe_fields(hf_moe):
    """The config fields of a transformers ``LongcatFlashMoE``: its ``config`` up to transformers
    5.24; 5.25 keeps no config there, so they are read off its router and experts."""
    if hasattr(hf_moe, "config"):
        return hf_moe.config
    from types import SimpleNamespace

    router, experts = hf_moe.router, hf_moe.experts
    return SimpleNamespace(hidden_size=router.hidden_dim, expert_ffn_hidden_size=experts.intermediate_dim,
                           n_routed_experts=hf_moe.num_routed_experts, zero_expert_num=hf_moe.zero_expert_num,
                           moe_topk=router.top_k, routed_scaling_factor=router.routed_scaling_factor,
                           router_bias=router.router_bias)


class MoE(nn.Module):
    """The MoE layer. Parameters:

    - ``router_weight [E, H]`` float32 (E = routed + zero experts), ``e_score_correction_bias [E]``
      (a buffer: it steers selection only, as in LongCat-Flash's load balancing);
    - ``w13 [n_routed, 2F, H]`` (gate rows then up rows) and ``w2 [n_routed, H, F]``, in the
      layer's dtype. Only routed experts have weights.

    ``expert_parallel``: a ``longcat.distributed.ExpertParallel``; this rank then holds only its
    experts' slices of w13/w2 (``ExpertParallel.local_slice``) and exchanges token rows with the
    other ranks.
    """

    def __init__(self, config: MoEConfig, dtype: torch.dtype = torch.float32, device=None,
                 expert_parallel=None, align: int = 1):
        super().__init__()
        self.config = config
        self.expert_parallel = expert_parallel
        self.align = align
        c = config
        n_local = c.n_routed_experts if expert_parallel is None else expert_parallel.n_local
        F, H = c.expert_ffn_hidden_size, c.hidden_size
        self.router_weight = nn.Parameter(torch.empty(c.n_experts, H, dtype=torch.float32, device=device))
        self.register_buffer("e_score_correction_bias", torch.zeros(c.n_experts, dtype=torch.float32, device=device))
        self.w13 = nn.Parameter(torch.empty(n_local, 2 * F, H, dtype=dtype, device=device))
        self.w2 = nn.Parameter(torch.empty(n_local, H, F, dtype=dtype, device=device))
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        with torch.no_grad():
            for p in (self.router_weight, self.w13, self.w2):
                p.normal_(0.0, std)

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        return ops.moe_route(x, self.router_weight, self.e_score_correction_bias, c.moe_topk,
                             c.n_routed_experts, c.zero_expert_num, c.routed_scaling_factor,
                             score=c.score, renormalize=c.renormalize)

    def experts(self, x_perm: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return ops.moe_grouped_swiglu(x_perm, offsets, self.w13, self.w2)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        shape = hidden.shape
        x = hidden.reshape(-1, shape[-1])
        topk_ids, topk_weights = self.route(x)
        if self.expert_parallel is not None:
            y = self.expert_parallel(x, topk_ids, topk_weights, self.experts)
        else:
            n = self.config.n_routed_experts
            x_perm, _, offsets, _, slot_row = ops.moe_dispatch(x, topk_ids, n, self.align)
            y = ops.moe_combine(self.experts(x_perm, offsets), slot_row, topk_ids, topk_weights, x, n)
        return y.reshape(shape)

    @classmethod
    def from_hf(cls, hf_moe, expert_parallel=None) -> "MoE":
        """A copy of a transformers ``LongcatFlashMoE`` (same weights, same outputs)."""
        config = MoEConfig.from_hf(_hf_moe_fields(hf_moe))
        dtype = hf_moe.experts.down_proj.dtype
        device = hf_moe.experts.down_proj.device
        moe = cls(config, dtype=dtype, device=device, expert_parallel=expert_parallel)
        n = config.n_routed_experts
        lo, hi = (0, n) if expert_parallel is None else expert_parallel.local_slice
        with torch.no_grad():
            moe.router_weight.copy_(hf_moe.router.classifier.weight.float())
            moe.e_score_correction_bias.copy_(hf_moe.router.e_score_correction_bias.float())
            moe.w13.copy_(hf_moe.experts.gate_up_proj[:n][lo:hi])
            moe.w2.copy_(hf_moe.experts.down_proj[:n][lo:hi])
        return moe
