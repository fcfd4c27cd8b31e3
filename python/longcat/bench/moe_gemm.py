"""Grouped expert SwiGLU GEMM benchmark: longcat.ops.moe_grouped_swiglu against
  - torch's dense bf16 matmul of EQUAL FLOPs, measured in the same run: one
    F.linear(x [R, H], W [3F, H]) (what the expert GEMMs would cost if all rows went to one big
    expert; nn.Linear's weight layout, which torch's CPU bf16 path handles ~40x faster than
    x @ W[H, 3F] on AVX2 machines), and
  - the per-expert loop as Hugging Face transformers' LongcatFlashExperts runs it
    (``reference.moe_grouped_swiglu``: F.linear / chunk / silu * up / F.linear per expert, same weights).

Every CPU ISA copy of the kernel (avx2, avx512, avx512bf16, and amx on CPUs with AMX: ``isa``
column) is measured in the same run against the same peers. Weight streaming (few rows per expert) is reported as GB/s of
the active experts' weights (+ x and out) and as a fraction of the copy bandwidth (``of_copy_bw``:
a 256 MB ``copy_``, bytes read + bytes written) and of the read bandwidth (``of_read_bw``: a
256 MB float32 ``sum``, bytes read only). The kernel only reads weights, so the read stream is
the like-for-like peer; the copy is the roofline the targets were set against. Compute-bound
shapes are reported as a fraction of the dense bf16 matmul. All peers (the dense matmul, the copy
and the read) are timed in alternation with each ISA copy (``measure_interleaved``), so that on a
shared machine the ratios compare calls made under the same load. Each timed call comes right
after untimed calls of the same function (at least one, for at least 30 ms on CPU:
``untimed_before``, ``untimed_min_s``): each is timed in its own steady state, as in a loop of
itself. Timed right after the previous function instead, our call
would share its cores with torch's OpenMP workers, which spin for milliseconds after every torch
op (5-10 ms of CPU burnt by the idle worker, measured): on the small shape, 2 threads, load
average 5, ours took 31.7 ms right after the dense peer, 26.5 ms after the read peer and 23.4 ms
after itself (23.0 ms after a 30 ms pause), while the dense peer took 19.7-20.3 ms in every
order.

Shapes: LongCat-Flash experts (H=6144, F=2048). The real layer has 512 routed experts (+256
zero-computation experts, top-12), whose weights alone are 75 GB in bf16, so the benchmark
holds FEWER experts of the SAME per-expert shape, with the same rows-per-expert distribution as
the real config: T tokens route uniformly at random to 12 of 768 experts, and the rows of the
first n experts are kept (about T * 12 / 768 rows per expert). Plus a small compute-bound shape.

TFLOP/s counts the expert GEMMs: 2 * R * H * 3F per call."""
from __future__ import annotations

import torch

from longcat.bench.common import (BenchResult, copy_bandwidth_gbs, cpu_isa_copies, machine_info, measure,
                                  measure_interleaved, using_isa)
from longcat.ops import moe_grouped_swiglu, reference

HIDDEN, INTER, TOPK, N_ROUTED, N_ZERO = 6144, 2048, 12, 512, 256
# CPU: untimed calls of the same function before each timed one last at least this long: torch's
# OpenMP workers spin 5-10 ms after an op, longer than one call of the shortest cases.
UNTIMED_MIN_S = 0.03


def routed_offsets(tokens: int, experts: int, seed: int = 0) -> torch.Tensor:
    """offsets [experts+1] int32: rows per expert for `tokens` tokens routed uniformly at random to
    TOPK of the N_ROUTED + N_ZERO experts, restricted to the first `experts` routed experts."""
    g = torch.Generator().manual_seed(seed)
    choice = torch.rand(tokens, N_ROUTED + N_ZERO, generator=g).topk(TOPK, dim=-1).indices
    counts = torch.bincount(choice.flatten(), minlength=N_ROUTED + N_ZERO)[:experts]
    return torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)]).to(torch.int32)


def run(device: str = "cpu", quick: bool = False) -> BenchResult:
    cuda = device.startswith("cuda")
    dtype = torch.bfloat16
    # Experts held in memory: 75.5 MB of bf16 weights each at the LongCat shape.
    experts = 64 if cuda else (4 if quick else 16)
    # 4096 tokens: 64 rows per expert, the compute-bound end of the LongCat shape.
    token_counts = [128] if quick else [16, 128, 512, 4096]
    min_time = 0.05 if quick else (0.2 if cuda else 0.3)
    # Copy bandwidth: measured once up front for the context, and per row as a peer timed in
    # alternation with the kernel (a 256 MB copy, far larger than the caches) for of_copy_bw.
    bw_start = copy_bandwidth_gbs(device, quick)
    copy_src = torch.ones(64 << 20 if quick else 256 << 20, dtype=torch.uint8, device=device)
    copy_dst = torch.empty_like(copy_src)
    read_src = torch.ones(copy_src.numel() // 4, dtype=torch.float32, device=device)
    isas = cpu_isa_copies(device, has_amx_copy=True)
    cases = [("longcat", HIDDEN, INTER, experts, t, None) for t in token_counts]
    # Small, compute-bound: 8 experts of H=1024, F=512 with 256 rows each.
    cases.append(("small", 1024, 512, 8, None, 256))
    result = BenchResult(
        area="moe_gemm",
        title=(f"Grouped expert SwiGLU GEMM on {device}, bf16 (LongCat shape H={HIDDEN}, F={INTER}: "
               f"{experts} of the 512 experts held, same rows-per-expert distribution as top-{TOPK} "
               f"of {N_ROUTED}+{N_ZERO} uniform routing)"),
        columns=["shape", "isa", "experts", "tokens", "rows", "rows/expert", "longcat_ms", "TFLOP/s", "GB/s",
                 "of_copy_bw", "of_read_bw", "dense_TFLOP/s", "of_dense", "loop_ms", "vs_loop"],
        context={"machine": machine_info(device), "copy_bandwidth_gbs": bw_start, "isas": isas,
                 "note": "dense = torch bf16 F.linear([R, H], [3F, H]) of the same FLOPs, timed in alternation "
                         "with each ISA copy (medians); "
                         "loop = the per-expert loop as transformers runs it (reference.moe_grouped_swiglu); "
                         "vs_loop = loop_ms / longcat_ms; GB/s = (active experts' weights + x + out) / time, "
                         "of_copy_bw = GB/s / the copy bandwidth (read + written) of a 256 MB copy_, of_read_bw = GB/s / the read "
                         "bandwidth of a 256 MB float32 sum, both timed in alternation with the kernel; every timed call "
                         "right after an untimed call of itself (steady state, not inside the previous "
                         "function's spinning OpenMP workers)"},
    )
    weights_cache: dict = {}
    for name, H, F, E, tokens, rows_each in cases:
        key = (H, F, E)
        if key not in weights_cache:
            weights_cache.clear()
            g = torch.Generator(device=device).manual_seed(0)
            w13 = (torch.randn(E, 2 * F, H, device=device, generator=g, dtype=dtype) * H ** -0.5)
            w2 = (torch.randn(E, H, F, device=device, generator=g, dtype=dtype) * F ** -0.5)
            weights_cache[key] = (w13, w2)
        w13, w2 = weights_cache[key]
        if rows_each is None:
            offsets = routed_offsets(tokens, E)
        else:
            offsets = torch.arange(E + 1, dtype=torch.int32) * rows_each
        R = int(offsets[-1])
        offsets = offsets.to(device)
        x = torch.randn(R, H, device=device, dtype=dtype)
        dense_w = torch.randn(3 * F, H, device=device, dtype=dtype) * H ** -0.5
        flops = 2.0 * R * H * 3 * F
        # CPU calls take up to seconds: fewer repeats there (medians of >= 2 timed calls).
        kw = {} if cuda else {"warmup": 1, "min_iters": 2}
        dense = lambda: torch.nn.functional.linear(x, dense_w)  # noqa: E731
        t_loop = measure(lambda: reference.moe_grouped_swiglu(x, offsets, w13, w2), device, min_time, **kw)
        active = int((offsets[1:] > offsets[:-1]).sum())
        nbytes = (active * 3 * F * H + 2 * R * H) * x.element_size()
        for isa in isas:
            with using_isa(isa):
                # The dense peer in alternation with each copy: same load on a shared machine.
                t_ours, t_dense, t_copy, t_read = measure_interleaved(
                    [lambda: moe_grouped_swiglu(x, offsets, w13, w2), dense, lambda: copy_dst.copy_(copy_src),
                     lambda: read_src.sum()],
                    device, min_time, min_rounds=3 if cuda else 5, untimed_before=1,
                    untimed_min_s=0.0 if cuda else UNTIMED_MIN_S)
            gbs = nbytes / t_ours / 1e9
            bw = 2 * copy_src.numel() / t_copy / 1e9
            read_bw = read_src.numel() * read_src.element_size() / t_read / 1e9
            result.add(shape=f"{name} H={H} F={F}", isa=isa, experts=E,
                       tokens=tokens if tokens is not None else "-", rows=R,
                       **{"rows/expert": R / E, "longcat_ms": t_ours * 1e3, "TFLOP/s": flops / t_ours / 1e12,
                          "GB/s": gbs, "of_copy_bw": gbs / bw, "of_read_bw": gbs / read_bw,
                          "copy_GB/s": bw, "read_GB/s": read_bw, "dense_TFLOP/s": flops / t_dense / 1e12,
                          "of_dense": t_dense / t_ours, "loop_ms": t_loop * 1e3, "vs_loop": t_loop / t_ours},
                       active_experts=active)
        del dense_w
    return result


def main(argv: list[str] | None = None) -> None:
    from longcat.cli import main as cli_main

    cli_main(["bench", "moe_gemm", *(argv or [])])
