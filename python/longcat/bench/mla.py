"""Attention benchmark: MLA decode over the paged latent cache, MLA prefill, streaming sparse
attention (SSA) decode and prefill, and the Zig-Zag per-token decode estimate.

Peers, measured in the same run:
- MLA decode on CUDA, at FlashMLA's benchmark shape (batch 128, 64 or 128 query heads, s_q 1 or
  2, 4K+ context): FlashMLA's published H800 SXM5 numbers, 3000 GB/s memory-bound and 660 TFLOP/s
  compute-bound (its README; compute-bound once h_q * s_q >= 128 per its deep dive), with its
  byte count b * (Q + S * 576 * 2 + O). An H200 has 1.4x the H800's memory bandwidth (4.8 vs
  3.35 TB/s) and the same bf16 peak, so the GB/s ratio flatters us by up to 1.4x.
- MLA decode: the plain-torch path users write (gather the pages, then one
  ``scaled_dot_product_attention`` call whose query rows all share the one latent KV head), and
  the roofline ``max(KV bytes / copy bandwidth, FLOPs / compute peak)``, both measured now: the
  copy bandwidth with torch's copy_, the compute peak with ``_C.cpu_peak_gflops``: loops of
  independent fp32 FMAs ("fma") or vdpbf16ps ("bf16dot") on all kernel threads with the row's
  ISA copy, weighted by the kernels' instruction mix (the avx512bf16 copy computes Q K^T with
  vdpbf16ps and P V with fp32 FMAs; the other copies use fp32 FMAs throughout): a true roof,
  which a kernel of that mix cannot pass (up to measurement noise). torch's bf16 / fp32 matmul throughput, which the
  kernels can beat, is kept in the JSON for reference only (and is the roof on GPU).
  FLOPs per query head and key: 2 * (576 + 512); bytes: the KV pages read (576 values per token).
- MLA prefill: ``scaled_dot_product_attention(is_causal=True)`` per sequence, and of_roofline =
  the compute time at the same measured peaks / time.
The MLA decode and prefill rows are repeated for every CPU ISA copy (``isa`` column); the SSA
rows use the active copy.
- SSA prefill: ``torch.compile``d FlexAttention with the same sink + local block mask (compile
  time excluded), and full causal SDPA.
- SSA decode: MLA decode at the same context (the "cost does not grow" claim).
- Zig-Zag: per-token decode cost of a stack of 56 attention sublayers (LongCat-Flash) with half
  of them SSA, from the measured per-layer times, against all-MLA.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import longcat
from longcat import _C
from longcat.bench.common import BenchResult, copy_bandwidth_gbs, cpu_isa_copies, machine_info, measure, using_isa
from longcat.ops import SsaWindow, mla_decode, mla_decode_metadata, mla_prefill, ssa_decode, ssa_prefill
from longcat.ops.mla_prefill import ssa_block_mask

H_Q, D_QK, D_V, PAGE = 64, 576, 512, 64
SINK_BLOCKS, LOCAL_BLOCKS, BLOCK = 1, 7, 128
SUBLAYERS = 56  # LongCat-Flash: 28 layers x 2 attention sublayers
FLASHMLA_H800_GBS, FLASHMLA_H800_TFLOPS = 3000.0, 660.0  # FlashMLA README, dense decode on H800 SXM5


def matmul_tflops(device: str, quick: bool) -> dict:
    """Throughput of torch's bf16 and fp32 matmul at a large square shape (reference only)."""
    n = 1024 if quick else 2048
    out = {}
    for dt in (torch.bfloat16, torch.float32):
        a = torch.randn(n, n, device=device).to(dt)
        b = torch.randn(n, n, device=device).to(dt)
        t = measure(lambda: a @ b, device, min_time=0.1 if quick else 0.3, min_iters=3, trace=False)
        out[str(dt).replace("torch.", "")] = 2 * n ** 3 / t / 1e12
    return out


def paged(batch: int, context: int, device: str, dtype=torch.bfloat16, seed: int = 0):
    """A cache holding `batch` sequences of `context` tokens in permuted pages."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    pages_per = (context + PAGE - 1) // PAGE
    kv = (torch.randn(batch * pages_per, PAGE, 1, D_QK, generator=g) * 0.5).to(dtype).to(device)
    table = torch.randperm(batch * pages_per, generator=g).to(torch.int32).view(batch, pages_per).to(device)
    lens = torch.full((batch,), context, dtype=torch.int32, device=device)
    return kv, table, lens


def torch_decode(q, kv, table, lens, scale):
    """Gather the pages, then one SDPA call in which the b's s_q * h_q query rows share the one
    latent KV head (no per-head copy of the cache), as an absorbed-MLA decode is written in torch.
    Single-token decode only (s_q = 1: no mask among new tokens)."""
    b, s_q, h, _ = q.shape
    L = int(lens[0])
    keys = kv[table.long()].reshape(b, -1, D_QK)[:, :L]                    # [b, L, 576]
    k = keys[:, None]                                                         # [b, 1, L, 576]
    v = keys[:, None, :, :D_V]
    out = F.scaled_dot_product_attention(q.reshape(b, 1, s_q * h, D_QK), k, v, scale=scale)
    return out.view(b, s_q, h, D_V)


def compute_peaks(device: str, isas: list[str]) -> dict:
    """Per ISA copy, the measured peak TFLOP/s of each instruction mix it has: {"fma": ...,
    "bf16dot": ...} (bf16dot on avx512bf16 only). Empty off the CPU."""
    if not device.startswith("cpu"):
        return {}
    # The best of a few calls: on a shared machine (or one whose vCPUs may share a physical
    # core) a call may run while other work holds a core. A copy can run every narrower copy's
    # instructions, so its FMA roof is the best of its own and the lower copies' measurements.
    peaks: dict = {}
    best_fma = 0.0
    for isa in isas:
        with using_isa(isa):
            mixes = ["fma", "bf16dot"] if isa in ("avx512bf16", "amx") else ["fma"]
            peaks[isa] = {m: max(_C.cpu_peak_gflops(m) for _ in range(3)) / 1e3 for m in mixes}
        best_fma = max(best_fma, peaks[isa]["fma"])
        peaks[isa]["fma"] = best_fma
    return peaks


def _roof_s(nbytes: float, compute_s: float, bw: float) -> float:
    return max(nbytes / (bw * 1e9), compute_s)


def compute_s(flops_qk: float, flops_pv: float, peak: dict) -> float:
    """Seconds at the compute peak of the attention kernels' mix on bf16 data: Q K^T on vdpbf16ps
    where the copy has it (decode: > 4 query rows per sequence), P V on fp32 FMAs."""
    return flops_qk / (peak.get("bf16dot", peak["fma"]) * 1e12) + flops_pv / (peak["fma"] * 1e12)


def bench_decode(result, device, quick, bw, peaks, min_time):
    batches, contexts = ([1, 8], [1024, 8192]) if quick else ([1, 8, 32], [1024, 8192, 32768])
    scale = 192 ** -0.5
    for b in batches:
        for L in contexts:
            kv, table, lens = paged(b, L, device)
            q = torch.randn(b, 1, H_Q, D_QK, device=device).to(kv.dtype)
            md = mla_decode_metadata(lens, 1)
            ours = lambda: mla_decode(q, kv, table, lens, D_V, scale, True, md)  # noqa: E731
            peer = lambda: torch_decode(q, kv, table, lens, scale)  # noqa: E731
            want = peer().float()
            big = b * L >= 256 * 1024
            tp = measure(peer, device, min_time, min_iters=2 if big else 5, warmup=1 if big else 3)
            nbytes = b * L * D_QK * kv.element_size()
            flops_qk, flops_pv = 2.0 * b * H_Q * L * D_QK, 2.0 * b * H_Q * L * D_V
            flops = flops_qk + flops_pv
            for isa, peak in peaks.items():
                with using_isa(isa):
                    torch.testing.assert_close(ours()[0].float(), want, atol=2e-2, rtol=2e-2)
                    t = measure(ours, device, min_time, min_iters=3 if big else 5, warmup=1 if big else 3)
                roof = _roof_s(nbytes, compute_s(flops_qk, flops_pv, peak), bw)
                result.add(op="mla_decode", isa=isa or "-", batch=b, context=L, longcat_ms=t * 1e3, torch_ms=tp * 1e3,
                           vs_torch=tp / t, **{"GB/s": nbytes / t / 1e9, "TFLOP/s": flops / t / 1e12,
                                              "of_roofline": roof / t})


def bench_decode_flashmla_shape(result, device, quick, bw, peaks, min_time):
    """CUDA: FlashMLA's benchmark grid (b=128, h_kv=1), against its published H800 numbers."""
    b = 128
    peak = next(iter(peaks.values()))   # GPU: torch's best matmul (no per-ISA peaks)
    scale = 576 ** -0.5
    for L in ([4096] if quick else [4096, 8192]):
        kv, table, lens = paged(b, L, device)
        for h_q, s_q in ((64, 1), (128, 1), (128, 2)):
            q = torch.randn(b, s_q, h_q, D_QK, device=device).to(kv.dtype)
            md = mla_decode_metadata(lens, s_q, h_q=h_q)
            t = measure(lambda: mla_decode(q, kv, table, lens, D_V, scale, True, md), device, min_time)
            row = {}
            if s_q == 1:  # the torch peer has no causal mask among new tokens
                peer = lambda: torch_decode(q, kv, table, lens, scale)  # noqa: E731
                tp = measure(peer, device, min_time, min_iters=3, warmup=1)
                row = {"torch_ms": tp * 1e3, "vs_torch": tp / t}
            nbytes = b * (s_q * h_q * D_QK * 2 + L * D_QK * 2 + s_q * h_q * D_V * 2)
            flops_qk, flops_pv = 2.0 * b * h_q * s_q * L * D_QK, 2.0 * b * h_q * s_q * L * D_V
            flops = flops_qk + flops_pv
            gbs, tflops = nbytes / t / 1e9, flops / t / 1e12
            if h_q * s_q >= 128:  # compute-bound
                vs_flashmla, note = tflops / FLASHMLA_H800_TFLOPS, f"vs FlashMLA {FLASHMLA_H800_TFLOPS:.0f} TFLOP/s"
            else:
                vs_flashmla, note = gbs / FLASHMLA_H800_GBS, f"vs FlashMLA {FLASHMLA_H800_GBS:.0f} GB/s"
            result.add(op=f"mla_decode FlashMLA shape h_q={h_q} s_q={s_q}", batch=b, context=L,
                       longcat_ms=t * 1e3, **row, note=note,
                       **{"GB/s": gbs, "TFLOP/s": tflops,
                          "of_roofline": _roof_s(nbytes, compute_s(flops_qk, flops_pv, peak), bw) / t,
                          "vs_FlashMLA_H800": vs_flashmla})
        del kv, table


def bench_prefill(result, device, quick, peaks, min_time):
    heads = 2 if quick else 4  # 4 heads keep the 16K SDPA peer to about a minute on 2 cores
    for T in ([2048] if quick else [4096, 16384]):
        g = torch.Generator().manual_seed(T)
        q = torch.randn(T, heads, 192, generator=g).to(torch.bfloat16).to(device)
        k = torch.randn(T, heads, 192, generator=g).to(torch.bfloat16).to(device)
        v = torch.randn(T, heads, 128, generator=g).to(torch.bfloat16).to(device)
        cu = torch.tensor([0, T], dtype=torch.int32, device=device)
        ours = lambda: mla_prefill(q, k, v, cu, cu, T, T)  # noqa: E731
        qt, kt, vt = (x.transpose(0, 1)[None] for x in (q, k, v))
        peer = lambda: F.scaled_dot_product_attention(qt, kt, vt, is_causal=True)  # noqa: E731
        want = peer()[0].transpose(0, 1).float()
        big = T >= 16384  # a causal SDPA call at 16K takes about a minute on 2 cores
        tp = measure(peer, device, min_time, min_iters=1 if big else 3, warmup=0 if big else 1)
        pairs = heads * (T * (T + 1) / 2)
        flops_qk, flops_pv = 2.0 * pairs * 192, 2.0 * pairs * 128
        flops = flops_qk + flops_pv
        for isa, peak in peaks.items():
            with using_isa(isa):
                torch.testing.assert_close(ours()[0].float(), want, atol=2e-2, rtol=2e-2)
                t = measure(ours, device, min_time, min_iters=2 if big else 3, warmup=1)
            result.add(op=f"mla_prefill h{heads} 192/128", isa=isa or "-", context=T, longcat_ms=t * 1e3,
                       torch_ms=tp * 1e3, vs_torch=tp / t,
                       **{"TFLOP/s": flops / t / 1e12, "of_roofline": compute_s(flops_qk, flops_pv, peak) / t})


def flex_ssa(T: int, device: str):
    """torch.compile'd FlexAttention with the SSA block mask (sink + local blocks, causal)."""
    from torch.nn.attention.flex_attention import flex_attention

    block_mask = ssa_block_mask(T, SsaWindow(sink=SINK_BLOCKS, local=LOCAL_BLOCKS, block_size=BLOCK),
                                device=device)
    compiled = torch.compile(flex_attention)
    return lambda q, k, v: compiled(q, k, v, block_mask=block_mask)


def bench_ssa_prefill(result, device, quick, min_time):
    heads = 2  # the full causal SDPA peer at 32K tokens takes minutes on 2 cores
    T = 8192 if quick else 32768
    g = torch.Generator().manual_seed(1)
    q = torch.randn(T, heads, 192, generator=g).to(torch.bfloat16).to(device)
    k = torch.randn(T, heads, 192, generator=g).to(torch.bfloat16).to(device)
    v = torch.randn(T, heads, 128, generator=g).to(torch.bfloat16).to(device)
    cu = torch.tensor([0, T], dtype=torch.int32, device=device)
    ours = lambda: ssa_prefill(q, k, v, cu, cu, T, T,  # noqa: E731
                               window=SsaWindow(sink=SINK_BLOCKS, local=LOCAL_BLOCKS, block_size=BLOCK))
    qt, kt, vt = (x.transpose(0, 1)[None] for x in (q, k, v))
    flex = flex_ssa(T, device)
    peer = lambda: flex(qt, kt, vt)  # noqa: E731
    torch.testing.assert_close(ours()[0].float(), peer()[0].transpose(0, 1).float(), atol=2e-2, rtol=2e-2)
    full = lambda: F.scaled_dot_product_attention(qt, kt, vt, is_causal=True)  # noqa: E731
    t = measure(ours, device, min_time, min_iters=3, warmup=1)
    tp = measure(peer, device, min_time, min_iters=3, warmup=1)
    tf = measure(full, device, min_time, min_iters=1, warmup=0)
    result.add(op=f"ssa_prefill h{heads} vs FlexAttention", isa=longcat.cpu_isa(), context=T, longcat_ms=t * 1e3, torch_ms=tp * 1e3,
               vs_torch=tp / t)
    result.add(op=f"ssa_prefill h{heads} vs causal SDPA", isa=longcat.cpu_isa(), context=T, longcat_ms=t * 1e3, torch_ms=tf * 1e3,
               vs_torch=tf / t)


def bench_ssa_decode(result, device, quick, min_time):
    """SSA decode across contexts (b=1) and MLA decode at the longest; returns per-layer times."""
    contexts = [4096, 32768] if quick else [4096, 16384, 65536, 131072, 1 << 20]
    scale = 192 ** -0.5
    times = {}
    for L in contexts:
        kv, table, lens = paged(1, L, device, seed=L)
        q = torch.randn(1, 1, H_Q, D_QK, device=device).to(kv.dtype)
        win = SsaWindow(sink=SINK_BLOCKS, local=LOCAL_BLOCKS, block_size=BLOCK)
        md_ssa = mla_decode_metadata(lens, 1, window=win)
        t = measure(lambda: ssa_decode(q, kv, table, lens, D_V, scale, True, md_ssa, window=win), device, min_time)
        md = mla_decode_metadata(lens, 1)
        tm = measure(lambda: mla_decode(q, kv, table, lens, D_V, scale, True, md), device, min_time,
                     min_iters=3, warmup=1)
        times[L] = (t, tm)
        result.add(op="ssa_decode (b=1) vs mla_decode", isa=longcat.cpu_isa(), batch=1, context=L, longcat_ms=t * 1e3,
                   torch_ms=tm * 1e3, vs_torch=tm / t)
    return times


def zigzag_estimate(result, times):
    """Per-token decode attention cost of 56 sublayers, half SSA, from the measured layer times;
    contexts beyond those measured scale MLA linearly (its cost is linear in context) and keep
    SSA flat (it reads a fixed number of keys)."""
    L_max = max(times)
    for L in (131072, 1 << 20):
        measured = L in times
        t_ssa, t_mla = times[L] if measured else (times[L_max][0], times[L_max][1] * L / L_max)
        all_mla = SUBLAYERS * t_mla
        zz = SUBLAYERS // 2 * t_mla + SUBLAYERS // 2 * t_ssa
        result.add(op="zig-zag 50% SSA vs all-MLA (per token, 56 sublayers)", isa=longcat.cpu_isa(), batch=1, context=L,
                   longcat_ms=zz * 1e3, torch_ms=all_mla * 1e3, vs_torch=all_mla / zz,
                   note="from measured layers" if measured else f"MLA scaled from {L_max}")


def run(device: str = "cpu", quick: bool = False) -> BenchResult:
    min_time = 0.05 if quick else 0.3
    bw = copy_bandwidth_gbs(device, quick)
    mm = matmul_tflops(device, quick)
    isas = cpu_isa_copies(device, has_amx_copy=True)  # amx: Q K^T on AMX tiles where the CPU has them
    # The compute roof: the measured fp32 FMA peak of each ISA copy (CPU); torch's best matmul
    # where there is no such measurement (GPU).
    peaks = compute_peaks(device, isas) or {None: {"fma": max(mm.values())}}
    peak_str = ", ".join(f"{k or 'matmul'} " + "/".join(f"{m} {v * 1e3:.0f}" for m, v in p.items())
                         for k, p in peaks.items())
    result = BenchResult(
        area="mla",
        title=f"Attention on {device} (median per call; copy bandwidth {bw:.1f} GB/s, "
              f"compute peak GFLOP/s {peak_str})",
        columns=["op", "isa", "batch", "context", "longcat_ms", "torch_ms", "vs_torch", "GB/s", "TFLOP/s",
                 "of_roofline", *(["vs_FlashMLA_H800"] if device.startswith("cuda") else []), "note"],
        context={"machine": machine_info(device), "copy_bandwidth_gbs": bw, "compute_peak_tflops": peaks,
                 "torch_matmul_tflops": mm,
                 "note": "torch_ms is the peer named in the op column: gather+SDPA for mla_decode, "
                         "causal SDPA for mla_prefill, compiled FlexAttention / causal SDPA for "
                         "ssa_prefill, mla_decode for ssa_decode, all-MLA for zig-zag. "
                         "of_roofline = max(bytes/copy_bw, compute time at the measured peak of the "
                         "kernel's instruction mix on the row's ISA copy) / time (cpu_peak_gflops)"},
    )
    if device.startswith("cuda"):
        result.context["flashmla_h800"] = {
            "GB/s": FLASHMLA_H800_GBS, "TFLOP/s": FLASHMLA_H800_TFLOPS,
            "source": "github.com/deepseek-ai/FlashMLA README: dense MLA decode, bf16, H800 SXM5 (660 since "
                      "2025-04-22, 580 at first release); its benchmark grid: batch 128, h_kv 1, s_q 1-2, 4K-32K"}
    bench_decode(result, device, quick, bw, peaks, min_time)
    if device.startswith("cuda"):
        bench_decode_flashmla_shape(result, device, quick, bw, peaks, min_time)
    bench_prefill(result, device, quick, peaks, min_time)
    times = bench_ssa_decode(result, device, quick, min_time)
    zigzag_estimate(result, times)
    bench_ssa_prefill(result, device, quick, min_time)
    return result


def main(argv: list[str] | None = None) -> None:
    from longcat.cli import main as cli_main

    cli_main(["bench", "mla", *(argv or [])])
