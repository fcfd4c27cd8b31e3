"""Grouped expert SwiGLU GEMM: ``moe_grouped_swiglu(x_perm, offsets, w13, w2)``, the expert MLPs
of the MoE layer over token rows already grouped by expert. Semantics: ``reference.moe_grouped_swiglu``
(transformers' LongcatFlashExperts, expert by expert); the C++ contract is
``csrc/include/longcat/moe_gemm.h``."""
from __future__ import annotations

import torch

from longcat import _C
from longcat.ops._common import check_tensors, dl, eager_fast_path, stream_of

_OP = "moe_grouped_swiglu"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _check_shapes(x_perm: torch.Tensor, offsets: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor) -> None:
    """The checks that need no tensor data (so they also run on meta / fake tensors); the C++ API
    repeats them and checks the offsets' values (on CPU)."""
    check_tensors(_OP, x_perm=x_perm, offsets=offsets, w13=w13, w2=w2)
    allowed = (torch.bfloat16,) if x_perm.device.type == "cuda" else (torch.bfloat16, torch.float32)
    if x_perm.dtype not in allowed:
        names = " or ".join(_dtype_name(d) for d in allowed)
        raise TypeError(f"{_OP}: argument 'x_perm' must have dtype {names} on {x_perm.device.type}, "
                        f"got {_dtype_name(x_perm.dtype)}")
    if x_perm.dim() != 2:
        raise ValueError(f"{_OP}: argument 'x_perm' must have 2 dimensions [R, H], got shape {list(x_perm.shape)}")
    for name, w, nd in (("w13", w13, 3), ("w2", w2, 3)):
        if w.dtype != x_perm.dtype:
            raise TypeError(f"{_OP}: argument '{name}' must have the dtype of 'x_perm' "
                            f"({_dtype_name(x_perm.dtype)}), got {_dtype_name(w.dtype)}")
        if w.dim() != nd:
            raise ValueError(f"{_OP}: argument '{name}' must have {nd} dimensions, got shape {list(w.shape)}")
    E, two_f, H = w13.shape
    if H != x_perm.shape[1]:
        raise ValueError(f"{_OP}: argument 'w13' must have size {x_perm.shape[1]} in dimension 2 (the hidden "
                         f"size x_perm.shape[1]), got {H} (shape {list(w13.shape)})")
    if two_f % 2:
        raise ValueError(f"{_OP}: argument 'w13' must have an even size in dimension 1 (2 * intermediate), "
                         f"got {two_f} (shape {list(w13.shape)})")
    if tuple(w2.shape) != (E, H, two_f // 2):
        raise ValueError(f"{_OP}: argument 'w2' must have shape [n_routed, H, F] = {[E, H, two_f // 2]} "
                         f"(from w13 {list(w13.shape)}), got {list(w2.shape)}")
    if offsets.dtype != torch.int32:
        raise TypeError(f"{_OP}: argument 'offsets' must have dtype int32, got {_dtype_name(offsets.dtype)}")
    if offsets.dim() != 1 or offsets.shape[0] != E + 1:
        raise ValueError(f"{_OP}: argument 'offsets' must have shape [n_routed + 1] = [{E + 1}], "
                         f"got {list(offsets.shape)}")
    for name, t in (("x_perm", x_perm), ("offsets", offsets), ("w13", w13), ("w2", w2)):
        if not t.is_contiguous():
            raise ValueError(f"{_OP}: argument '{name}' must be contiguous, got shape {list(t.shape)} with "
                             f"strides {list(t.stride())} (call .contiguous())")


def workspace_size(rows: int, hidden: int, intermediate: int, n_routed: int, dtype: torch.dtype,
                   device: torch.device | str = "cpu") -> int:
    """Bytes of scratch the kernel needs (the intermediate activation and, on CPU, per-thread
    packing panels, so its size follows ``longcat.num_threads()``)."""
    device = torch.device(device)
    index = device.index if device.index is not None else (
        torch.cuda.current_device() if device.type == "cuda" else 0)
    return _C.moe_grouped_swiglu_workspace_size(rows, hidden, intermediate, n_routed, _dtype_name(dtype),
                                                device.type, index)


def _run(x_perm, offsets, w13, w2, amx_emulated: bool = False) -> torch.Tensor:
    R, H = x_perm.shape
    out = torch.empty((R, H), dtype=x_perm.dtype, device=x_perm.device)
    ws = torch.empty(workspace_size(R, H, w2.shape[2], w13.shape[0], x_perm.dtype, x_perm.device),
                     dtype=torch.uint8, device=x_perm.device)
    if amx_emulated:  # tests: the AMX copy's code with the tile instructions emulated
        _C._moe_grouped_swiglu_amx_emulated(dl(out), dl(x_perm), dl(offsets), dl(w13), dl(w2), dl(ws))
    else:
        _C.moe_grouped_swiglu(dl(out), dl(x_perm), dl(offsets), dl(w13), dl(w2), dl(ws), stream_of(x_perm))
    return out


@torch.library.custom_op("longcat::moe_grouped_swiglu", mutates_args=())
def _moe_grouped_swiglu(x_perm: torch.Tensor, offsets: torch.Tensor, w13: torch.Tensor,
                        w2: torch.Tensor) -> torch.Tensor:
    return _run(x_perm, offsets, w13, w2)


@_moe_grouped_swiglu.register_fake
def _(x_perm, offsets, w13, w2):
    return torch.empty(x_perm.shape, dtype=x_perm.dtype, device=x_perm.device)


@torch.library.custom_op("longcat::moe_grouped_swiglu_backward", mutates_args=())
def _moe_grouped_swiglu_backward(grad_out: torch.Tensor, x_perm: torch.Tensor, offsets: torch.Tensor,
                                 w13: torch.Tensor, w2: torch.Tensor
                                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # Exact gradient of the fp32 math, expert by expert with torch matmuls (the roundings to the
    # storage dtype pass gradients straight through, as in the norm ops). The segment bounds are
    # read on the host; a custom op of its own so that compiled backward graphs stay whole.
    F = w2.shape[2]
    acc = torch.promote_types(x_perm.dtype, torch.float32)  # fp32, or float64 for float64 checks
    gx = torch.zeros(x_perm.shape, dtype=acc, device=x_perm.device)
    gw13 = torch.zeros(w13.shape, dtype=acc, device=w13.device)
    gw2 = torch.zeros(w2.shape, dtype=acc, device=w2.device)
    bounds = [int(b) for b in offsets.tolist()]
    for e in range(w13.shape[0]):
        lo, hi = bounds[e], bounds[e + 1]
        if hi <= lo:
            continue
        x, go = x_perm[lo:hi].to(acc), grad_out[lo:hi].to(acc)
        w13e, w2e = w13[e].to(acc), w2[e].to(acc)
        gu = x @ w13e.t()
        g, u = gu[:, :F], gu[:, F:]
        sig = torch.sigmoid(g)
        s = g * sig
        gh = go @ w2e                                   # [M, F]
        gw2[e] = go.t() @ (s * u)
        d_gu = torch.cat([gh * u * (sig * (1 + g * (1 - sig))), gh * s], dim=1)
        gw13[e] = d_gu.t() @ x
        gx[lo:hi] = d_gu @ w13e
    return gx.to(x_perm.dtype), gw13.to(w13.dtype), gw2.to(w2.dtype)


@_moe_grouped_swiglu_backward.register_fake
def _(grad_out, x_perm, offsets, w13, w2):
    return torch.empty_like(x_perm), torch.empty_like(w13), torch.empty_like(w2)


def _setup(ctx, inputs, output):
    x_perm, offsets, w13, w2 = inputs
    ctx.save_for_backward(x_perm, offsets, w13, w2)


def _backward(ctx, grad_out):
    x_perm, offsets, w13, w2 = ctx.saved_tensors
    gx, gw13, gw2 = _moe_grouped_swiglu_backward(grad_out.contiguous(), x_perm, offsets, w13, w2)
    return gx, None, gw13, gw2


_moe_grouped_swiglu.register_autograd(_backward, setup_context=_setup)


def moe_grouped_swiglu(x_perm: torch.Tensor, offsets: torch.Tensor, w13: torch.Tensor,
                       w2: torch.Tensor) -> torch.Tensor:
    """The routed experts' SwiGLU MLPs over token rows grouped by expert.

    For each expert e, rows ``offsets[e]:offsets[e+1]`` of ``x_perm`` get
    ``(silu(x @ w13[e, :F].T) * (x @ w13[e, F:].T)) @ w2[e].T``, rounded as a bf16 torch program
    rounds it (``reference.moe_grouped_swiglu``).

    x_perm: ``[R, H]`` bfloat16 or float32 (bfloat16 on CUDA), contiguous. offsets: ``[n_routed + 1]``
    int32 on x's device, ``offsets[0] == 0``, non-decreasing, ``offsets[-1] == R`` (segments may
    be empty; padding rows are computed like any other). w13: ``[n_routed, 2F, H]`` (transformers'
    ``gate_up_proj``: gate rows, then up rows); w2: ``[n_routed, H, F]`` (``down_proj``); both
    x's dtype, contiguous. Returns ``[R, H]`` in x's dtype. Differentiable in x_perm, w13 and w2.
    """
    _check_shapes(x_perm, offsets, w13, w2)
    if eager_fast_path(x_perm, w13, w2):
        return _run(x_perm, offsets, w13, w2)
    return _moe_grouped_swiglu(x_perm, offsets, w13, w2)
