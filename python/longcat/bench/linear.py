"""Skinny linear benchmark: longcat's weight-streaming ``ops.linear`` against torch's
``F.linear`` (its oneDNN / MKL GEMM) and the plain-torch reference, measured in the same run,
on the ``small`` preset's decode GEMMs and one LongCat-Flash-sized matrix, at the row counts of
decode batches (1-32) and one prefill size.

GB/s is the weight bytes the kernel reads per call over its median time, against the machine's
copy bandwidth measured in the same run (a matrix that fits in the caches can exceed it). The
SIMD copies (avx2, avx512, avx512bf16) are measured side by side at one shape.

dtype: ``LONGCAT_BENCH_DTYPE`` (bfloat16 by default, or float32), as ``longcat bench engine``.
Besides the wall-time medians, longcat and its peer are timed taking turns in process CPU time
(``*_cpu_us``, ``vs_F.linear_cpu``): what a call costs whatever else the shared cores run. And
once more with cold weights (``*_cold_cpu_us``, ``vs_F.linear_cold``): each call reads the next of
enough copies of the weight to span twice a 32 MiB L3, as a decode step reads each of the model's
matrices once (a hot weight favours torch's fp32 GEMV at 1 row; cold it is the other way round).
The cold ratio is the one that decides where the model uses the kernel. The per-head matrices (MLA's
absorption, ``[heads, N, K]``) take x as the model passes it, a transposed ``[heads, M, K]`` view,
and their peer is ``torch.bmm``."""
from __future__ import annotations

import itertools
import os
import time

import torch
import torch.nn.functional as F

import longcat
from longcat.bench.common import (BenchResult, copy_bandwidth_gbs, cpu_isa_copies, machine_info, measure,
                                  measure_interleaved)
from longcat.ops import linear, reference

# (name, groups, N, K): the small preset's fused q_a + kv_a, q_b, MLA's per-head absorption
# (kv_b's key half [heads, 512, nope] and value half [heads, v, 512]), o, gate + up, down,
# lm_head; a LongCat-Flash-sized projection (hidden 6144 -> q_lora 1536).
SHAPES = [("w_a", 1, 832, 512), ("q_b", 1, 512, 256), ("uk per head", 4, 512, 64), ("uv per head", 4, 64, 512),
          ("o", 1, 512, 256), ("gate+up", 1, 2048, 512), ("down", 1, 512, 1024), ("lm_head", 1, 4096, 512),
          ("560B q_a", 1, 1536, 6144)]
QUICK_SHAPES = [("gate+up", 1, 2048, 512), ("uk per head", 4, 512, 64), ("lm_head", 1, 4096, 512)]
ROWS = [1, 2, 4, 8, 16, 32, 128]
COLD_BYTES = 64 << 20  # weight copies cycled through by the cold timings: twice a 32 MiB L3
QUICK_ROWS = [1, 8, 32]


def run(device: str = "cpu", quick: bool = False) -> BenchResult:
    if device != "cpu":
        raise ValueError(f"bench linear: the kernel is CPU only, got device {device!r}")
    min_time = 0.05 if quick else 0.2
    bw = copy_bandwidth_gbs(device, quick)
    name = os.environ.get("LONGCAT_BENCH_DTYPE", "bfloat16")
    dtype = getattr(torch, name, None)
    if dtype not in (torch.bfloat16, torch.float32):
        raise ValueError(f"bench linear: LONGCAT_BENCH_DTYPE must be bfloat16 or float32, got {name!r}")
    dname = str(dtype).replace("torch.", "")
    result = BenchResult(
        area="linear",
        title=(f"Skinny linear ({dname}, {longcat.num_threads()} thread(s), {longcat.cpu_isa()}): "
               f"longcat vs F.linear (median per call; copy bandwidth {bw:.1f} GB/s)"),
        columns=["matrix", "rows", "G", "N", "K", "longcat_us", "F.linear_us", "reference_us", "vs_F.linear",
                 "longcat_cpu_us", "F.linear_cpu_us", "vs_F.linear_cpu", "longcat_cold_cpu_us",
                 "F.linear_cold_cpu_us", "vs_F.linear_cold", "vs_reference", "GB/s", "of_copy_bw"],
        context={"machine": machine_info(device), "copy_bandwidth_gbs": bw, "dtype": dname,
                 "torch_threads": torch.get_num_threads(),
                 "cold": ("2 weight copies (--quick: not cold)" if quick
                          else f"weight copies spanning {COLD_BYTES >> 20} MiB")})
    g = torch.Generator().manual_seed(0)
    for mat, G, N, K in (QUICK_SHAPES if quick else SHAPES):
        shape = (N, K) if G == 1 else (G, N, K)
        w = (torch.randn(*shape, generator=g) * 0.05).to(dtype)
        n_copies = 2 if quick else max(2, COLD_BYTES // (w.numel() * w.element_size()))
        w_copies = [w] + [w.clone() for _ in range(n_copies - 1)]
        for M in (QUICK_ROWS if quick else ROWS):
            if G == 1:
                x = torch.randn(M, K, generator=g).to(dtype)
            else:  # [M, heads, K] rows seen per head, as MLA's decode projects q_nope
                x = torch.randn(M, G, K, generator=g).to(dtype).transpose(0, 1)

            def ours(x=x, w=w):
                return linear(x, w)

            def peer(x=x, w=w):
                return F.linear(x, w) if w.dim() == 2 else torch.bmm(x, w.transpose(1, 2))

            # Cold: each side walks the copies, half the copies apart, so the copy a call reads
            # was last read a full L3's worth of weights ago.
            mine_at, peer_at = itertools.cycle(range(n_copies)), itertools.cycle(range(n_copies))
            for _ in range(n_copies // 2):
                next(peer_at)

            def ours_cold(x=x, at=mine_at):
                return ours(x, w_copies[next(at)])

            def peer_cold(x=x, at=peer_at):
                return peer(x, w_copies[next(at)])

            t_ours = measure(ours, device, min_time)
            t_torch = measure(peer, device, min_time)
            t_ref = measure(lambda: reference.linear(x, w), device, min_time)
            c_ours, c_torch = measure_interleaved([ours, peer], device, min_time, clock=time.process_time)
            cold_ours, cold_torch = measure_interleaved([ours_cold, peer_cold], device, min_time,
                                                        clock=time.process_time)
            gbs = w.numel() * w.element_size() / t_ours / 1e9
            result.add(matrix=mat, rows=M, G=G, N=N, K=K, longcat_us=t_ours * 1e6, **{"F.linear_us": t_torch * 1e6},
                       reference_us=t_ref * 1e6, **{"vs_F.linear": t_torch / t_ours}, longcat_cpu_us=c_ours * 1e6,
                       **{"F.linear_cpu_us": c_torch * 1e6, "vs_F.linear_cpu": c_torch / c_ours},
                       longcat_cold_cpu_us=cold_ours * 1e6, **{"F.linear_cold_cpu_us": cold_torch * 1e6},
                       **{"vs_F.linear_cold": cold_torch / cold_ours},
                       vs_reference=t_ref / t_ours, **{"GB/s": gbs}, of_copy_bw=gbs / bw)
    # The ISA copies side by side on one decode shape.
    w = (torch.randn(2048, 512, generator=g) * 0.05).to(dtype)
    x = torch.randn(8, 512, generator=g).to(dtype)
    t_torch = measure(lambda: F.linear(x, w), device, min_time)
    before = longcat.cpu_isa()
    copies = {}
    try:
        for isa in cpu_isa_copies(device):
            longcat.set_cpu_isa(isa)
            copies[isa] = round(measure(lambda: linear(x, w), device, min_time) * 1e6, 1)
    finally:
        longcat.set_cpu_isa(before)
    result.context["isa_copies_us_gate+up_8_rows"] = copies
    result.context["F.linear_us_gate+up_8_rows"] = round(t_torch * 1e6, 1)
    return result


if __name__ == "__main__":
    import sys

    from longcat.bench.common import report

    report(run(quick="--quick" in sys.argv))
