"""tests/cuda/: GPU-only tests. Without a CUDA device, or with a longcat built without its CUDA
kernels, every test here is skipped at collection with the reason (never an error)."""
from __future__ import annotations

import os

import pytest


def cuda_skip_reason() -> str | None:
    """Why the CUDA tests cannot run here, or None when they can."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    import longcat

    if longcat.build_info().get("cuda", "off").lower() != "on":
        return "longcat was built without CUDA kernels (rebuild with nvcc on PATH or LONGCAT_CUDA=ON)"
    return None


_HERE = os.path.dirname(os.path.abspath(__file__))


def pytest_collection_modifyitems(config, items):
    reason = cuda_skip_reason()
    if reason is None:
        return
    marker = pytest.mark.skip(reason=reason)
    for item in items:
        if os.path.abspath(str(item.fspath)).startswith(_HERE + os.sep):
            item.add_marker(marker)
