"""longcat: the kernels and agentic-RL machinery of LongCat-Flash-Thinking.

Kernels are framework-free C++/CUDA (``longcat._C``, tensors cross as DLPack); ``longcat.ops``
wraps them as torch ops (registered with ``torch.library``, usable under ``torch.compile``),
with plain-torch references in ``longcat.ops.reference``.

The compiled module and torch are loaded on first use (``longcat.ops``, ``longcat.__version__``,
the functions below), so pure-Python parts such as ``longcat.envs`` import without them.
"""
from __future__ import annotations

import importlib
import os


def _kernels():
    return importlib.import_module("longcat._C")


def __getattr__(name: str):
    # PEP 562 lazy attributes: importing ``longcat.ops`` registers the torch ops
    if name in ("ops", "_C"):
        return importlib.import_module(f"longcat.{name}")
    if name == "__version__":
        return dict(_kernels().build_info())["version"]
    raise AttributeError(f"module 'longcat' has no attribute {name!r}")


def build_info() -> dict[str, str]:
    """What this build contains: version, cuda on/off, archs, CUTLASS and NCCL versions, ..."""
    return dict(_kernels().build_info())


def cmake_prefix_path() -> str:
    """The folder to put on ``CMAKE_PREFIX_PATH`` so that ``find_package(longcat CONFIG)`` finds
    the installed C++ package (target ``longcat::kernels``), like ``torch.utils.cmake_prefix_path``.
    """
    # Anchored on the compiled module, which sits beside lib/ in every install mode (wheel or
    # editable), unlike this file, which an editable install serves from the source tree.
    return os.path.join(os.path.dirname(os.path.abspath(_kernels().__file__)), "lib", "cmake")


def cpu_isa() -> str:
    """The CPU ISA level the kernels use now: scalar, avx2, avx512, avx512bf16 or amx."""
    return _kernels().cpu_isa_active()


_ISA_ORDER = ("scalar", "avx2", "avx512", "avx512bf16", "amx")


def cpu_isas_available() -> list[str]:
    """Every ISA level this CPU can run, lowest first: the values ``set_cpu_isa`` accepts."""
    return list(_ISA_ORDER[: _ISA_ORDER.index(_kernels().cpu_isa_detected()) + 1])


def set_cpu_isa(name: str) -> None:
    """Force a CPU ISA level no higher than the detected one (for testing / benchmarking each path).
    The environment variable ``LONGCAT_CPU_ISA`` does the same at start-up."""
    _kernels().set_cpu_isa(name)


def num_threads() -> int:
    """Threads the CPU kernels use (default: ``LONGCAT_NUM_THREADS`` or the CPUs available)."""
    return _kernels().num_threads()


def set_num_threads(n: int) -> None:
    _kernels().set_num_threads(n)


def thread_limit() -> int:
    """The calling thread's cap on CPU kernel threads (0: none; see ``set_thread_limit``)."""
    return _kernels().thread_limit()


def set_thread_limit(n: int) -> None:
    """Cap the threads of CPU kernels called from the calling thread only (0 removes the cap).
    A background copy thread sets 1 so that it owns one core while other threads compute."""
    _kernels().set_thread_limit(n)


__all__ = ["build_info", "cmake_prefix_path", "cpu_isa", "cpu_isas_available", "set_cpu_isa", "num_threads",
           "set_num_threads", "thread_limit", "set_thread_limit", "ops", "__version__"]
