"""longcat: the kernels and agentic-RL machinery of LongCat-Flash-Thinking.

Kernels are framework-free C++/CUDA (``longcat._C``, tensors cross as DLPack); ``longcat.ops``
wraps them as torch ops (registered with ``torch.library``, usable under ``torch.compile``),
with plain-torch references in ``longcat.ops.reference``.
"""
from __future__ import annotations

import os

from longcat import _C

__version__: str = dict(_C.build_info())["version"]


def build_info() -> dict[str, str]:
    """What this build contains: version, cuda on/off, archs, CUTLASS and NCCL versions, ..."""
    return dict(_C.build_info())


def cmake_prefix_path() -> str:
    """The folder to put on ``CMAKE_PREFIX_PATH`` so that ``find_package(longcat CONFIG)`` finds
    the installed C++ package (target ``longcat::kernels``), like ``torch.utils.cmake_prefix_path``.
    """
    # Anchored on the compiled module, which sits beside lib/ in every install mode (wheel or
    # editable), unlike this file, which an editable install serves from the source tree.
    return os.path.join(os.path.dirname(os.path.abspath(_C.__file__)), "lib", "cmake")


def cpu_isa() -> str:
    """The CPU ISA level the kernels use now: scalar, avx2, avx512, avx512bf16 or amx."""
    return _C.cpu_isa_active()


_ISA_ORDER = ("scalar", "avx2", "avx512", "avx512bf16", "amx")


def cpu_isas_available() -> list[str]:
    """Every ISA level this CPU can run, lowest first: the values ``set_cpu_isa`` accepts."""
    return list(_ISA_ORDER[: _ISA_ORDER.index(_C.cpu_isa_detected()) + 1])


def set_cpu_isa(name: str) -> None:
    """Force a CPU ISA level no higher than the detected one (for testing / benchmarking each path).
    The environment variable ``LONGCAT_CPU_ISA`` does the same at start-up."""
    _C.set_cpu_isa(name)


def num_threads() -> int:
    """Threads the CPU kernels use (default: ``LONGCAT_NUM_THREADS`` or the CPUs available)."""
    return _C.num_threads()


def set_num_threads(n: int) -> None:
    _C.set_num_threads(n)


from longcat import ops  # noqa: E402  (registers the torch ops)

__all__ = ["build_info", "cmake_prefix_path", "cpu_isa", "cpu_isas_available", "set_cpu_isa", "num_threads",
           "set_num_threads", "ops", "__version__"]
