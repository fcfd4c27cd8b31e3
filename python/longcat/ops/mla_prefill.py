"""Varlen prefill attention: ``mla_prefill`` (full causal or non-causal MLA attention) and
``ssa_prefill`` (streaming sparse attention: sink + local window, the Zig-Zag SSA layers).
Semantics: ``reference.mla_prefill``; the C++ contract is ``csrc/include/longcat/mla.h``.

Layout as FlashAttention's varlen API: the sequences of a batch are packed along the token dim,
``cu_seqlens_q`` / ``cu_seqlens_k`` (int32, ``[batch + 1]``) hold their prefix sums. Causal
attention is bottom-right aligned, so a chunk of ``len_q`` new tokens attends to a prefix of
``len_k - len_q`` earlier keys (chunked prefill).

Forward only: the ops have no autograd formula (prefill in this package serves inference and
rollouts; training would need a backward kernel).
"""
from __future__ import annotations

import torch

from longcat import _C
from longcat.ops._common import (SsaWindow, check_tensors, check_window, eager_fast_path, int_arg, stream_of, view,
                                 window_from_op, window_to_op)

__all__ = ["mla_prefill", "ssa_prefill", "ssa_block_mask"]


def _outputs(q: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    total_q, h = q.shape[0], q.shape[1]
    return (torch.empty(total_q, h, v.shape[2], dtype=q.dtype, device=q.device),
            torch.empty(h, total_q, dtype=torch.float32, device=q.device))


@torch.library.custom_op("longcat::mla_prefill", mutates_args=())
def _mla_prefill(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                 cu_seqlens_k: torch.Tensor, max_seqlen_q: int, max_seqlen_k: int,
                 softmax_scale: float, causal: bool, window: list[int] | None) -> tuple[torch.Tensor, torch.Tensor]:
    out, lse = _outputs(q, v)
    _C.mla_prefill(out, lse, view(q), view(k), view(v), cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                   max_seqlen_k, softmax_scale, causal, window_from_op(window), stream_of(q))
    return out, lse


@_mla_prefill.register_fake
def _(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale, causal, window):
    return _outputs(q, v)


def _run(op, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale, causal, window):
    check_tensors(op, q=q, k=k, v=v, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 3:
            raise ValueError(f"{op}: argument '{name}' must have 3 dimensions [tokens, heads, head_dim], "
                             f"got {t.dim()} (shape {list(t.shape)})")
    int_arg(op, "max_seqlen_q", max_seqlen_q, 0)
    int_arg(op, "max_seqlen_k", max_seqlen_k, 0)
    if not isinstance(causal, bool):
        raise TypeError(f"{op}: argument 'causal' must be a bool, got {type(causal).__name__}")
    if softmax_scale is None:
        softmax_scale = q.shape[-1] ** -0.5
    softmax_scale = float(softmax_scale)
    if eager_fast_path(q, k, v):
        out, lse = _outputs(q, v)
        _C.mla_prefill(out, lse, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                       softmax_scale, causal, window, stream_of(q))
        return out, lse
    return _mla_prefill(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                        softmax_scale, causal, window_to_op(window))


def _prefill_amx_emulated(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale=None,
                          causal=True, window=None):
    """Tests: mla_prefill (ssa_prefill with a window) run by the AMX copy's code with the tile
    instructions emulated in scalar C++ (any CPU, slow)."""
    out, lse = _outputs(q, v)
    scale = q.shape[-1] ** -0.5 if softmax_scale is None else float(softmax_scale)
    _C._mla_prefill_amx_emulated(out, lse, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, scale,
                                 causal, window)
    return out, lse


def mla_prefill(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                cu_seqlens_k: torch.Tensor, max_seqlen_q: int, max_seqlen_k: int,
                softmax_scale: float | None = None,
                causal: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Varlen attention over packed sequences: ``(out [total_q, h, d_v], lse [h, total_q] fp32)``.

    q ``[total_q, h, d_qk]``, k ``[total_k, h_k, d_qk]``, v ``[total_k, h_k, d_v]``: float32 or
    bfloat16 on CPU (bfloat16 / float16 on CUDA), one dtype; last dim contiguous (strided views
    such as ``x[..., :192]`` are fine); ``h % h_k == 0`` (GQA; MLA prefill has ``h_k = h``,
    d_qk = 192, d_v = 128); head dims multiples of 8 up to 576. ``cu_seqlens_q`` /
    ``cu_seqlens_k``: int32 ``[batch + 1]``, starting at 0, non-decreasing, ending at total_q /
    total_k; no sequence longer than ``max_seqlen_q`` / ``max_seqlen_k``.

    ``causal=True``: query i of a sequence (len_q queries, len_k keys) sits at position
    ``i + len_k - len_q`` and sees keys ``0 .. that position`` (bottom-right alignment; a query
    whose position is negative sees nothing). ``causal=False``: every query sees all len_k keys.
    ``softmax_scale`` None means ``d_qk ** -0.5``. lse is the natural log of the softmax
    denominator of the scaled scores; a query that sees no key gets out 0 and lse +inf.
    Forward only (no autograd).
    """
    return _run("mla_prefill", q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                softmax_scale, causal, None)


def ssa_prefill(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                cu_seqlens_k: torch.Tensor, max_seqlen_q: int, max_seqlen_k: int,
                softmax_scale: float | None = None, causal: bool = True, *,
                window: SsaWindow | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Streaming sparse attention prefill (Zig-Zag SSA layers): ``mla_prefill`` where each query
    sees only a sink and a local window. Same tensors, conventions and outputs as ``mla_prefill``.
    ``window``: an ``SsaWindow``; None means ``SsaWindow()`` (the report's 1 sink + 7 local
    blocks of 128).

    Block mode (``SsaWindow(sink, local, block_size)``, as the published ZigZag kernels): a query
    at position p, in block ``qb = p // block_size``, sees key j iff ``j <= p`` and
    ``j // block_size < sink`` or ``j // block_size >= qb - local + 1``: the sink blocks, then
    the ``local`` blocks ending with its own block, causal inside it. So a query sees between
    ``(local - 1) * block_size + 1`` and ``local * block_size`` recent keys, plus the sink.

    Token-exact mode (``SsaWindow(sink, local, tokens=True)``): query p sees key j iff ``j <= p``
    and ``j < sink`` or ``j >= p - local + 1`` (the window holds exactly ``local`` keys, p
    included).

    The cost is O(total_q * (sink + window)): key tiles no query of a tile sees are skipped.
    Requires ``causal=True`` (ValueError otherwise). Forward only (no autograd).
    """
    op = "ssa_prefill"
    if causal is not True:
        raise ValueError(f"{op}: a sparse window requires causal=True, got causal={causal!r}")
    window = SsaWindow() if window is None else check_window(op, window)
    return _run(op, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale,
                causal, window)


def ssa_block_mask(seq_len: int, window: SsaWindow | None = None, *, device: str | torch.device = "cpu",
                   flex_block_size: int = 128):
    """The SSA visibility of ``ssa_prefill`` (one sequence, len_q = len_k = seq_len) as a
    FlexAttention ``BlockMask``, for comparing against ``torch.nn.attention.flex_attention``
    (benchmarks, tests). Needs torch >= 2.5."""
    from torch.nn.attention.flex_attention import create_block_mask

    w = SsaWindow() if window is None else check_window("ssa_block_mask", window)
    sink, local, bs = w.sink, w.local, w.block_size
    if not w.tokens:
        def mask_mod(b, h, q_idx, kv_idx):
            kb, qb = kv_idx // bs, q_idx // bs
            return (kv_idx <= q_idx) & ((kb < sink) | (kb >= qb - local + 1))
    else:
        def mask_mod(b, h, q_idx, kv_idx):
            return (kv_idx <= q_idx) & ((kv_idx < sink) | (kv_idx >= q_idx - local + 1))
    return create_block_mask(mask_mod, None, None, seq_len, seq_len, device=device,
                             BLOCK_SIZE=flex_block_size)
