"""Timing, the machine's copy bandwidth, and the table + JSON every benchmark writes."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(fn: Callable[[], object], device: str = "cpu", min_time: float = 0.2,
            warmup: int = 3, max_iters: int = 2000, min_iters: int = 5) -> float:
    """Median seconds per call of fn over repeated runs (at least min_iters, about min_time)."""
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
    return statistics.median(times)


def copy_bandwidth_gbs(device: str = "cpu", quick: bool = False) -> float:
    """The machine's copy bandwidth in GB/s (bytes read + bytes written), measured now with
    torch's copy_ on buffers far larger than the caches: the roofline for memory-bound ops.
    ``quick`` (smoke runs) uses smaller buffers and a shorter measurement."""
    nbytes, min_time = ((64 << 20), 0.1) if quick else ((256 << 20), 0.5)
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    t = measure(lambda: dst.copy_(src), device, min_time=min_time, warmup=2)
    return 2 * nbytes / t / 1e9


# The CPU kernel copies with their own code; "amx" runs the avx512bf16 copy, "scalar" is the
# portable fallback (far slower, tested but not benchmarked).
_BENCH_ISAS = ("avx2", "avx512", "avx512bf16")


def cpu_isa_copies(device: str = "cpu") -> list[str]:
    """The CPU ISA copies a benchmark measures side by side, lowest first: every SIMD copy this
    CPU runs, or only the active one when LONGCAT_CPU_ISA pins it (or off the CPU)."""
    import longcat

    if not device.startswith("cpu") or os.environ.get("LONGCAT_CPU_ISA"):
        return [longcat.cpu_isa()]
    return [i for i in longcat.cpu_isas_available() if i in _BENCH_ISAS] or [longcat.cpu_isa()]


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
