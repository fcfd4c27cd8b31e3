"""Helpers shared by the op wrappers: argument checks that run before DLPack, and streams."""
from __future__ import annotations

import torch


def check_tensor(op: str, name: str, value: object) -> torch.Tensor:
    """Raise TypeError naming the argument unless it is a tensor on a device the kernels run on."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{op}: argument '{name}' must be a torch.Tensor, got {type(value).__name__}")
    if value.device.type not in ("cpu", "cuda", "meta"):
        raise ValueError(f"{op}: argument '{name}' is on {value.device}; longcat runs on cpu and cuda")
    return value


def check_tensors(op: str, **tensors: object) -> None:
    """check_tensor for each keyword, and all on the device of the first one."""
    items = list(tensors.items())
    first_name, first = items[0]
    check_tensor(op, first_name, first)
    for name, t in items[1:]:
        check_tensor(op, name, t)
        if t.device != first.device:
            raise ValueError(f"{op}: argument '{name}' must be on the device of '{first_name}' "
                             f"({first.device}), got {t.device}")


_profiler_enabled = torch._C._autograd._profiler_enabled


def eager_fast_path(*tensors: torch.Tensor) -> bool:
    """True when the op may call the kernel directly, skipping the dispatcher (tens of us per call):
    not while torch.compile traces, not when autograd must record the op, not for meta tensors,
    and not while a torch.profiler is recording, so that the dispatcher records the op under its
    registered name (``longcat::mla_decode``, with input shapes when ``record_shapes=True``)."""
    if torch.compiler.is_compiling() or tensors[0].device.type == "meta" or _profiler_enabled():
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def stream_of(t: torch.Tensor) -> int:
    """The raw cudaStream_t of torch's current stream on t's device (0 on CPU)."""
    if t.device.type == "cuda":
        return torch.cuda.current_stream(t.device).cuda_stream
    return 0


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


def ssa_window(op: str, sink_blocks, local_blocks, block_size, sink_tokens, window_tokens):
    """The SSA window of ssa_prefill / ssa_decode as the kernels take it: (mode, sink, local,
    block_size). Token-exact mode when sink_tokens or window_tokens is given (window_tokens is
    then required, sink_tokens defaults to 0); block mode otherwise."""
    if sink_tokens is not None or window_tokens is not None:
        if window_tokens is None:
            raise ValueError(f"{op}: argument 'window_tokens' is required in token mode (sink_tokens was given)")
        sink = 0 if sink_tokens is None else int_arg(op, "sink_tokens", sink_tokens, 0)
        return "tokens", sink, int_arg(op, "window_tokens", window_tokens, 1), 1
    return ("blocks", int_arg(op, "sink_blocks", sink_blocks, 0), int_arg(op, "local_blocks", local_blocks, 1),
            int_arg(op, "block_size", block_size, 1))
