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


def stream_of(t: torch.Tensor) -> int:
    """The raw cudaStream_t of torch's current stream on t's device (0 on CPU)."""
    if t.device.type == "cuda":
        return torch.cuda.current_stream(t.device).cuda_stream
    return 0


def view(t: torch.Tensor) -> torch.Tensor:
    """A tensor DLPack accepts: torch refuses to export tensors that require grad."""
    return t.detach() if t.requires_grad else t
