"""RMSNorm ops: ``rms_norm``, ``fused_add_rms_norm`` (functional) and ``fused_add_rms_norm_``
(in place, vLLM's convention). Semantics: ``reference.rms_norm`` / ``reference.fused_add_rms_norm``;
the C++ contract is ``csrc/include/longcat/norm.h``."""
from __future__ import annotations

import torch

from longcat import _C
from longcat.ops._common import check_no_internal_overlap, check_tensors, dl, eager_fast_path, stream_of, view


def _empty_like(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x, memory_format=torch.contiguous_format)  # contiguous, whatever x's strides


@torch.library.custom_op("longcat::rms_norm", mutates_args=())
def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    out = _empty_like(x)
    _C.rms_norm(out, view(x), view(weight), eps, stream_of(x))
    return out


@_rms_norm.register_fake
def _(x, weight, eps):
    return _empty_like(x)


def _grad_w_partials(x: torch.Tensor, hidden: int) -> int:
    """How many partial sums of grad_w the backward kernel writes: enough blocks of rows for
    every thread (CPU) or SM (CUDA), few enough that summing them stays cheap. A function of the
    shape and device only, so the result does not depend on the thread count."""
    rows = x.numel() // hidden if hidden else 0
    return max(1, min(rows, 1024 if x.is_cuda else 64))


@torch.library.custom_op("longcat::rms_norm_backward", mutates_args=())
def _rms_norm_backward_op(grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                          eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_x in x's dtype, grad_w): the exact gradient of the fp32 math, from one kernel call
    (the roundings to x's dtype pass gradients straight through)."""
    H = x.shape[-1]
    grad_x = _empty_like(x)
    partial = torch.empty((_grad_w_partials(x, H), H), dtype=torch.float32, device=x.device)
    _C.rms_norm_backward(dl(grad_x), dl(partial), dl(grad_out.contiguous()), dl(x), dl(weight),
                         eps, stream_of(x))
    return grad_x, partial.sum(0).to(weight.dtype)


@_rms_norm_backward_op.register_fake
def _(grad_out, x, weight, eps):
    return _empty_like(x), torch.empty_like(weight)


def _rms_norm_setup(ctx, inputs, output):
    x, weight, eps = inputs
    ctx.save_for_backward(x, weight)
    ctx.eps = eps


def _rms_norm_backward(ctx, grad_out):
    x, weight = ctx.saved_tensors
    grad_x, grad_w = _rms_norm_backward_op(grad_out, x, weight, ctx.eps)
    return grad_x, grad_w, None


_rms_norm.register_autograd(_rms_norm_backward, setup_context=_rms_norm_setup)


@torch.library.custom_op("longcat::rms_norm_out", mutates_args=("out",))
def _rms_norm_out(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, eps: float) -> None:
    _C.rms_norm(out, view(x), view(weight), eps, stream_of(x))


@_rms_norm_out.register_fake
def _(out, x, weight, eps):
    return None


@torch.library.custom_op("longcat::fused_add_rms_norm", mutates_args=())
def _fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                        eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    out, residual_out = _empty_like(x), _empty_like(x)
    _C.fused_add_rms_norm(out, residual_out, view(x), view(residual), view(weight), eps, stream_of(x))
    return out, residual_out


@_fused_add_rms_norm.register_fake
def _(x, residual, weight, eps):
    return _empty_like(x), _empty_like(x)


def _fused_setup(ctx, inputs, output):
    _, _, weight, eps = inputs
    ctx.save_for_backward(output[1], weight)  # s = x + residual, what was normalised
    ctx.eps = eps


def _fused_backward(ctx, grad_out, grad_residual_out):
    s, weight = ctx.saved_tensors
    grad_s, grad_w = _rms_norm_backward_op(grad_out, s, weight, ctx.eps)
    if grad_residual_out is not None:
        grad_s = grad_s + grad_residual_out
    return grad_s, grad_s, grad_w, None


_fused_add_rms_norm.register_autograd(_fused_backward, setup_context=_fused_setup)


@torch.library.custom_op("longcat::fused_add_rms_norm_", mutates_args=("x", "residual"))
def _fused_add_rms_norm_inplace(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                                eps: float) -> None:
    _C.fused_add_rms_norm(x, residual, x, residual, weight, eps, stream_of(x))


@_fused_add_rms_norm_inplace.register_fake
def _(x, residual, weight, eps):
    return None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6,
             out: torch.Tensor | None = None) -> torch.Tensor:
    """``weight * normalize(x)`` over the last dim, as transformers' LongcatFlashRMSNorm.

    x: ``[..., H]`` float32 or bfloat16 (float16 too on CUDA), last dim contiguous; the leading
    dims may be a strided view with one row stride (e.g. ``kv[:, :512]``). weight: ``[H]``, x's
    dtype. Returns a new contiguous tensor, or writes into ``out`` (x's shape and dtype; may be
    x itself). Differentiable in x and weight (without ``out``, as torch's out= ops).
    """
    eps = float(eps)
    if out is not None:
        check_tensors("rms_norm", x=x, weight=weight, out=out)
        check_no_internal_overlap("rms_norm", "x", x)
        if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
            raise RuntimeError("rms_norm(out=...) does not support autograd; call it without out")
        if eager_fast_path(x, weight):
            _C.rms_norm(dl(out), dl(x), dl(weight), eps, stream_of(x))
        else:
            _rms_norm_out(out, x, weight, eps)
        return out
    check_tensors("rms_norm", x=x, weight=weight)
    check_no_internal_overlap("rms_norm", "x", x)
    if eager_fast_path(x, weight):
        out = _empty_like(x)
        _C.rms_norm(dl(out), dl(x), dl(weight), eps, stream_of(x))
        return out
    return _rms_norm(x, weight, eps)


def fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                       eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """``s = x + residual`` (in x's dtype), returns ``(rms_norm(s), s)``: the decoder's residual
    step in one pass over memory. Differentiable in x, residual and weight."""
    check_tensors("fused_add_rms_norm", x=x, residual=residual, weight=weight)
    check_no_internal_overlap("fused_add_rms_norm", "x", x)
    eps = float(eps)
    if eager_fast_path(x, residual, weight):
        out, residual_out = _empty_like(x), _empty_like(x)
        _C.fused_add_rms_norm(dl(out), dl(residual_out), dl(x), dl(residual), dl(weight), eps, stream_of(x))
        return out, residual_out
    return _fused_add_rms_norm(x, residual, weight, eps)


def fused_add_rms_norm_(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                        eps: float = 1e-6) -> None:
    """In place, as vLLM's ``fused_add_rms_norm``: ``residual <- x + residual``,
    ``x <- rms_norm(residual)``. Not differentiable: like torch's in-place ops it refuses a leaf
    tensor that requires grad (RuntimeError)."""
    op = "fused_add_rms_norm_"
    check_tensors(op, x=x, residual=residual, weight=weight)
    for name, t in (("x", x), ("residual", residual)):
        if t.is_leaf and t.requires_grad and torch.is_grad_enabled():
            raise RuntimeError(f"{op}: argument '{name}' is a leaf tensor that requires grad; it cannot be "
                               f"modified in place (use fused_add_rms_norm, or torch.no_grad())")
    if eager_fast_path(x, residual, weight):
        _C.fused_add_rms_norm(x, residual, x, residual, weight, float(eps), stream_of(x))
    else:
        _fused_add_rms_norm_inplace(x, residual, weight, float(eps))
