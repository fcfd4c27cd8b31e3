"""Weight-streaming linear layer for few rows: ``linear(x, weight) = x @ weight.T`` (torch's
``F.linear`` without bias), fp32 sums rounded once to x's dtype. Semantics:
``reference.linear``; the C++ contract is ``csrc/include/longcat/linear.h``.

It exists for decode: with a handful of rows a linear layer is bound by reading its weights,
and the kernel streams each weight row once per 8 rows of x (vdpbf16ps on AVX512-BF16 CPUs).
With many rows (prefill) torch's blocked GEMM is faster; ``longcat bench linear`` measures
where the two cross. CPU only: on a CUDA tensor the op runs ``F.linear`` (same semantics)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from longcat import _C
from longcat.ops._common import check_tensors, dl, eager_fast_path

_OP = "linear"


def _check(x: torch.Tensor, weight: torch.Tensor) -> None:
    """The checks that need no tensor data (so they also run on fake tensors); the C++ API
    repeats them. Ordered so that valid arguments, the common case, pass in a few microseconds:
    decode calls this op ~17 times per layer."""
    check_tensors(_OP, x=x, weight=weight)
    dtype = x.dtype
    if dtype is not torch.bfloat16 and dtype is not torch.float32:
        raise TypeError(f"{_OP}: argument 'x' must have dtype float32 or bfloat16, got "
                        f"{str(dtype).replace('torch.', '')}")
    if weight.dtype is not dtype:
        raise TypeError(f"{_OP}: argument 'weight' must have the dtype of 'x' ({dtype}), got {weight.dtype}")
    x_dim, w_dim = x.dim(), weight.dim()
    if x_dim < 1:
        raise ValueError(f"{_OP}: argument 'x' must have at least 1 dimension [..., K], got a scalar")
    if w_dim == 3:  # batched: one weight per group
        if x_dim != 3 or x.shape[0] != weight.shape[0] or weight.shape[2] != x.shape[-1]:
            raise ValueError(f"{_OP}: with a 3-D 'weight' [G, N, K] (shape {list(weight.shape)}), argument 'x' must "
                             f"be [G, M, K] with the same G and K, got shape {list(x.shape)}")
    elif w_dim != 2 or weight.shape[1] != x.shape[-1]:
        raise ValueError(f"{_OP}: argument 'weight' must have shape [N, {x.shape[-1]}] (K = x.shape[-1]) or "
                         f"[G, N, K], got {list(weight.shape)}")


def _out_shape(x: torch.Tensor, weight: torch.Tensor) -> torch.Size:
    return x.shape[:-1] + weight.shape[-2:-1]


def _run(x: torch.Tensor, weight: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    if x.stride(-1) != 1 and x.shape[-1] > 1:  # the kernel needs a contiguous last dim
        x = x.contiguous()
    # A 2-D weight takes x as [M, K] with one row stride (a column slice passes as it is); a 3-D
    # weight takes x [G, M, K] with any row and group strides.
    x2 = x if x.dim() == weight.dim() else x.reshape(-1, x.shape[-1])
    if not weight.is_contiguous():
        weight = weight.contiguous()
    if out is not None:  # checked by _check_out; the kernel writes it through its strides
        out2 = out if out.dim() == weight.dim() else out.view(-1, out.shape[-1])
        _C.linear(dl(out2), dl(x2), dl(weight))
        return out
    out = x2.new_empty(_out_shape(x2, weight))
    _C.linear(dl(out), dl(x2), dl(weight))
    return out if x2 is x else out.view(_out_shape(x, weight))


def _check_out(x: torch.Tensor, weight: torch.Tensor, out: torch.Tensor) -> None:
    """``out=``: the output's shape and dtype, on x's device, a contiguous last dim (rows and
    groups may be strided, e.g. a slice of a larger buffer); the kernel refuses overlaps."""
    check_tensors(_OP, x=x, out=out)
    if out.shape != _out_shape(x, weight) or out.dtype is not x.dtype:
        raise ValueError(f"{_OP}: argument 'out' must have shape {list(_out_shape(x, weight))} and dtype "
                         f"{x.dtype}, got {list(out.shape)} and {out.dtype}")
    if out.shape[-1] > 1 and out.stride(-1) != 1:
        raise ValueError(f"{_OP}: argument 'out' must have a contiguous last dimension, got strides "
                         f"{list(out.stride())}")
    if out.dim() != weight.dim():
        try:
            out.view(-1, out.shape[-1])
        except RuntimeError:
            raise ValueError(f"{_OP}: argument 'out' must have leading dims that merge into one row stride "
                             f"(a 2-D weight takes x and out as rows), got strides {list(out.stride())}") from None
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        raise RuntimeError(f"{_OP}(out=...) does not support autograd; call it without out")


@torch.library.custom_op("longcat::linear", mutates_args=())
def _linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return _run(x, weight)


@_linear.register_fake
def _(x, weight):
    return x.new_empty(_out_shape(x, weight))


def _setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad_out):
    x, weight = ctx.saved_tensors
    if weight.dim() == 3:
        grad_x = torch.bmm(grad_out, weight) if ctx.needs_input_grad[0] else None
        grad_w = torch.bmm(grad_out.transpose(1, 2), x) if ctx.needs_input_grad[1] else None
        return grad_x, grad_w
    g = grad_out.reshape(-1, weight.shape[0])
    grad_x = (g @ weight).view(x.shape) if ctx.needs_input_grad[0] else None
    grad_w = (g.t() @ x.reshape(-1, x.shape[-1])) if ctx.needs_input_grad[1] else None
    return grad_x, grad_w


_linear.register_autograd(_backward, setup_context=_setup)


def linear(x: torch.Tensor, weight: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weight.T``: x ``[..., K]`` float32 or bfloat16, weight ``[N, K]`` of x's dtype;
    returns ``[..., N]`` in x's dtype, each output the fp32 sum of its K products rounded once.
    Batched (``torch.bmm(x, weight.transpose(1, 2))``): x ``[G, M, K]``, weight ``[G, N, K]``
    -> ``[G, M, N]``, e.g. per-head projections with x a transposed view ``[heads, M, K]``.
    Any strides (a copy is made where the kernel needs one). Differentiable (the backward runs
    torch matmuls). On CUDA tensors it is ``F.linear`` / ``torch.bmm``.

    ``out``: written in place and returned (not differentiable, as torch's out= ops): the
    result's shape and dtype with a contiguous last dim; rows and groups may be strided, so a
    projection can land straight in a slice of a larger buffer (e.g. ``q[..., :512]`` of a
    ``[T, heads, 576]`` query, or a transposed ``[heads, T, v]`` view of ``[T, heads, v]``)
    instead of being copied there. It may not overlap x or weight."""
    _check(x, weight)
    if out is not None:
        _check_out(x, weight, out)
        if x.is_meta:
            return out
        if x.is_cuda:
            res = F.linear(x, weight) if weight.dim() == 2 else torch.bmm(x, weight.transpose(1, 2))
            return out.copy_(res)
        return _run(x, weight, out)
    if x.is_cuda:
        return F.linear(x, weight) if weight.dim() == 2 else torch.bmm(x, weight.transpose(1, 2))
    if eager_fast_path(x, weight):
        return _run(x, weight)
    return _linear(x, weight)
