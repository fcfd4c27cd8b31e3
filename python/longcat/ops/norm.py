"""RMSNorm ops: ``rms_norm``, ``fused_add_rms_norm`` (functional) and ``fused_add_rms_norm_``
(in place, vLLM's convention). Semantics: ``reference.rms_norm`` / ``reference.fused_add_rms_norm``;
the C++ contract is ``csrc/include/longcat/norm.h``."""
from __future__ import annotations

import torch

from longcat import _C
from longcat.ops._common import check_tensor, stream_of, view


def _empty_like(x: torch.Tensor) -> torch.Tensor:
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)  # contiguous, whatever x's strides


@torch.library.custom_op("longcat::rms_norm", mutates_args=())
def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    out = _empty_like(x)
    _C.rms_norm(out, view(x), view(weight), eps, stream_of(x))
    return out


@_rms_norm.register_fake
def _(x, weight, eps):
    return _empty_like(x)


def _rms_norm_setup(ctx, inputs, output):
    x, weight, eps = inputs
    ctx.save_for_backward(x, weight)
    ctx.eps = eps


def _rms_norm_backward(ctx, grad_out):
    # Exact gradient of the fp32 math (the roundings to x's dtype pass gradients straight through).
    x, weight = ctx.saved_tensors
    xf, gf, wf = x.float(), grad_out.float(), weight.float()
    inv = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + ctx.eps)
    x_hat = xf * inv
    g_hat = gf * wf
    grad_x = inv * (g_hat - x_hat * (g_hat * x_hat).mean(-1, keepdim=True))
    grad_w = (gf * x_hat).reshape(-1, x.shape[-1]).sum(0)
    return grad_x.to(x.dtype), grad_w.to(weight.dtype), None


_rms_norm.register_autograd(_rms_norm_backward, setup_context=_rms_norm_setup)


@torch.library.custom_op("longcat::fused_add_rms_norm", mutates_args=())
def _fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                        eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    out, residual_out = _empty_like(x), _empty_like(x)
    _C.fused_add_rms_norm(out, residual_out, view(x), view(residual), view(weight), eps, stream_of(x))
    return out, residual_out


@_fused_add_rms_norm.register_fake
def _(x, residual, weight, eps):
    return _empty_like(x), _empty_like(x)


@torch.library.custom_op("longcat::fused_add_rms_norm_", mutates_args=("x", "residual"))
def _fused_add_rms_norm_inplace(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                                eps: float) -> None:
    _C.fused_add_rms_norm(x, residual, x, residual, weight, eps, stream_of(x))


@_fused_add_rms_norm_inplace.register_fake
def _(x, residual, weight, eps):
    return None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``weight * normalize(x)`` over the last dim, as transformers' LongcatFlashRMSNorm.

    x: ``[..., H]`` float32 or bfloat16 (float16 too on CUDA), last dim contiguous; the leading
    dims may be a strided view with one row stride (e.g. ``kv[:, :512]``). weight: ``[H]``, x's
    dtype. Returns a new contiguous tensor. Differentiable in x and weight.
    """
    check_tensor("rms_norm", "x", x)
    check_tensor("rms_norm", "weight", weight)
    return _rms_norm(x, weight, float(eps))


def fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                       eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """``s = x + residual`` (in x's dtype), returns ``(rms_norm(s), s)``: the decoder's residual
    step in one pass over memory."""
    for name, t in (("x", x), ("residual", residual), ("weight", weight)):
        check_tensor("fused_add_rms_norm", name, t)
    return _fused_add_rms_norm(x, residual, weight, float(eps))


def fused_add_rms_norm_(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                        eps: float = 1e-6) -> None:
    """In place, as vLLM's ``fused_add_rms_norm``: ``residual <- x + residual``,
    ``x <- rms_norm(residual)``. Not differentiable."""
    for name, t in (("x", x), ("residual", residual), ("weight", weight)):
        check_tensor("fused_add_rms_norm_", name, t)
    _fused_add_rms_norm_inplace(x, residual, weight, float(eps))
