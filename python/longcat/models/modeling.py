"""LongCat-Flash (and its Zig-Zag variant) as a torch module over the longcat kernels.

Numerically the model is transformers' ``LongcatFlashForCausalLM`` (same parameter names, same
ScMoE dataflow, MLA with LongCat's LoRA scalings, interleaved RoPE, fp32 router with zero
experts); it adds streaming sparse attention (SSA) on the sublayers the Zig-Zag ``layer_type``
marks '1', and a paged inference path (``forward_paged``, the ``PagedModel`` contract).

Which op runs where:

- Training forward (``model(input_ids, ...)``, differentiable): RMSNorm (``ops.rms_norm``),
  RoPE (``ops.rope_interleaved``) and the MoE (``longcat.nn.MoE``: ``moe_route``,
  ``moe_dispatch``, ``moe_grouped_swiglu``, ``moe_combine``) run the kernels with their autograd
  formulas; attention runs torch's ``scaled_dot_product_attention`` with the kernels' visibility
  rule (``reference.attention_visible``) as the mask, because ``mla_prefill`` / ``ssa_prefill``
  have no backward.
- ``forward_paged`` (inference): the same norms, RoPE and MoE kernels; ``mla_append_kv`` writes
  each sublayer's 576-wide latent; prefill chunks (``q_len > 1``) up-project the latents (the new
  ones, or the whole sequence gathered with ``mla_gather`` when a prefix is cached) and run
  ``mla_prefill`` / ``ssa_prefill`` for all of them in one call; decode rows (``q_len == 1``)
  run the absorbed form (``mla_decode`` / ``ssa_decode`` over the cache, one split plan per
  step for the MLA and one for the SSA sublayers). A decode-only step of <= 8 bf16 or float32
  rows on CPU runs each attention sublayer as one ``ops.mla_decode_layer`` call: the same
  kernels in the same order as the op-by-op path with ``ops.linear`` projections (bit for bit),
  without a Python round trip per op.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from longcat import _C, ops
from longcat.models.config import CACHE_LATENT_DIM, CACHE_ROPE_DIM, LongcatFlashConfig
from longcat.models.paged import PagedBatch
from longcat.nn import MoE, MoEConfig

_CACHE_DIM = CACHE_LATENT_DIM + CACHE_ROPE_DIM
_LATENT_NORM_EPS = 1e-6  # transformers builds q_a / kv_a norms without eps: the class default
_LINEAR_KERNEL_MAX_ROWS = 8  # see _linear
# Where _linear runs ops.linear, and so where a decode step's attention sublayers run as one
# ops.mla_decode_layer call (the same projections, see _StepPlan).
_LINEAR_KERNEL_DTYPES = (torch.bfloat16, torch.float32)


def _derived(module: nn.Module, sources: Sequence[torch.Tensor], compute) -> dict:
    """Inference-only tensors computed from ``sources`` (fused or absorbed copies of parameters),
    recomputed whenever a source changed: a new tensor, dtype or an in-place update (an optimizer
    step or ``load_weights`` bumps its version). They are copies, never folded into the
    parameters, so recomputing is idempotent: no scale is ever applied twice."""
    key = tuple((p.data_ptr(), p._version, p.dtype) for p in sources)
    cached = module.__dict__.get("_derived_cache")
    if cached is None or cached[0] != key:
        with torch.no_grad():
            cached = (key, compute())
        module.__dict__["_derived_cache"] = cached
    return cached[1]


def _forget_derived(module: nn.Module) -> None:
    module.__dict__.pop("_derived_cache", None)


class _WithDerived(nn.Module):
    """A module whose inference weights ``_derived`` caches. The cache stays out of copies and
    pickles (``copy.deepcopy``, ``torch.save``, Ray and torch.distributed sending the model): it
    is rebuilt on first use, and the C++ layer weights in it (``ops.mla_layer_weights``) can be
    neither pickled nor copied."""

    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop("_derived_cache", None)
        return state


def _linear(x: torch.Tensor, weight: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight)`` for inference, or per head with a 3-D weight (x ``[heads, M, K]``,
    weight ``[heads, N, K]``): longcat's weight-streaming kernel (``ops.linear``) for a few bf16 or
    float32 rows on CPU (decode), torch's GEMM otherwise. Measured (``longcat bench linear``, the
    small preset's matrices, 1 thread, process CPU time): bf16 2-2.3x faster than ``F.linear`` at
    1 row, 1.2-1.8x at 4-8; slower from about 16-32 rows on, where torch's blocked GEMM reuses
    each weight tile across rows. float32 (``LONGCAT_BENCH_DTYPE=float32``, AVX512-BF16 EPYC)
    with cold weights, as a decode step of a model larger than the L3 reads them: 1.04-1.5x at
    1 row, 1.3-2.3x at 2-8 (a weight hot in the caches favours torch's GEMV at 1 row: 0.6-0.8x).
    ``out``: written in place (any row / group strides) and returned."""
    if x.shape[-2 if weight.dim() == 3 else 0] <= _LINEAR_KERNEL_MAX_ROWS and x.dtype in _LINEAR_KERNEL_DTYPES \
            and x.device.type == "cpu":
        return ops.linear(x, weight, out=out)
    res = F.linear(x, weight) if weight.dim() == 2 else torch.bmm(x, weight.transpose(1, 2))
    return res if out is None else out.copy_(res)


class RMSNorm(nn.Module):
    """transformers' LongcatFlashRMSNorm (fp32 statistics, rounded, times weight) on ``ops.rms_norm``."""

    def __init__(self, size: int, eps: float, dtype=None, device=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size, dtype=dtype, device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.rms_norm(x, self.weight, self.eps)


class MLP(_WithDerived):
    """Dense SwiGLU MLP: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, hidden: int, inner: int, dtype=None, device=None):
        super().__init__()
        kw = dict(bias=False, dtype=dtype, device=device)
        self.gate_proj = nn.Linear(hidden, inner, **kw)
        self.up_proj = nn.Linear(hidden, inner, **kw)
        self.down_proj = nn.Linear(inner, hidden, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

    def forward_paged(self, x: torch.Tensor) -> torch.Tensor:
        """Inference: gate and up as one GEMM over a fused copy of their weights (``_linear``:
        longcat's streaming kernel for a few rows). Measured against running the whole MLP as
        longcat's grouped SwiGLU kernel with one group: 1.05-1.8x faster at 1-8 rows (process
        CPU time, the ``small`` preset's 512 x 1024 MLP, 1 thread)."""
        w = _derived(self, (self.gate_proj.weight, self.up_proj.weight, self.down_proj.weight),
                     lambda: {"w13": torch.cat([self.gate_proj.weight, self.up_proj.weight], 0),
                              "down": self.down_proj.weight.detach()})
        gate_up = _linear(x, w["w13"])
        inner = gate_up.shape[-1] // 2
        return _linear(F.silu(gate_up[..., :inner]).mul_(gate_up[..., inner:]), w["down"])


def _check_batch(batch: PagedBatch) -> None:
    """Shape checks that need no host read of device data."""
    T, B = batch.input_ids.shape[0], batch.seq_lens.shape[0]
    if batch.input_ids.dim() != 1 or batch.positions.shape != batch.input_ids.shape:
        raise ValueError(f"forward_paged: 'input_ids' and 'positions' must be 1-D of one length, got "
                         f"{list(batch.input_ids.shape)} and {list(batch.positions.shape)}")
    if batch.cu_seqlens_q.shape != (B + 1,) or batch.block_table.dim() != 2 or batch.block_table.shape[0] != B:
        raise ValueError(f"forward_paged: 'cu_seqlens_q' must be [B + 1] and 'block_table' [B, max_pages] for "
                         f"B = len(seq_lens) = {B}, got {list(batch.cu_seqlens_q.shape)} and "
                         f"{list(batch.block_table.shape)}")
    for name in ("cu_seqlens_q", "seq_lens", "block_table"):
        if getattr(batch, name).dtype != torch.int32:
            raise TypeError(f"forward_paged: '{name}' must be int32, got {getattr(batch, name).dtype}")
    if batch.max_q_len <= 1 and T != B:
        raise ValueError(f"forward_paged: 'max_q_len' is {batch.max_q_len} but the batch has {T} new tokens for "
                         f"{B} sequences")


class _StepPlan:
    """What one ``forward_paged`` step shares across all layers: token/sequence bookkeeping, the
    decode split plans and the prefill cu_seqlens, computed once."""

    def __init__(self, model: "LongcatFlashForCausalLM", batch: PagedBatch):
        device = batch.input_ids.device
        self.positions = batch.positions
        self.positions32 = batch.positions.to(torch.int32)
        self.block_table = batch.block_table
        B = batch.seq_lens.shape[0]
        T = batch.input_ids.shape[0]
        self.window = model._ssa_window_kwargs
        self.has_ssa = model._has_ssa
        # A decode-only step of a few bf16 / float32 rows on CPU runs each attention sublayer as
        # one ops.mla_decode_layer call (where _linear would run longcat's linear kernel: the same
        # kernels as the op-by-op path, bit for bit); its workspace is allocated by the first
        # sublayer and reused by the others. workers: what mla_decode_metadata plans for.
        self.fused_decode = False
        self.workspace = None
        self.workers = _C.num_threads()
        if batch.max_q_len <= 1:  # decode-only step: one token per sequence, nothing to split
            self.fused_decode = (T <= _LINEAR_KERNEL_MAX_ROWS and model.dtype in _LINEAR_KERNEL_DTYPES
                                 and device.type == "cpu" and not torch.compiler.is_compiling())
            self.seq_ids = torch.arange(B, dtype=torch.int32, device=device)
            self._plan_decode(batch.block_table, batch.seq_lens, None)
            self.prefill = None
            return
        cu = batch.cu_seqlens_q.tolist()           # one host read per step (not per layer)
        q_lens = [cu[i + 1] - cu[i] for i in range(B)]
        k_lens = batch.seq_lens.tolist()
        self.seq_ids = torch.repeat_interleave(torch.arange(B, dtype=torch.int32, device=device),
                                               torch.tensor(q_lens, device=device), output_size=T)
        dec = [b for b in range(B) if q_lens[b] == 1]
        pre = [b for b in range(B) if q_lens[b] > 1]
        if dec:
            rows = torch.tensor([cu[b] for b in dec], dtype=torch.long, device=device)
            seqs = torch.tensor(dec, dtype=torch.long, device=device)
            self._plan_decode(batch.block_table[seqs], batch.seq_lens[seqs], rows)
        else:
            self.decode = None
        pq = [q_lens[b] for b in pre]
        pk = [k_lens[b] for b in pre]
        rows = torch.cat([torch.arange(cu[b], cu[b + 1], device=device) for b in pre])
        seqs = torch.tensor(pre, dtype=torch.long, device=device)
        cu_q = torch.tensor([0] + pq, dtype=torch.int32, device=device).cumsum(0, dtype=torch.int32)
        cu_k = torch.tensor([0] + pk, dtype=torch.int32, device=device).cumsum(0, dtype=torch.int32)
        # Without a cached prefix the keys are exactly the new tokens: no gather from the cache.
        gather = any(k != q for q, k in zip(pq, pk))
        self.prefill = dict(rows=None if (len(pre) == B) else rows, cu_q=cu_q, cu_k=cu_k, max_q=max(pq),
                            max_k=max(pk), gather=gather, block_table=batch.block_table[seqs],
                            seq_lens=batch.seq_lens[seqs])

    def _plan_decode(self, block_table, seq_lens, rows):
        md = ops.mla_decode_metadata(seq_lens, 1)
        md_ssa = ops.mla_decode_metadata(seq_lens, 1, **self.window) if self.has_ssa else None
        self.decode = dict(rows=rows, block_table=block_table, seq_lens=seq_lens, md=md, md_ssa=md_ssa)


class MLA(_WithDerived):
    """Multi-head latent attention with LongCat's LoRA scalings (one attention sublayer).

    ``sublayer`` is the global attention-sublayer index (``2 * layer + i``, transformers'
    ``layer_idx``), which the Zig-Zag ``layer_type`` indexes; ``window`` the SSA window (keyword
    arguments of ``ssa_prefill`` / ``ssa_decode``) or None for full attention."""

    def __init__(self, config: LongcatFlashConfig, sublayer: int, window: dict | None, dtype=None, device=None):
        super().__init__()
        c = config
        self.sublayer = sublayer
        self.window = window
        self.num_heads = c.num_attention_heads
        self.nope, self.rope, self.v_dim = c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim
        self.qk_dim = c.qk_head_dim
        self.q_scale, self.kv_scale = c.q_lora_scale, c.kv_lora_scale
        self.softmax_scale = c.softmax_scale
        inv_freq, self.rope_factor = c.rope_parameters()
        self._inv_freq = {torch.device("cpu"): torch.tensor(inv_freq, dtype=torch.float32)}  # per device
        kw = dict(bias=False, dtype=dtype, device=device)
        self.q_a_proj = nn.Linear(c.hidden_size, c.q_lora_rank, **kw)
        self.q_a_layernorm = RMSNorm(c.q_lora_rank, _LATENT_NORM_EPS, dtype, device)
        self.q_b_proj = nn.Linear(c.q_lora_rank, self.num_heads * self.qk_dim, **kw)
        self.kv_a_proj_with_mqa = nn.Linear(c.hidden_size, c.kv_lora_rank + c.qk_rope_head_dim, **kw)
        self.kv_a_layernorm = RMSNorm(c.kv_lora_rank, _LATENT_NORM_EPS, dtype, device)
        self.kv_b_proj = nn.Linear(c.kv_lora_rank, self.num_heads * (self.nope + self.v_dim), **kw)
        self.o_proj = nn.Linear(self.num_heads * self.v_dim, c.hidden_size, **kw)
        self.visibility = window["window"] if window is not None else None   # an SsaWindow

    def rotate(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Interleaved RoPE in transformers' layout; YaRN's attention factor scales the result."""
        inv_freq = self._inv_freq.get(x.device)
        if inv_freq is None:
            inv_freq = self._inv_freq[x.device] = self._inv_freq[torch.device("cpu")].to(x.device)
        out = ops.rope_interleaved(x, positions, inv_freq=inv_freq)
        return out if self.rope_factor == 1.0 else out * self.rope_factor

    # ---- inference weights (derived copies, see _derived) --------------------------------------

    def inference_weights(self) -> dict:
        srcs = (self.q_a_proj.weight, self.kv_a_proj_with_mqa.weight, self.q_b_proj.weight, self.kv_b_proj.weight,
                self.kv_a_layernorm.weight, self.q_a_layernorm.weight, self.o_proj.weight)
        return _derived(self, srcs, self._compute_inference_weights)

    def _compute_inference_weights(self) -> dict:
        nh, nope = self.num_heads, self.nope
        kv_b = self.kv_b_proj.weight.view(nh, nope + self.v_dim, CACHE_LATENT_DIM)

        def scaled(w, s):  # a LoRA scale folded into a copy, rounded once
            return w.detach() if s == 1.0 else (w.float() * s).to(w.dtype)

        w = {
            # q_a and kv_a read the same input: one GEMM.
            "w_a": torch.cat([self.q_a_proj.weight, self.kv_a_proj_with_mqa.weight], 0).contiguous(),
            "a_sizes": (self.q_a_proj.weight.shape[0], CACHE_LATENT_DIM, self.rope),  # its output's parts
            "w_qb": scaled(self.q_b_proj.weight, self.q_scale),
            "kv_norm_w": scaled(self.kv_a_layernorm.weight, self.kv_scale),
            # Per-head absorption matrices as [nh, N, K] (a linear layer per head, see _linear):
            "w_uk_t": kv_b[:, :nope].transpose(1, 2).contiguous(),  # [nh, 512, nope]: q_nope -> latent
            "w_uv": kv_b[:, nope:].contiguous(),                    # [nh, v, 512]: latent out -> v
            # Parameters used as they are, detached once here rather than at each kernel call.
            "q_a_norm_w": self.q_a_layernorm.weight.detach(),
            "w_o": self.o_proj.weight.detach(),
        }
        # The same weights checked and converted once for ops.mla_decode_layer (decode steps of a
        # few bf16 / float32 rows on CPU, see _StepPlan.fused_decode); None where that op is
        # never used.
        w["layer"] = None
        if w["w_a"].device.type == "cpu" and w["w_a"].dtype in _LINEAR_KERNEL_DTYPES and self.rope_factor == 1.0:
            w["layer"] = ops.mla_layer_weights(w["w_a"], w["q_a_norm_w"], w["w_qb"], w["kv_norm_w"], w["w_uk_t"],
                                               w["w_uv"], w["w_o"], self._inv_freq[torch.device("cpu")],
                                               _LATENT_NORM_EPS)
        return w

    # ---- training forward --------------------------------------------------------------------

    def forward(self, x: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x ``[B, S, H]``, positions ``[S]`` or ``[B, S]`` int64, mask: None (causal) or bool
        ``[B, 1, S, S]`` (True = visible). Differentiable."""
        B, S, _ = x.shape
        nh = self.num_heads
        q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x))).view(B, S, nh, self.qk_dim) * self.q_scale
        kv = self.kv_a_proj_with_mqa(x)
        latent = self.kv_a_layernorm(kv[..., :CACHE_LATENT_DIM]) * self.kv_scale
        pos = positions.expand(B, S).reshape(-1)
        q_rot = self.rotate(q[..., self.nope:].reshape(B * S, nh, self.rope), pos)
        k_rot = self.rotate(kv[..., CACHE_LATENT_DIM:].reshape(B * S, self.rope), pos)
        q_rot, k_rot = q_rot.view(B, S, nh, self.rope), k_rot.view(B, S, 1, self.rope)
        kvb = self.kv_b_proj(latent).view(B, S, nh, self.nope + self.v_dim)
        k = torch.cat([kvb[..., :self.nope], k_rot.expand(B, S, nh, self.rope)], -1)
        q = torch.cat([q[..., :self.nope], q_rot], -1)
        v = kvb[..., self.nope:]
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        if mask is None and self.visibility is None:
            if x.device.type == "cpu" and self.v_dim < self.qk_dim:
                # torch's CPU flash kernel wants v as wide as q and k; otherwise SDPA falls back
                # to its math path (an [S, S] score matrix): zero columns, cut off after.
                # Measured fwd + bwd, 2 heads, 900 tokens, one thread: 21 ms instead of 32 (bf16).
                v = F.pad(v, (0, self.qk_dim - self.v_dim))
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.softmax_scale)[..., :self.v_dim]
        else:
            if self.visibility is not None:
                ar = torch.arange(S, device=x.device)
                vis = ops.reference.attention_visible(ar, ar, True, self.visibility)
                mask = vis[None, None] if mask is None else mask & vis[None, None]
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.softmax_scale)
        return self.o_proj(o.transpose(1, 2).reshape(B, S, nh * self.v_dim))

    # ---- paged inference ----------------------------------------------------------------------

    def forward_paged(self, x: torch.Tensor, cache: torch.Tensor, plan: _StepPlan) -> torch.Tensor:
        """x ``[T, H]`` (the step's new tokens); appends their latents to ``cache`` and returns
        the attention output ``[T, H]``."""
        w = self.inference_weights()
        if plan.fused_decode and w["layer"] is not None:
            return self._decode_layer(x, cache, plan, w["layer"])
        T = x.shape[0]
        nh, nope, rope = self.num_heads, self.nope, self.rope
        qa_kv = _linear(x, w["w_a"])
        q_a, kv_latent, kv_rope = qa_kv.split(w["a_sizes"], 1)
        q = _linear(ops.rms_norm(q_a, w["q_a_norm_w"], _LATENT_NORM_EPS), w["w_qb"])
        q = q.view(T, nh, self.qk_dim)
        latent = ops.rms_norm(kv_latent, w["kv_norm_w"], _LATENT_NORM_EPS)
        k_rot = self.rotate(kv_rope, plan.positions)
        q_nope, q_pe = q.split((nope, rope), -1)
        q_rot = self.rotate(q_pe, plan.positions)
        ops.mla_append_kv(latent, k_rot, cache, plan.block_table, plan.positions32, plan.seq_ids)

        if plan.prefill is None:                        # decode only: every row is a decode row
            o = self._decode(q_nope, q_rot, cache, plan.decode, w)
        elif plan.prefill["rows"] is None:              # prefill only: every row is a prefill row
            o = self._prefill(q_nope, q_rot, latent, k_rot, cache, plan.prefill)
        else:                                           # mixed: each kind on its rows
            o = x.new_empty(T, nh, self.v_dim)
            r = plan.prefill["rows"]
            o[r] = self._prefill(q[r, :, :nope], q_rot[r], latent[r], k_rot[r], cache, plan.prefill)
            d = plan.decode["rows"]
            o[d] = self._decode(q[d, :, :nope], q_rot[d], cache, plan.decode, w)
        return _linear(o.reshape(T, nh * self.v_dim), w["w_o"])

    def _decode_layer(self, x, cache, plan, layer_weights):
        """A decode-only step of a few bf16 / float32 rows on CPU: the whole sublayer (the
        composition in forward_paged and _decode, the same kernels in the same order) in one call,
        its intermediates in the step's workspace, shared by every sublayer."""
        d = plan.decode
        if plan.workspace is None:
            plan.workspace = torch.empty(layer_weights.workspace_size(x.shape[0], plan.workers), dtype=torch.uint8)
        return ops.mla_decode_layer(x, layer_weights, cache, d["block_table"], d["seq_lens"], plan.positions32,
                                    plan.seq_ids, self.softmax_scale, d["md_ssa"] if self.window else d["md"],
                                    plan.workspace, self.window["window"] if self.window else None)

    def _decode(self, q_nope, q_rot, cache, d, w):
        """Absorbed MLA: q_nope is projected into the latent space with kv_b's key half, so the
        kernel reads the 576-wide cache directly; its 512-wide output goes back through kv_b's
        value half."""
        b = q_nope.shape[0]
        nh = self.num_heads
        # The absorbed query [b, 1, nh, 576] is assembled in place: the per-head projection
        # writes its first 512 values of every head (a strided out), RoPE's 64 follow.
        q_full = q_nope.new_empty(b, 1, nh, _CACHE_DIM)
        q_heads = q_full[:, 0]
        q_heads[..., CACHE_LATENT_DIM:] = q_rot
        _linear(q_nope.transpose(0, 1), w["w_uk_t"], out=q_heads[..., :CACHE_LATENT_DIM].transpose(0, 1))
        if self.window is None:
            out, _ = ops.mla_decode(q_full, cache, d["block_table"], d["seq_lens"],
                                    softmax_scale=self.softmax_scale, metadata=d["md"])
        else:
            out, _ = ops.ssa_decode(q_full, cache, d["block_table"], d["seq_lens"], softmax_scale=self.softmax_scale,
                                    metadata=d["md_ssa"], **self.window)
        # kv_b's value half per head, written as [b, nh, v] so o_proj reads it without a copy.
        o = out.new_empty(b, nh, self.v_dim)
        _linear(out.view(b, nh, CACHE_LATENT_DIM).transpose(0, 1), w["w_uv"], out=o.transpose(0, 1))
        return o

    def _prefill(self, q_nope, q_rot, latent, k_rot, cache, p):
        """Non-absorbed MLA over packed prefill chunks: the keys' latents (the new ones, or the
        whole sequence from the cache when a prefix is cached) are up-projected with kv_b."""
        nh, nope = self.num_heads, self.nope
        if p["gather"]:
            kv, _ = ops.mla_gather(cache, p["block_table"], p["seq_lens"])
            latent, k_rot = kv[:, :CACHE_LATENT_DIM], kv[:, CACHE_LATENT_DIM:]
        Tk = latent.shape[0]
        kvb = self.kv_b_proj(latent).view(Tk, nh, nope + self.v_dim)
        k = kvb.new_empty(Tk, nh, self.qk_dim)
        k[..., :nope] = kvb[..., :nope]
        k[..., nope:] = k_rot[:, None, :]
        q = torch.cat([q_nope, q_rot], -1)
        args = (q, k, kvb[..., nope:], p["cu_q"], p["cu_k"], p["max_q"], p["max_k"], self.softmax_scale)
        if self.window is None:
            out, _ = ops.mla_prefill(*args, causal=True)
        else:
            out, _ = ops.ssa_prefill(*args, causal=True, **self.window)
        return out


class DecoderLayer(nn.Module):
    """LongCat-Flash's shortcut-connected MoE (ScMoE) layer, as transformers'
    ``LongcatFlashDecoderLayer``::

        h = x + MLA_0(in_ln0(x)); n = post_ln0(h)
        moe = MoE(n)                                   # starts after the first attention
        h = h + MLP_0(n)
        h = h + MLA_1(in_ln1(h))
        out = h + MLP_1(post_ln1(h)) + moe             # joins at the very end
    """

    def __init__(self, config: LongcatFlashConfig, layer: int, windows: Sequence[dict | None], dtype=None,
                 device=None):
        super().__init__()
        c = config
        self.self_attn = nn.ModuleList([MLA(c, 2 * layer + i, windows[2 * layer + i], dtype, device) for i in (0, 1)])
        self.mlps = nn.ModuleList([MLP(c.hidden_size, c.ffn_hidden_size, dtype, device) for _ in (0, 1)])
        self.input_layernorm = nn.ModuleList([RMSNorm(c.hidden_size, c.rms_norm_eps, dtype, device) for _ in (0, 1)])
        self.post_attention_layernorm = nn.ModuleList(
            [RMSNorm(c.hidden_size, c.rms_norm_eps, dtype, device) for _ in (0, 1)])
        self.mlp = MoE(MoEConfig.from_hf(c), dtype=dtype or torch.float32, device=device)

    def forward(self, x, attn):
        """``attn(i, normed)`` runs attention sublayer i (the training or the paged form)."""
        h = x + attn(0, self.input_layernorm[0](x))
        n = self.post_attention_layernorm[0](h)
        moe = self.mlp(n)
        h = h + self.mlps[0](n)
        h = h + attn(1, self.input_layernorm[1](h))
        return h + self.mlps[1](self.post_attention_layernorm[1](h)) + moe


class LongcatFlashModel(nn.Module):
    """Embedding, decoder layers, final norm (transformers' ``model.*`` names)."""

    def __init__(self, config: LongcatFlashConfig, dtype=None, device=None):
        super().__init__()
        c = config
        zz = c.zigzag
        windows = [zz.window_kwargs() if zz is not None and zz.is_ssa(i) else None for i in range(c.num_hidden_layers)]
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size, c.pad_token_id, dtype=dtype, device=device)
        self.layers = nn.ModuleList([DecoderLayer(c, i, windows, dtype, device) for i in range(c.num_layers)])
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps, dtype, device)


class LongcatFlashForCausalLM(nn.Module):
    """LongCat-Flash causal LM. ``model(input_ids, attention_mask=None, labels=None)`` is the
    differentiable training forward (logits, or the mean next-token loss when labels are given);
    ``make_kv_caches`` / ``forward_paged`` are the engine's paged inference path (``PagedModel``).

    Parameters carry transformers' names, except the MoE's (``mlp.router_weight``,
    ``mlp.e_score_correction_bias``, ``mlp.w13``, ``mlp.w2``, see ``longcat.nn.MoE``);
    ``from_pretrained`` / ``save_pretrained`` / ``load_weights`` translate. Works in float32 and
    bfloat16 (the router weight stays float32, as in transformers)."""

    def __init__(self, config: LongcatFlashConfig, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None):
        super().__init__()
        if not isinstance(config, LongcatFlashConfig):
            raise TypeError(f"LongcatFlashForCausalLM: 'config' must be a LongcatFlashConfig, got {type(config).__name__}")
        dtype = dtype or torch.float32
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"LongcatFlashForCausalLM: 'dtype' must be float32, bfloat16 or float16, got {dtype}")
        self.config = config
        self.model = LongcatFlashModel(config, dtype, device)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False, dtype=dtype, device=device)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        zz = config.zigzag
        self._has_ssa = zz is not None and bool(zz.ssa_layers)
        self._ssa_window_kwargs = zz.window_kwargs() if self._has_ssa else {}
        if torch.device(device or "cpu").type != "meta":
            self.reset_parameters()

    # ---- basics -------------------------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def attention_sublayers(self) -> list[MLA]:
        return [attn for layer in self.model.layers for attn in layer.self_attn]

    @torch.no_grad()
    def reset_parameters(self, std: float | None = None) -> None:
        """The config's ``init_scheme``: "normal" is transformers' init (linear / embedding /
        expert / router weights ~ N(0, initializer_range)); "fan_in" keeps that for the embedding
        and the router and draws every other matrix from N(0, 1 / (3 * fan_in)). Norms 1,
        correction bias 0. ``std`` given: every matrix ~ N(0, std) whatever the scheme."""
        fan_in = std is None and self.config.init_scheme == "fan_in"
        std = self.config.initializer_range if std is None else std
        for m in self.modules():
            if isinstance(m, nn.Embedding):
                m.weight.normal_(0.0, std)
                if m.padding_idx is not None:
                    m.weight[m.padding_idx].zero_()
            elif isinstance(m, nn.Linear):
                if m.weight is not self.model.embed_tokens.weight:  # a tied lm_head is the embedding
                    m.weight.normal_(0.0, (3 * m.in_features) ** -0.5 if fan_in else std)
            elif isinstance(m, RMSNorm):
                m.weight.fill_(1.0)
            elif isinstance(m, MoE):
                m.reset_parameters(std)
                if fan_in:  # w13 [E, 2F, H] reads H, w2 [E, H, F] reads F
                    m.w13.normal_(0.0, (3 * m.w13.shape[-1]) ** -0.5)
                    m.w2.normal_(0.0, (3 * m.w2.shape[-1]) ** -0.5)
                m.e_score_correction_bias.zero_()

    def _apply(self, fn, recurse=True):
        # .to(bfloat16) must not round the router: transformers keeps classifier.weight in fp32.
        self.__dict__.pop("_paged_layers_cache", None)  # parameters may become new tensors
        super()._apply(fn, recurse)
        if self.config.tie_word_embeddings:  # to_empty() and device moves can make new Parameters
            self.lm_head.weight = self.model.embed_tokens.weight
        for layer in self.model.layers:
            r = layer.mlp.router_weight
            if r.dtype != torch.float32 and r.device.type != "meta":
                r.data = r.data.float()
            b = layer.mlp.e_score_correction_bias
            if b.dtype != torch.float32:
                layer.mlp.e_score_correction_bias = b.float()
        return self

    def refresh_inference_weights(self) -> None:
        """Recompute the derived inference weights (absorbed MLA matrices, fused projections,
        LoRA scales folded into copies) from the current parameters. ``forward_paged`` also
        notices parameter updates by itself (new tensors or in-place changes); calling this is
        never wrong and idempotent."""
        self.__dict__.pop("_paged_layers_cache", None)
        for layer in self.model.layers:
            for attn in layer.self_attn:
                _forget_derived(attn)
                attn.inference_weights()
            for mlp in layer.mlps:
                _forget_derived(mlp)

    # ---- training forward -----------------------------------------------------------------------

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids ``[B, S]`` int64; attention_mask ``[B, S]`` (1 = token, 0 = padding; padded
        keys are hidden from every query); labels ``[B, S]`` (-100 = ignored): the loss is the mean
        cross entropy of predicting ``labels[:, t + 1]`` from position t, as transformers.
        position_ids default to ``0 .. S-1``. Returns logits ``[B, S, vocab]`` in the model dtype,
        or the float32 scalar loss when labels are given."""
        if input_ids.dim() != 2:
            raise ValueError(f"LongcatFlashForCausalLM.forward: 'input_ids' must be [batch, seq], got shape "
                             f"{list(input_ids.shape)}")
        B, S = input_ids.shape
        positions = torch.arange(S, device=input_ids.device) if position_ids is None else position_ids
        mask = None
        if attention_mask is not None:
            if attention_mask.shape != input_ids.shape:
                raise ValueError(f"LongcatFlashForCausalLM.forward: 'attention_mask' must have input_ids' shape "
                                 f"{list(input_ids.shape)}, got {list(attention_mask.shape)}")
            keys = attention_mask.bool()[:, None, None, :]
            causal = torch.ones(S, S, dtype=torch.bool, device=input_ids.device).tril()
            # A padded query would see no key at all (NaN); let it see itself, its output is unused.
            mask = (causal & keys) | torch.eye(S, dtype=torch.bool, device=input_ids.device)
        h = self.model.embed_tokens(input_ids)
        for layer in self.model.layers:
            h = layer(h, lambda i, x, layer=layer: layer.self_attn[i](x, positions, mask))
        logits = self.lm_head(self.model.norm(h))
        if labels is None:
            return logits
        shift = labels[:, 1:].reshape(-1)
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), shift, ignore_index=-100)

    def final_hidden(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The final hidden states ``[B, S, hidden]`` of a causal pass (after the last norm: what
        ``lm_head`` reads), for heads on top of the model such as ``CopyHead``."""
        if input_ids.dim() != 2:
            raise ValueError(f"LongcatFlashForCausalLM.final_hidden: 'input_ids' must be [batch, seq], got shape "
                             f"{list(input_ids.shape)}")
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        h = self.model.embed_tokens(input_ids)
        for layer in self.model.layers:
            h = layer(h, lambda i, x, layer=layer: layer.self_attn[i](x, positions, None))
        return self.model.norm(h)

    # ---- paged inference (the PagedModel contract) ---------------------------------------------

    def make_kv_caches(self, num_pages: int, page_size: int = 64, dtype: torch.dtype | None = None,
                       device: torch.device | str | None = None) -> list[torch.Tensor]:
        """One zeroed latent cache ``[num_pages, page_size, 1, 576]`` per attention sublayer
        (``2 * num_layers``), in the model's dtype and device unless given."""
        for name, v in (("num_pages", num_pages), ("page_size", page_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"make_kv_caches: '{name}' must be an int >= 1, got {v!r}")
        dtype = dtype or self.dtype
        device = device or self.device
        if torch.device(device).type == "cpu":  # on huge pages: scattered page reads and swaps miss the TLB less
            return [ops.zeros_on_huge_pages((num_pages, page_size, 1, _CACHE_DIM), dtype)
                    for _ in range(self.config.num_hidden_layers)]
        return [torch.zeros(num_pages, page_size, 1, _CACHE_DIM, dtype=dtype, device=device)
                for _ in range(self.config.num_hidden_layers)]

    @torch.inference_mode()
    def forward_paged(self, batch: PagedBatch, kv_caches: Sequence[torch.Tensor]) -> torch.Tensor:
        """Append the batch's latents to ``kv_caches`` and return float32 logits
        ``[len(logits_indices), vocab]`` (see ``PagedModel``). The caches must be in the model's
        dtype. Host reads: none of its own for a decode-only step (``max_q_len == 1``); one read
        of ``cu_seqlens_q`` / ``seq_lens`` per step otherwise, plus, per sublayer, the lengths
        ``mla_gather`` reads when a prefill chunk has a cached prefix, and the MoE's dispatch
        sizes (a data-dependent shape) per layer."""
        if len(kv_caches) != self.config.num_hidden_layers:
            raise ValueError(f"forward_paged: 'kv_caches' must hold one cache per attention sublayer "
                             f"({self.config.num_hidden_layers}), got {len(kv_caches)}")
        if kv_caches[0].dtype != self.dtype:
            raise ValueError(f"forward_paged: the caches must have the model's dtype {self.dtype}, got "
                             f"{kv_caches[0].dtype}")
        _check_batch(batch)
        if batch.input_ids.shape[0] == 0:
            return torch.empty(0, self.config.vocab_size, dtype=torch.float32, device=self.device)
        plan = _StepPlan(self, batch)
        # DecoderLayer's dataflow with each residual add fused into the norm that follows it; the
        # MoE output joins the residual stream in the next layer's first norm (same sums, same
        # roundings as transformers: a + b is commutative).
        eps = self.config.rms_norm_eps
        add_norm = ops.fused_add_rms_norm
        first_norm, layers, lm_head = self._paged_layers()
        h = self.model.embed_tokens(batch.input_ids)
        x = ops.rms_norm(h, first_norm, eps)
        for li, (attn0, attn1, mlp0, mlp1, moe_layer, post0, in1, post1, nxt) in enumerate(layers):
            n, h = add_norm(attn0.forward_paged(x, kv_caches[2 * li], plan), h, post0, eps)
            moe = moe_layer(n)
            x, h = add_norm(mlp0.forward_paged(n), h, in1, eps)
            n, h = add_norm(attn1.forward_paged(x, kv_caches[2 * li + 1], plan), h, post1, eps)
            h = h + mlp1.forward_paged(n)
            x, h = add_norm(moe, h, nxt, eps)
        x = x.index_select(0, batch.logits_indices)        # x: the final norm of h
        return _linear(x, lm_head).float()

    def _paged_layers(self) -> tuple:
        """What ``forward_paged`` walks each step, gathered once: per layer its sublayer modules
        and its norm weights detached (the next layer's first norm, or the final norm, last),
        so a step looks up no module attribute and detaches nothing per call. The detached
        tensors share their parameters' memory (in-place updates show through); a parameter
        given new memory (``.data =``, a dtype or device move) is noticed by its data pointer,
        and ``refresh_inference_weights`` / ``_apply`` drop the cache (after replacing a whole
        submodule, call ``refresh_inference_weights``)."""
        cached = self.__dict__.get("_paged_layers_cache")
        if cached is not None and cached[1] == tuple((p.data_ptr(), p.dtype) for p in cached[0]):
            return cached[2]
        layers = self.model.layers
        first = layers[0].input_layernorm[0].weight
        per_layer, sources = [], [first, self.model.norm.weight, self.lm_head.weight]
        for li, layer in enumerate(layers):
            nxt = layers[li + 1].input_layernorm[0].weight if li + 1 < len(layers) else self.model.norm.weight
            norms = (layer.post_attention_layernorm[0].weight, layer.input_layernorm[1].weight,
                     layer.post_attention_layernorm[1].weight, nxt)
            sources += norms
            per_layer.append((layer.self_attn[0], layer.self_attn[1], layer.mlps[0], layer.mlps[1], layer.mlp,
                              *(w.detach() for w in norms)))
        result = (first.detach(), per_layer, self.lm_head.weight.detach())
        self.__dict__["_paged_layers_cache"] = (sources, tuple((p.data_ptr(), p.dtype) for p in sources), result)
        return result

    # ---- weights ------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path, dtype: torch.dtype | None = None, device: torch.device | str | None = None):
        """Load a Hugging Face layout checkpoint (see ``longcat.models.weights``)."""
        from longcat.models.weights import load_pretrained

        return load_pretrained(cls, path, dtype=dtype, device=device)

    def save_pretrained(self, path, max_shard_size: int | str = "5GB", zero_expert_slots: bool | str = False) -> None:
        """Write ``config.json`` and safetensors in Hugging Face's layout (see
        ``longcat.models.weights.save_pretrained``; ``zero_expert_slots="auto"`` for a folder
        the installed transformers loads)."""
        from longcat.models.weights import save_pretrained

        save_pretrained(self, path, max_shard_size=max_shard_size, zero_expert_slots=zero_expert_slots)

    def load_weights(self, weights: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]],
                     strict: bool = True) -> None:
        """In-memory update from tensors named as transformers / the original checkpoints name
        them (or as this module's ``state_dict``), e.g. the engine's ``update_weights``. Copies in
        place (the caches' and optimizers' references stay valid) and refreshes the inference
        weights. ``strict``: every parameter must be given."""
        from longcat.models.weights import load_weights

        load_weights(self, weights, strict=strict)

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """The parameters under transformers' names (per-expert expert weights, as checkpoints)."""
        from longcat.models.weights import hf_state_dict

        return hf_state_dict(self)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.refresh_inference_weights()
        return result

    def num_parameters(self) -> int:
        seen, n = set(), 0
        for p in self.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                n += p.numel()
        return n + sum(layer.mlp.e_score_correction_bias.numel() for layer in self.model.layers)
