"""Timing, the machine's copy bandwidth, the table + JSON every benchmark writes, and the
per-case profiler traces of ``longcat bench <area> --profile DIR``."""
from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import torch


class _TraceRecorder:
    """Profiles each function `measure` times (2 more calls under torch.profiler, CPU + CUDA
    activities, input shapes) and writes one Chrome/Perfetto trace per function; `BenchResult.add`
    names the case's traces after its row (<area>_<case>_<first columns>_<n>.json) and lists them
    in the row's ``trace`` field."""

    CALLS = 2

    def __init__(self, out_dir: str, area: str):
        self.out_dir, self.area = out_dir, area
        self.case = 0
        self.pending: list[str] = []
        os.makedirs(out_dir, exist_ok=True)

    def capture(self, fn: Callable[[], object], device: str) -> None:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
        with profile(activities=activities, record_shapes=True) as prof:
            for _ in range(self.CALLS):
                fn()
            sync(device)
        path = os.path.join(self.out_dir, f".pending_{len(self.pending)}.json")
        prof.export_chrome_trace(path)
        self.pending.append(path)

    def finish_case(self, row: dict, columns: list[str]) -> None:
        self.case += 1
        slug = re.sub(r"[^A-Za-z0-9.]+", "-", "_".join(str(row.get(c, "")) for c in columns[:3])).strip("-")
        names = []
        for i, path in enumerate(self.pending, 1):
            name = f"{self.area}_{self.case:02d}_{slug[:60]}_{i}.json"
            os.replace(path, os.path.join(self.out_dir, name))
            names.append(name)
        self.pending = []
        row["trace"] = names


_recorder: Optional[_TraceRecorder] = None


@contextlib.contextmanager
def profiling(out_dir: Optional[str], area: str) -> Iterator[None]:
    """While active (out_dir not None), every measured function also leaves a profiler trace in
    out_dir, grouped by benchmark case (``longcat bench <area> --profile DIR``)."""
    global _recorder
    if out_dir is None:
        yield
        return
    _recorder = _TraceRecorder(out_dir, area)
    try:
        yield
    finally:
        _recorder = None


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(fn: Callable[[], object], device: str = "cpu", min_time: float = 0.2,
            warmup: int = 3, max_iters: int = 2000, min_iters: int = 5, trace: bool = True) -> float:
    """Median seconds per call of fn over repeated runs (at least min_iters, about min_time).
    Under ``profiling`` (and with trace=True) fn then runs twice more under the profiler."""
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    start = time.perf_counter()
    cuda = device.startswith("cuda")
    while len(times) < max_iters and (len(times) < min_iters or time.perf_counter() - start < min_time):
        if cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    if trace and _recorder is not None:
        _recorder.capture(fn, device)
    return statistics.median(times)


def measure_interleaved(fns: list[Callable[[], object]], device: str = "cpu", min_time: float = 0.2,
                        warmup: int = 1, min_rounds: int = 3, max_rounds: int = 2000,
                        clock: Callable[[], float] = time.perf_counter,
                        rounds: Optional[list] = None,
                        before_each: Optional[Callable[[], object]] = None,
                        untimed_before: int = 0, untimed_min_s: float = 0.0) -> list[float]:
    """Median seconds per call of each of fns, timed in alternation (one call of each per round,
    at least min_rounds rounds, about min_time of wall time in all): on a shared machine a kernel
    and its peer then see the same load, so their ratio is not the load's drift between two
    measure() calls. ``clock``: wall time by default; ``time.process_time`` counts the CPU time
    of the process's threads instead (what a call costs, whatever else the cores run).
    ``rounds``, if given, receives each round's times (a list per round, in fns' order).
    ``before_each``, if given, runs untimed before every timed call (e.g. to leave the caches in
    the same state for every function). ``untimed_before`` calls of the same function run right
    before each timed call (after before_each): each function is then timed in its own steady
    state, as in a loop of itself, and not right after the previous function, whose idle worker
    threads may still hold the cores (torch's OpenMP workers spin for milliseconds after an op).
    ``untimed_min_s``: those untimed calls go on until they have taken at least this long (a
    short call needs several to outlast the previous function's spinning workers)."""
    if untimed_before < 0:
        raise ValueError(f"measure_interleaved: argument 'untimed_before' must be >= 0, got {untimed_before}")
    if not untimed_min_s >= 0:
        raise ValueError(f"measure_interleaved: argument 'untimed_min_s' must be >= 0, got {untimed_min_s}")
    for fn in fns:
        for _ in range(warmup):
            fn()
    sync(device)
    times: list[list[float]] = [[] for _ in fns]
    start = time.perf_counter()
    n_rounds = 0
    while n_rounds < max_rounds and (n_rounds < min_rounds or time.perf_counter() - start < min_time):
        for fn, ts in zip(fns, times):
            if before_each is not None:
                before_each()
                sync(device)
            u0, n_untimed = time.perf_counter(), 0
            while n_untimed < untimed_before or (n_untimed and time.perf_counter() - u0 < untimed_min_s):
                fn()
                sync(device)
                n_untimed += 1
            t0 = clock()
            fn()
            sync(device)
            ts.append(clock() - t0)
        n_rounds += 1
    if rounds is not None:
        rounds.extend(list(r) for r in zip(*times))
    if _recorder is not None:
        for fn in fns:
            _recorder.capture(fn, device)
    return [statistics.median(ts) for ts in times]


def copy_bandwidth_gbs(device: str = "cpu", quick: bool = False) -> float:
    """The machine's copy bandwidth in GB/s (bytes read + bytes written), measured now with
    torch's copy_ on buffers far larger than the caches: the roofline for memory-bound ops.
    ``quick`` (smoke runs) uses smaller buffers and a shorter measurement."""
    nbytes, min_time = ((64 << 20), 0.1) if quick else ((256 << 20), 0.5)
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    t = measure(lambda: dst.copy_(src), device, min_time=min_time, warmup=2, trace=False)
    return 2 * nbytes / t / 1e9


# The CPU kernel copies with their own code; "amx" runs the avx512bf16 copy except for the kernels
# with an AMX copy (has_amx_copy), "scalar" is the portable fallback (far slower, tested but not
# benchmarked).
_BENCH_ISAS = ("avx2", "avx512", "avx512bf16")


def cpu_isa_copies(device: str = "cpu", has_amx_copy: bool = False) -> list[str]:
    """The CPU ISA copies a benchmark measures side by side, lowest first: every SIMD copy this
    CPU runs (with "amx" where the kernel has an AMX copy), or only the active one when
    LONGCAT_CPU_ISA pins it (or off the CPU)."""
    import longcat

    if not device.startswith("cpu") or os.environ.get("LONGCAT_CPU_ISA"):
        return [longcat.cpu_isa()]
    wanted = _BENCH_ISAS + (("amx",) if has_amx_copy else ())
    return [i for i in longcat.cpu_isas_available() if i in wanted] or [longcat.cpu_isa()]


@contextmanager
def using_isa(name: str | None) -> Iterator[None]:
    """Runs the block with the CPU kernels' ISA level set to `name`, then restores it (None:
    leaves the level alone)."""
    import longcat

    if name is None:
        yield
        return
    prev = longcat.cpu_isa()
    longcat.set_cpu_isa(name)
    try:
        yield
    finally:
        longcat.set_cpu_isa(prev)


@contextmanager
def using_threads(n: int) -> Iterator[None]:
    """Runs the block with torch and longcat on n CPU threads, then restores both counts."""
    import longcat

    prev_torch, prev_longcat = torch.get_num_threads(), longcat.num_threads()
    torch.set_num_threads(n)
    longcat.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev_torch)
        longcat.set_num_threads(prev_longcat)


def machine_info(device: str) -> dict:
    import longcat

    info = {
        "device": device,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_isa": longcat.cpu_isa(),
        "longcat_threads": longcat.num_threads(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "longcat": longcat.__version__,
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


@dataclass
class BenchResult:
    area: str
    title: str
    columns: list[str]
    rows: list[dict] = field(default_factory=list)
    context: dict = field(default_factory=dict)  # machine, peers' roofline numbers, notes

    def add(self, **row) -> None:
        if _recorder is not None:
            _recorder.finish_case(row, self.columns)
        self.rows.append(row)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def report(result: BenchResult, out_dir: str | None = None) -> str:
    """Prints the table (rich) and writes <out_dir>/<area>.json and .md; returns the JSON path."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=result.title)
    for c in result.columns:
        table.add_column(c, justify="right")
    for row in result.rows:
        table.add_row(*(_fmt(row.get(c, "")) for c in result.columns))
    console = Console(width=200)
    console.print(table)
    for k, v in result.context.items():
        if not isinstance(v, dict):
            console.print(f"  {k}: {_fmt(v)}")

    out_dir = out_dir or os.environ.get("LONGCAT_BENCH_DIR", "bench-results")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{result.area}.json")
    with open(path, "w") as f:
        json.dump({"area": result.area, "title": result.title, "columns": result.columns,
                   "context": result.context, "rows": result.rows}, f, indent=2)
    md = ["| " + " | ".join(result.columns) + " |", "|" + "---|" * len(result.columns)]
    md += ["| " + " | ".join(_fmt(r.get(c, "")) for c in result.columns) + " |" for r in result.rows]
    with open(os.path.join(out_dir, f"{result.area}.md"), "w") as f:
        f.write(f"## {result.title}\n\n" + "\n".join(md) + "\n")
    console.print(f"  wrote {path}")
    return path


def finish_plot(fig, ax, title: str, path: str) -> None:
    """Titles (wrapped), grids and writes a bench's matplotlib figure to ``path``, then closes it."""
    import textwrap

    import matplotlib.pyplot as plt

    ax.set_title("\n".join(textwrap.wrap(title, 90)), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
