"""RMSNorm benchmark: longcat vs the plain-torch reference (transformers' formula) and
torch.nn.functional.rms_norm, with GB/s against the machine's copy bandwidth.

``longcat_us`` is the op as users call it (it allocates its output, as the peers do);
``kernel_us`` writes into preallocated memory (``out=`` / the in-place fused op) and gives the
GB/s column, comparable with the copy bandwidth measured in the same run.

``rms_norm_backward`` rows time the backward alone: ``torch.autograd.grad`` through a recorded
forward (longcat's, the reference's, ``F.rms_norm``'s) for the first three columns, and the
``longcat::rms_norm_backward`` op called directly (grad_x and grad_w) for ``kernel_us``."""
from __future__ import annotations

import torch

from longcat.bench.common import BenchResult, copy_bandwidth_gbs, machine_info, measure
from longcat.ops import fused_add_rms_norm, fused_add_rms_norm_, reference, rms_norm

# (rows, hidden): LongCat-Flash hidden 6144 at decode and prefill sizes, the q/kv latent norms.
SHAPES = [(1, 6144), (16, 6144), (128, 6144), (1024, 6144), (4096, 6144), (4096, 1536), (4096, 512)]
QUICK_SHAPES = [(16, 6144), (1024, 6144)]


def run(device: str = "cpu", quick: bool = False) -> BenchResult:
    min_time = 0.05 if quick else 0.3
    bw = copy_bandwidth_gbs(device, quick)
    result = BenchResult(
        area="norm",
        title=f"RMSNorm on {device} (median per call; copy bandwidth {bw:.1f} GB/s)",
        columns=["op", "dtype", "rows", "hidden", "longcat_us", "kernel_us", "reference_us", "F.rms_norm_us",
                 "vs_reference", "vs_F.rms_norm", "GB/s", "of_copy_bw"],
        context={"machine": machine_info(device), "copy_bandwidth_gbs": bw,
                 "note": "copy bandwidth is measured on buffers far larger than the caches; "
                         "shapes whose data fit in cache can exceed it"},
    )
    dtypes = [torch.bfloat16] if quick else [torch.bfloat16, torch.float32]
    for dtype in dtypes:
        for rows, hidden in (QUICK_SHAPES if quick else SHAPES):
            x = torch.randn(rows, hidden, device=device).to(dtype)
            r = torch.randn(rows, hidden, device=device).to(dtype)
            w = torch.randn(hidden, device=device).to(dtype)
            out = torch.empty_like(x)
            esize = x.element_size()
            go = torch.randn(rows, hidden, device=device).to(dtype)
            xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
            for op in ("rms_norm", "fused_add_rms_norm", "rms_norm_backward"):
                if op == "rms_norm":
                    ours = lambda: rms_norm(x, w, 1e-6)  # noqa: E731
                    kernel = lambda: rms_norm(x, w, 1e-6, out=out)  # noqa: E731
                    ref = lambda: reference.rms_norm(x, w, 1e-6)  # noqa: E731
                    native = lambda: torch.nn.functional.rms_norm(x, (hidden,), w, 1e-6)  # noqa: E731
                    nbytes = (2 * rows * hidden + hidden) * esize
                elif op == "rms_norm_backward":
                    y_ours, y_ref = rms_norm(xg, wg, 1e-6), reference.rms_norm(xg, wg, 1e-6)
                    y_native = torch.nn.functional.rms_norm(xg, (hidden,), wg, 1e-6)
                    ours = lambda: torch.autograd.grad(y_ours, (xg, wg), go, retain_graph=True)  # noqa: E731
                    kernel = lambda: torch.ops.longcat.rms_norm_backward(go, x, w, 1e-6)  # noqa: E731
                    ref = lambda: torch.autograd.grad(y_ref, (xg, wg), go, retain_graph=True)  # noqa: E731
                    native = lambda: torch.autograd.grad(y_native, (xg, wg), go, retain_graph=True)  # noqa: E731
                    nbytes = (3 * rows * hidden + 2 * hidden) * esize  # x and grad_out in, grad_x out
                else:
                    ours = lambda: fused_add_rms_norm(x, r, w, 1e-6)  # noqa: E731
                    xi, ri = x.clone(), r.clone()  # the in-place op overwrites its inputs
                    kernel = lambda: fused_add_rms_norm_(xi, ri, w, 1e-6)  # noqa: E731
                    ref = lambda: reference.fused_add_rms_norm(x, r, w, 1e-6)  # noqa: E731
                    native = lambda: torch.nn.functional.rms_norm(x + r, (hidden,), w, 1e-6)  # noqa: E731
                    nbytes = (4 * rows * hidden + hidden) * esize
                t_ours = measure(ours, device, min_time)
                t_kernel = measure(kernel, device, min_time)
                t_ref = measure(ref, device, min_time)
                t_native = measure(native, device, min_time)
                gbs = nbytes / t_kernel / 1e9
                result.add(op=op, dtype=str(dtype).replace("torch.", ""), rows=rows, hidden=hidden,
                           longcat_us=t_ours * 1e6, kernel_us=t_kernel * 1e6, reference_us=t_ref * 1e6,
                           **{"F.rms_norm_us": t_native * 1e6, "vs_reference": t_ref / t_ours,
                              "vs_F.rms_norm": t_native / t_ours, "GB/s": gbs,
                              "of_copy_bw": gbs / bw})
    return result


def main(argv: list[str] | None = None) -> None:
    from longcat.cli import main as cli_main

    cli_main(["bench", "norm", *(argv or [])])
