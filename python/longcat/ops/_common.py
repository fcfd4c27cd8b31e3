"""Helpers shared by the op wrappers: argument checks that run before DLPack, and streams."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch.utils.dlpack import to_dlpack as _to_dlpack

from longcat import _C

_SINK, _LOCAL, _BLOCK_SIZE = _C.SSA_WINDOW_DEFAULT  # written once, in csrc/include/longcat/mla.h


@dataclass(frozen=True)
class SsaWindow:
    """The SSA window of a Zig-Zag layer (C++: ``longcat::SsaWindow``, longcat/mla.h): a query
    sees ``sink`` blocks at the sequence start and the last ``local`` blocks of ``block_size``
    tokens up to its own; with ``tokens=True`` ``sink`` and ``local`` count single tokens.
    The defaults are the report's 1 sink + 7 local blocks of 128. The op using the window
    checks the values."""

    sink: int = _SINK
    local: int = _LOCAL
    block_size: int = _BLOCK_SIZE
    tokens: bool = False


def check_tensor(op: str, name: str, value: object) -> torch.Tensor:
    """Raise TypeError naming the argument unless it is a tensor on a device the kernels run on."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{op}: argument '{name}' must be a torch.Tensor, got {type(value).__name__}")
    if value.device.type not in ("cpu", "cuda", "meta"):
        raise ValueError(f"{op}: argument '{name}' is on {value.device}; longcat runs on cpu and cuda")
    return value


def check_tensors(op: str, **tensors: object) -> None:
    """check_tensor for each keyword, and all on the device of the first one. Runs on every op
    call of a decode step, so the common case (tensors on one cpu / cuda / meta device) is one
    pass of cheap attribute reads; anything else goes through the checks that name the
    argument."""
    device = None
    for t in tensors.values():
        if not isinstance(t, torch.Tensor):
            break
        if device is None:
            if not (t.is_cpu or t.is_cuda or t.is_meta):
                break
            device = t.device
        elif t.device != device:
            break
    else:
        return
    _check_tensors_named(op, tensors)


def _check_tensors_named(op: str, tensors: dict) -> None:
    first_name = first_device = None
    for name, t in tensors.items():
        check_tensor(op, name, t)
        if first_device is None:
            first_name, first_device = name, t.device
        elif t.device != first_device:
            raise ValueError(f"{op}: argument '{name}' must be on the device of '{first_name}' "
                             f"({first_device}), got {t.device}")


_profiler_enabled = torch._C._autograd._profiler_enabled


def check_no_internal_overlap(op: str, name: str, t: torch.Tensor) -> None:
    """ValueError naming the argument when ``t`` has elements sharing memory (an ``expand``ed
    view): the kernels refuse them, so refuse before allocating outputs of t's (virtual) size."""
    if t.is_contiguous():  # the common case, and a contiguous tensor's elements are distinct (no op call)
        return
    if t.device.type != "meta" and not torch.compiler.is_compiling() and torch._debug_has_internal_overlap(t) == 1:
        raise ValueError(f"{op}: argument '{name}' has elements that share memory (an expanded view, strides "
                         f"{list(t.stride())} for shape {list(t.shape)}); call .contiguous()")


_record_ops_in_profiler = True


@contextlib.contextmanager
def ops_unrecorded_in_profiler():
    """Within the block, ops keep their eager fast path while a torch.profiler records (they then
    run as in an unprofiled program, without the dispatcher's Python around each call, and do
    not show as ``longcat::*`` events). For benchmarks that time the kernels at their
    ``longcat._C`` entry points and use the profiler only for torch's own ops."""
    global _record_ops_in_profiler
    before, _record_ops_in_profiler = _record_ops_in_profiler, False
    try:
        yield
    finally:
        _record_ops_in_profiler = before


def eager_fast_path(*tensors: torch.Tensor) -> bool:
    """True when the op may call the kernel directly, skipping the dispatcher (tens of us per call):
    not while torch.compile traces, not when autograd must record the op, not for meta tensors,
    and not while a torch.profiler is recording, so that the dispatcher records the op under its
    registered name (``longcat::mla_decode``, with input shapes when ``record_shapes=True``;
    ``ops_unrecorded_in_profiler`` turns that off)."""
    if torch.compiler.is_compiling() or tensors[0].is_meta or (_record_ops_in_profiler and _profiler_enabled()):
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def stream_of(t: torch.Tensor) -> int:
    """The raw cudaStream_t of torch's current stream on t's device (0 on CPU)."""
    if t.is_cuda:
        return torch.cuda.current_stream(t.device).cuda_stream
    return 0


def dl(t: torch.Tensor):
    """t as a DLPack capsule for ``longcat._C`` (detached if it requires grad). nanobind takes a
    capsule as it is; given a tensor it calls torch's Python-level ``Tensor.__dlpack__``, which
    costs several microseconds per argument (measured 5-8 us against 0.5-0.9 us for
    ``to_dlpack``): most of a small op's overhead in a decode step. For the eager fast paths;
    streams are passed to the kernels explicitly, so no synchronisation is skipped."""
    return _to_dlpack(t.detach() if t.requires_grad else t)


def view(t: torch.Tensor) -> torch.Tensor:
    """A tensor DLPack accepts: torch refuses to export tensors that require grad."""
    return t.detach() if t.requires_grad else t


def int_arg(op: str, name: str, value: object, minimum: int) -> int:
    """An int argument >= minimum (bools refused), or TypeError / ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{op}: argument '{name}' must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{op}: argument '{name}' must be >= {minimum}, got {value}")
    return value


def window_to_op(window) -> list[int] | None:
    """An ``SsaWindow`` as the ``torch.library`` custom ops carry it (their schemas take no
    Python objects): ``[tokens, sink, local, block_size]``, or None for full attention."""
    if window is None:
        return None
    return [int(window.tokens), window.sink, window.local, window.block_size]


def window_from_op(fields: list[int] | None):
    """The inverse of ``window_to_op``."""
    if fields is None:
        return None
    tokens, sink, local, block_size = fields
    return SsaWindow(sink=sink, local=local, block_size=block_size, tokens=bool(tokens))


def check_window(op: str, window):
    """``window`` must be a ``longcat.ops.SsaWindow`` (its values are checked by the kernel)."""
    if not isinstance(window, SsaWindow):
        raise TypeError(f"{op}: argument 'window' must be a longcat.ops.SsaWindow, got {type(window).__name__}")
    return window
