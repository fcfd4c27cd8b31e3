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


def eager_fast_path(*tensors: torch.Tensor) -> bool:
    """True when the op may call the kernel directly, skipping the dispatcher (tens of us per call):
    not while torch.compile traces, not when autograd must record the op, not for meta tensors."""
    if torch.compiler.is_compiling() or tensors[0].device.type == "meta":
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
