"""Skinny linear benchmark: longcat's weight-streaming ``ops.linear`` against torch's
``F.linear`` (its oneDNN / MKL GEMM) and the plain-torch reference, measured in the same run,
on the ``small`` preset's decode GEMMs and one LongCat-Flash-sized matrix, at the row counts of
decode batches (1-32) and one prefill size.

GB/s is the weight bytes the kernel reads per call over its median time, against the machine's
copy bandwidth measured in the same run (a matrix that fits in the caches can exceed it). The
SIMD copies (avx2, avx512, avx512bf16) are measured side by side at one shape."""
from __future__ import annotations

import torch
import torch.nn.functional as F

import longcat
from longcat.bench.common import BenchResult, copy_bandwidth_gbs, cpu_isa_copies, machine_info, measure
from longcat.ops import linear, reference

# (name, N, K): the small preset's fused q_a + kv_a, q_b, o, gate + up, down, lm_head; a
# LongCat-Flash-sized projection (hidden 6144 -> q_lora 1536).
SHAPES = [("w_a", 832, 512), ("q_b", 512, 256), ("o", 512, 256), ("gate+up", 2048, 512),
          ("down", 512, 1024), ("lm_head", 4096, 512), ("560B q_a", 1536, 6144)]
QUICK_SHAPES = [("gate+up", 2048, 512), ("lm_head", 4096, 512)]
ROWS = [1, 4, 8, 16, 32, 128]
QUICK_ROWS = [1, 8, 32]


def run(device: str = "cpu", quick: bool = False) -> BenchResult:
    if device != "cpu":
        raise ValueError(f"bench linear: the kernel is CPU only, got device {device!r}")
    min_time = 0.05 if quick else 0.2
    bw = copy_bandwidth_gbs(device, quick)
    dtype = torch.bfloat16
    result = BenchResult(
        area="linear",
        title=(f"Skinny linear (bf16, {longcat.num_threads()} thread(s), {longcat.cpu_isa()}): "
               f"longcat vs F.linear (median per call; copy bandwidth {bw:.1f} GB/s)"),
        columns=["matrix", "rows", "N", "K", "longcat_us", "F.linear_us", "reference_us", "vs_F.linear",
                 "vs_reference", "GB/s", "of_copy_bw"],
        context={"machine": machine_info(device), "copy_bandwidth_gbs": bw, "dtype": "bfloat16"})
    g = torch.Generator().manual_seed(0)
    for name, N, K in (QUICK_SHAPES if quick else SHAPES):
        w = (torch.randn(N, K, generator=g) * 0.05).to(dtype)
        for M in (QUICK_ROWS if quick else ROWS):
            x = torch.randn(M, K, generator=g).to(dtype)
            t_ours = measure(lambda: linear(x, w), device, min_time)
            t_torch = measure(lambda: F.linear(x, w), device, min_time)
            t_ref = measure(lambda: reference.linear(x, w), device, min_time)
            gbs = N * K * 2 / t_ours / 1e9
            result.add(matrix=name, rows=M, N=N, K=K, longcat_us=t_ours * 1e6, **{"F.linear_us": t_torch * 1e6},
                       reference_us=t_ref * 1e6, **{"vs_F.linear": t_torch / t_ours}, vs_reference=t_ref / t_ours,
                       **{"GB/s": gbs}, of_copy_bw=gbs / bw)
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
