"""MoE ops with LongCat-Flash's zero-computation experts: ``moe_route`` (the router),
``moe_dispatch`` (group token rows by expert for a grouped GEMM) and ``moe_combine`` (the weighted
inverse). Semantics: ``reference.moe_route`` / ``moe_dispatch`` / ``moe_combine``; the C++ contract
is ``csrc/include/longcat/moe_route.h``.

A MoE layer with E = n_routed + n_zero experts::

    ids, w = moe_route(h, router_weight, bias, top_k, n_routed, n_zero, scale)
    x_perm, counts, offsets, row_token, slot_row = moe_dispatch(h, ids, n_routed, align=...)
    expert_out = grouped_gemm(x_perm, offsets)        # expert e owns rows offsets[e]:offsets[e+1]
    y = moe_combine(expert_out, slot_row, ids, w, h, n_routed)

Zero experts (ids >= n_routed) never reach the dispatch buffer; combine adds ``w * x`` for them.
"""
from __future__ import annotations

from typing import Optional

import torch

from longcat import _C
from longcat.ops._common import check_no_internal_overlap, check_tensors, dl, eager_fast_path, stream_of

_SCORES = ("softmax", "sigmoid")


def _check_route_args(hidden, weight, correction_bias, top_k, n_routed, n_zero, score):
    op = "moe_route"
    tensors = {"hidden": hidden, "weight": weight}
    if correction_bias is not None:
        tensors["correction_bias"] = correction_bias
    check_tensors(op, **tensors)
    if not isinstance(score, str) or score not in _SCORES:
        raise ValueError(f"{op}: argument 'score' must be 'softmax' or 'sigmoid', got {score!r}")
    for name, v in (("top_k", top_k), ("n_routed", n_routed), ("n_zero", n_zero)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{op}: argument '{name}' must be an int, got {type(v).__name__}")
    if n_routed < 0:
        raise ValueError(f"{op}: argument 'n_routed' must be >= 0, got {n_routed}")
    if n_zero < 0:
        raise ValueError(f"{op}: argument 'n_zero' must be >= 0, got {n_zero}")
    E = n_routed + n_zero
    if not 1 <= top_k <= E:
        raise ValueError(f"{op}: argument 'top_k' must be in [1, E] with E = n_routed + n_zero = {E}, "
                         f"got {top_k}")
    if hidden.dim() != 2:
        raise ValueError(f"{op}: argument 'hidden' must have 2 dimensions, got {hidden.dim()} "
                         f"(shape {list(hidden.shape)})")


def _route_outputs(hidden: torch.Tensor, top_k: int):
    T = hidden.shape[0]
    return (torch.empty(T, top_k, dtype=torch.int32, device=hidden.device),
            torch.empty(T, top_k, dtype=torch.float32, device=hidden.device))


def _route_impl(hidden, weight, correction_bias, top_k, n_routed, n_zero, scale, score, renormalize):
    ids, w = _route_outputs(hidden, top_k)
    # DLPack capsules (``dl``): a decode step calls these ops once per layer each.
    _C.moe_route(dl(ids), dl(w), dl(hidden), dl(weight), None if correction_bias is None else dl(correction_bias),
                 n_routed, n_zero, scale, score, renormalize, stream_of(hidden))
    return ids, w


@torch.library.custom_op("longcat::moe_route", mutates_args=())
def _moe_route(hidden: torch.Tensor, weight: torch.Tensor, correction_bias: Optional[torch.Tensor],
               top_k: int, n_routed: int, n_zero: int, routed_scaling_factor: float, score: str,
               renormalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return _route_impl(hidden, weight, correction_bias, top_k, n_routed, n_zero,
                       routed_scaling_factor, score, renormalize)


@_moe_route.register_fake
def _(hidden, weight, correction_bias, top_k, n_routed, n_zero, routed_scaling_factor, score,
      renormalize):
    return _route_outputs(hidden, top_k)


def _route_setup(ctx, inputs, output):
    hidden, weight, _, _, _, _, scale, score, renormalize = inputs
    ctx.save_for_backward(hidden, weight, output[0])
    ctx.scale, ctx.score, ctx.renormalize = scale, score, renormalize


def _route_backward(ctx, grad_ids, grad_weights):
    # weights[t, j] = scale * s(z)[t, ids[t, j]] (/ their sum), z = hidden @ weight^T; ids carry
    # no gradient. Logits are recomputed rather than saved ([T, E] fp32 per layer).
    hidden, weight, ids = ctx.saved_tensors
    if grad_weights is None:
        return None, None, None, None, None, None, None, None, None
    z = torch.nn.functional.linear(hidden.float(), weight.float())
    s = z.softmax(-1) if ctx.score == "softmax" else z.sigmoid()
    ids = ids.long()
    g = grad_weights.float()
    if ctx.renormalize:
        q = s.gather(1, ids)
        den = q.sum(-1, keepdim=True) + 1e-20
        dq = ctx.scale * (g / den - (g * q).sum(-1, keepdim=True) / (den * den))
    else:
        dq = ctx.scale * g
    ds = torch.zeros_like(s).scatter_add_(1, ids, dq)
    if ctx.score == "softmax":
        dz = s * (ds - (ds * s).sum(-1, keepdim=True))
    else:
        dz = ds * s * (1 - s)
    grad_hidden = (dz @ weight.float()).to(hidden.dtype) if ctx.needs_input_grad[0] else None
    grad_weight = (dz.t() @ hidden.float()).to(weight.dtype) if ctx.needs_input_grad[1] else None
    return grad_hidden, grad_weight, None, None, None, None, None, None, None


_moe_route.register_autograd(_route_backward, setup_context=_route_setup)


def moe_route(hidden: torch.Tensor, weight: torch.Tensor, correction_bias: torch.Tensor | None,
              top_k: int, n_routed: int, n_zero: int, routed_scaling_factor: float = 1.0,
              score: str = "softmax", renormalize: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The router: ``(topk_ids [T, top_k] int32, topk_weights [T, top_k] float32)``.

    hidden: ``[T, H]`` float32 or bfloat16 (float16 too on CUDA). weight: ``[E, H]`` float32 with
    ``E = n_routed + n_zero`` (the zero-computation experts have router rows too).
    correction_bias: ``[E]`` float32 or None. Defaults are LongCat-Flash's (transformers'
    LongcatFlashTopkRouter): softmax scores in fp32, top-k on ``scores + correction_bias``,
    weights = the unbiased scores of the chosen experts times ``routed_scaling_factor``, no
    renormalisation. ``score="sigmoid"`` and ``renormalize=True`` give DeepSeek-V3's router.
    Ids come sorted by descending biased score; equal scores go to the lower expert id.
    Differentiable in hidden and weight (through the scores; the choice itself is not).
    """
    _check_route_args(hidden, weight, correction_bias, top_k, n_routed, n_zero, score)
    scale = float(routed_scaling_factor)
    renormalize = bool(renormalize)
    if eager_fast_path(hidden, weight):
        return _route_impl(hidden, weight, correction_bias, top_k, n_routed, n_zero, scale, score,
                           renormalize)
    return _moe_route(hidden, weight, correction_bias, top_k, n_routed, n_zero, scale, score,
                      renormalize)


# ---- dispatch ----------------------------------------------------------------------------------

def _dispatch_impl(x: torch.Tensor, topk_ids: torch.Tensor, n_routed: int, align: int):
    dev = x.device
    counts = torch.empty(n_routed, dtype=torch.int32, device=dev)
    offsets = torch.empty(n_routed + 1, dtype=torch.int32, device=dev)
    stream = stream_of(x)
    _C.moe_dispatch_layout(dl(counts), dl(offsets), dl(topk_ids), n_routed, align, stream)
    # R depends on the ids: read it back (on CUDA a device-to-host copy, i.e. a sync). CUDA
    # kernels cannot raise, so negative ids are checked in the same transfer.
    if dev.type == "cuda" and topk_ids.numel() > 0:
        R, lowest = torch.stack([offsets[-1], topk_ids.min()]).tolist()
        if lowest < 0:
            raise ValueError(f"moe_dispatch: argument 'topk_ids' must hold expert ids >= 0, got {lowest}")
    else:  # numpy on CPU: no torch op per layer of a decode step
        R = int(offsets.numpy()[-1] if dev.type == "cpu" else offsets[-1])
    T, k = topk_ids.shape
    x_perm = torch.empty(R, x.shape[1], dtype=x.dtype, device=dev)
    row_token = torch.empty(R, dtype=torch.int32, device=dev)
    slot_row = torch.empty(T, k, dtype=torch.int32, device=dev)
    _C.moe_dispatch(dl(x_perm), dl(row_token), dl(slot_row), dl(x), dl(topk_ids), dl(counts), dl(offsets), n_routed,
                    stream)
    return x_perm, counts, offsets, row_token, slot_row


@torch.library.custom_op("longcat::moe_dispatch", mutates_args=())
def _moe_dispatch(x: torch.Tensor, topk_ids: torch.Tensor, n_routed: int, align: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return _dispatch_impl(x, topk_ids, n_routed, align)


@_moe_dispatch.register_fake
def _(x, topk_ids, n_routed, align):
    R = torch.library.get_ctx().new_dynamic_size()  # data-dependent: offsets[n_routed]
    T, k = topk_ids.shape
    dev = x.device
    return (x.new_empty(R, x.shape[1]),
            torch.empty(n_routed, dtype=torch.int32, device=dev),
            torch.empty(n_routed + 1, dtype=torch.int32, device=dev),
            torch.empty(R, dtype=torch.int32, device=dev),
            torch.empty(T, k, dtype=torch.int32, device=dev))


def _dispatch_setup(ctx, inputs, output):
    x, topk_ids, n_routed, _ = inputs
    ctx.save_for_backward(topk_ids, output[4])
    ctx.n_routed = n_routed
    ctx.x_shape, ctx.x_dtype = x.shape, x.dtype


def _dispatch_backward(ctx, grad_x_perm, *_):
    # grad_x[t] = sum over t's routed choices j of grad_x_perm[slot_row[t, j]]: a combine with
    # unit weights whose zero-expert term (1 * 0) vanishes.
    if grad_x_perm is None:
        return None, None, None, None
    topk_ids, slot_row = ctx.saved_tensors
    ones = torch.ones(topk_ids.shape, dtype=torch.float32, device=topk_ids.device)
    zeros = grad_x_perm.new_zeros(ctx.x_shape)
    grad_x = torch.ops.longcat.moe_combine(grad_x_perm.contiguous(), slot_row, topk_ids, ones,
                                           zeros, ctx.n_routed)
    return grad_x.to(ctx.x_dtype), None, None, None


_moe_dispatch.register_autograd(_dispatch_backward, setup_context=_dispatch_setup)


def _check_ids(op: str, topk_ids, x, n_routed):
    if topk_ids.dim() != 2:
        raise ValueError(f"{op}: argument 'topk_ids' must have 2 dimensions, got {topk_ids.dim()} "
                         f"(shape {list(topk_ids.shape)})")
    if x.dim() != 2:
        raise ValueError(f"{op}: argument 'x' must have 2 dimensions, got {x.dim()} (shape {list(x.shape)})")
    if isinstance(n_routed, bool) or not isinstance(n_routed, int):
        raise TypeError(f"{op}: argument 'n_routed' must be an int, got {type(n_routed).__name__}")
    if n_routed < 0:
        raise ValueError(f"{op}: argument 'n_routed' must be >= 0, got {n_routed}")


def moe_dispatch(x: torch.Tensor, topk_ids: torch.Tensor, n_routed: int, align: int = 1):
    """Groups token rows by routed expert for a grouped GEMM.

    x: ``[T, H]`` float32 or bfloat16 (float16 too on CUDA); topk_ids: ``[T, k]`` int32 (from
    ``moe_route``). Returns ``(x_perm [R, H], counts [n_routed], offsets [n_routed + 1],
    row_token [R], slot_row [T, k])``, the index tensors int32. Expert e's rows are
    ``x_perm[offsets[e] : offsets[e] + counts[e]]`` in token order, its segment zero-padded to a
    multiple of ``align`` (``row_token`` -1 on padding), as vLLM's moe_align_block_size.
    ``slot_row[t, j]`` is the row of token t's j-th choice, -1 for a zero expert (id >= n_routed),
    which is never dispatched. ``R = offsets[n_routed]`` depends on the ids, so the op computes
    the counts first and then allocates: on CUDA that is one device-to-host copy (a sync); under
    ``torch.compile`` R is a data-dependent (unbacked) size. Differentiable in x.
    """
    op = "moe_dispatch"
    check_tensors(op, x=x, topk_ids=topk_ids)
    _check_ids(op, topk_ids, x, n_routed)
    if isinstance(align, bool) or not isinstance(align, int):
        raise TypeError(f"{op}: argument 'align' must be an int, got {type(align).__name__}")
    if align < 1:
        raise ValueError(f"{op}: argument 'align' must be >= 1, got {align}")
    if eager_fast_path(x):
        return _dispatch_impl(x, topk_ids, n_routed, align)
    return _moe_dispatch(x, topk_ids, n_routed, align)


# ---- combine -----------------------------------------------------------------------------------

def _combine_impl(expert_out, slot_row, topk_ids, topk_weights, x, n_routed):
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    _C.moe_combine(dl(y), dl(expert_out), dl(slot_row), dl(topk_ids), dl(topk_weights), dl(x), n_routed,
                   stream_of(x))
    return y


@torch.library.custom_op("longcat::moe_combine", mutates_args=())
def _moe_combine(expert_out: torch.Tensor, slot_row: torch.Tensor, topk_ids: torch.Tensor,
                 topk_weights: torch.Tensor, x: torch.Tensor, n_routed: int) -> torch.Tensor:
    return _combine_impl(expert_out, slot_row, topk_ids, topk_weights, x, n_routed)


@_moe_combine.register_fake
def _(expert_out, slot_row, topk_ids, topk_weights, x, n_routed):
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


def _combine_setup(ctx, inputs, output):
    expert_out, slot_row, topk_ids, topk_weights, x, n_routed = inputs
    ctx.save_for_backward(expert_out, slot_row, topk_ids, topk_weights, x)
    ctx.n_routed = n_routed


def _combine_backward(ctx, grad_y):
    # y[t] = sum_j w[t,j] * src[t,j], src = expert_out[slot_row[t,j]] (routed) or x[t] (zero expert):
    #   grad_expert_out[slot_row[t,j]] = w[t,j] * gy[t]        (padding rows: 0)
    #   grad_w[t,j]                   = <gy[t], src[t,j]>
    #   grad_x[t]                     = sum over zero experts j of w[t,j] * gy[t]
    # Index tensors keep static shapes (no boolean masks), so this also traces under torch.compile.
    expert_out, slot_row, topk_ids, topk_weights, x = ctx.saved_tensors
    R, H = expert_out.shape
    gy = grad_y.float()
    routed = (topk_ids >= 0) & (topk_ids < ctx.n_routed)
    zero_expert = topk_ids >= ctx.n_routed
    w = topk_weights.float()
    # Non-routed entries (slot -1) read / write row 0 with a zero weight; the extra row R keeps
    # that valid when R == 0 (a symbolic size under torch.compile, so no branch on it).
    rows = slot_row.long().clamp(min=0)
    grad_eo = grad_w = grad_x = None
    if ctx.needs_input_grad[0]:
        contrib = (w * routed)[..., None] * gy[:, None, :]
        buf = gy.new_zeros(R + 1, H).index_add_(0, rows.reshape(-1), contrib.reshape(-1, H))
        grad_eo = buf[:R].to(expert_out.dtype)
    if ctx.needs_input_grad[3]:
        eo_pad = torch.cat([expert_out.float(), gy.new_zeros(1, H)])
        src = torch.where(routed[..., None], eo_pad[rows], x.float()[:, None, :])
        grad_w = (src * gy[:, None, :]).sum(-1) * (routed | zero_expert)
    if ctx.needs_input_grad[4]:
        grad_x = ((w * zero_expert).sum(1, keepdim=True) * gy).to(x.dtype)
    return grad_eo, None, None, grad_w, grad_x, None


_moe_combine.register_autograd(_combine_backward, setup_context=_combine_setup)


def moe_combine(expert_out: torch.Tensor, slot_row: torch.Tensor, topk_ids: torch.Tensor,
                topk_weights: torch.Tensor, x: torch.Tensor, n_routed: int) -> torch.Tensor:
    """The weighted inverse of dispatch: ``y[t] = sum_j topk_weights[t, j] * (expert_out[slot_row[t, j]]
    if topk_ids[t, j] < n_routed else x[t])``, accumulated in fp32 and rounded once to x's dtype.

    expert_out: ``[R, H]`` in x's dtype (the experts' outputs in dispatch order); slot_row,
    topk_ids: ``[T, k]`` int32; topk_weights: ``[T, k]`` float32; x: ``[T, H]``, the zero experts'
    input. Returns ``y [T, H]``. Differentiable in expert_out, topk_weights and x.
    """
    op = "moe_combine"
    check_tensors(op, x=x, expert_out=expert_out, slot_row=slot_row, topk_ids=topk_ids,
                  topk_weights=topk_weights)
    check_no_internal_overlap(op, "x", x)  # y has x's shape: refuse an expanded x before allocating it
    _check_ids(op, topk_ids, x, n_routed)
    if eager_fast_path(expert_out, topk_weights, x):
        return _combine_impl(expert_out, slot_row, topk_ids, topk_weights, x, n_routed)
    return _moe_combine(expert_out, slot_row, topk_ids, topk_weights, x, n_routed)
