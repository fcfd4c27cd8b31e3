"""Small CUDA cases for compute-sanitizer (bench/gpu_check.sh runs this under memcheck and
racecheck): MLA / SSA decode with a split plan, a cache length off the page and tile edges, NaN
pages a kernel must not read; MLA / SSA prefill at the LongCat 192/128 head dims; the CUTLASS
grouped SwiGLU GEMM with empty experts; routing, dispatch and combine; RMSNorm; the paged-cache
append and gather. Each case is checked against the plain-torch reference, so a kernel that the
sanitizer passes but that computes garbage still fails. Sizes are tiny: under the sanitizer every
kernel runs tens of times slower.

Usage: PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck python tools/cuda_sanitize_cases.py
(``--device cpu`` runs the same cases on the CPU kernels, to check the script without a GPU).
"""
from __future__ import annotations

import sys
import time

import torch

from longcat import ops
from longcat.ops import reference

DEV = "cuda"


def close(got, want, tol=3e-2):
    torch.testing.assert_close(got.float().cpu(), want.float().cpu(), atol=tol, rtol=tol)


def paged_cache(lens, page=64, seed=0):
    """Pages of each sequence in a permuted order; pages nobody owns are NaN."""
    g = torch.Generator().manual_seed(seed)
    need = [-(-L // page) for L in lens]
    pages = sum(need) + 2
    kv = torch.full((pages, page, 1, 576), float("nan"))
    table = torch.full((len(lens), max(need) + 1), 2147480000, dtype=torch.int32)
    perm = torch.randperm(pages, generator=g).tolist()
    for b, L in enumerate(lens):
        for p in range(need[b]):
            page_id = perm.pop()
            table[b, p] = page_id
            rows = min(page, L - p * page)
            kv[page_id, :rows] = torch.randn(rows, 1, 576, generator=g)
    return kv.bfloat16().to(DEV), table.to(DEV), torch.tensor(lens, dtype=torch.int32).to(DEV)


def decode():
    kv, table, lens = paged_cache([0, 70, 333])
    q = torch.randn(3, 2, 24, 576).bfloat16().to(DEV)  # 48 rows: one partial 64-row tile
    md = ops.mla_decode_metadata(lens, 2, 4, h_q=24)
    out, lse = ops.mla_decode(q, kv, table, lens, 512, 0.05, True, md)
    want, want_lse = reference.mla_decode(q.cpu(), kv.cpu(), table.cpu(), lens.cpu(), 512, 0.05)
    close(out, want)
    close(lse, want_lse, 1e-3)
    window = ops.SsaWindow(sink=1, local=1, block_size=64)
    out, _ = ops.ssa_decode(q, kv, table, lens, 512, 0.05, True, window=window)
    want, _ = reference.mla_decode(q.cpu(), kv.cpu(), table.cpu(), lens.cpu(), 512, 0.05, window=window)
    close(out, want)


def prefill():
    lens_q, lens_k = [5, 70], [5, 130]
    q = torch.randn(sum(lens_q), 2, 192).bfloat16().to(DEV)
    k = torch.randn(sum(lens_k), 2, 192).bfloat16().to(DEV)
    v = torch.randn(sum(lens_k), 2, 128).bfloat16().to(DEV)
    cq = torch.tensor([0, 5, 75], dtype=torch.int32).to(DEV)
    ck = torch.tensor([0, 5, 135], dtype=torch.int32).to(DEV)
    out, _ = ops.mla_prefill(q, k, v, cq, ck, 70, 130)
    close(out, reference.mla_prefill(q, k, v, cq, ck, 192 ** -0.5, causal=True)[0])
    window = ops.SsaWindow(sink=1, local=2, block_size=16)
    out, _ = ops.ssa_prefill(q, k, v, cq, ck, 70, 130, window=window)
    want, _ = reference.mla_prefill(q, k, v, cq, ck, 192 ** -0.5, causal=True, window=window)
    close(out, want)


def grouped_gemm():
    x = torch.randn(50, 64).bfloat16().to(DEV)
    offsets = torch.tensor([0, 20, 20, 49, 50], dtype=torch.int32).to(DEV)  # one expert empty
    w13 = (torch.randn(4, 64, 64) / 8).bfloat16().to(DEV)
    w2 = (torch.randn(4, 64, 32) / 6).bfloat16().to(DEV)
    close(ops.moe_grouped_swiglu(x, offsets, w13, w2), reference.moe_grouped_swiglu(x, offsets, w13, w2))


def routing():
    hidden = torch.randn(9, 64).bfloat16().to(DEV)
    weight, bias = torch.randn(20, 64).to(DEV) / 8, torch.randn(20).to(DEV) * 0.01
    ids, w = ops.moe_route(hidden, weight, bias, 4, 16, 4, 2.0)
    x_perm, _, _, _, slot = ops.moe_dispatch(hidden, ids, 16, 8)
    y = ops.moe_combine(x_perm, slot, ids, w, hidden, 16)
    close(y, reference.moe_combine(x_perm, slot, ids, w, hidden, 16))


def norm_and_cache():
    x, wt = torch.randn(7, 96).bfloat16().to(DEV), torch.randn(96).bfloat16().to(DEV)
    close(ops.rms_norm(x, wt), reference.rms_norm(x, wt, 1e-6))
    kv, table, lens = paged_cache([3, 65], seed=1)
    kv = torch.nan_to_num(kv, nan=0.0)
    latent, rope = torch.randn(2, 512).bfloat16().to(DEV), torch.randn(2, 64).bfloat16().to(DEV)
    positions = torch.tensor([2, 64], dtype=torch.int32).to(DEV)
    ops.mla_append_kv(latent, rope, kv, table, positions, seq_ids=torch.tensor([0, 1], dtype=torch.int32).to(DEV))
    got, _ = ops.mla_gather(kv, table, lens)
    assert torch.equal(got.cpu(), reference.mla_gather(kv.cpu(), table.cpu(), lens.cpu()))


def main(argv: list[str]) -> int:
    global DEV
    if argv[:1] == ["--device"]:
        DEV = argv[1]
    torch.manual_seed(0)
    for case in (decode, prefill, grouped_gemm, routing, norm_and_cache):
        t0 = time.perf_counter()
        case()
        if DEV == "cuda":
            torch.cuda.synchronize()
        print(f"{case.__name__}: ok ({time.perf_counter() - t0:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
