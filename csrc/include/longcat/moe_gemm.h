// longcat public C++ API: the grouped expert SwiGLU GEMM of the MoE layer.
//
// For each routed expert e, the rows offsets[e] : offsets[e+1] of x_perm (token rows already
// grouped by expert, e.g. by moe_dispatch) go through that expert's SwiGLU MLP:
//
//   g   = dtype(x @ w13[e, :F, :].T)          gate (fp32 accumulation, rounded to x's dtype)
//   u   = dtype(x @ w13[e, F:, :].T)          up
//   h   = dtype(dtype(silu(g)) * u)           silu in fp32, rounded; the product rounded
//   out = dtype(h @ w2[e].T)                  down
//
// which is, rounding for rounding, what a bf16 torch program computes with
// F.linear(x, w13[e]).chunk(2) / F.silu(gate) * up / F.linear(h, w2[e]).
//
// Weight layout: exactly Hugging Face transformers' LongcatFlashExperts, so its parameters pass
// in unchanged:
//   w13  [n_routed, 2F, H]  = gate_up_proj: rows 0..F-1 are the gate projection, rows F..2F-1 up
//   w2   [n_routed, H, F]   = down_proj
//
// Shapes and dtypes:
//   out        [R, H]            x's dtype, contiguous (written; every row)
//   x_perm     [R, H]            float32 or bfloat16 on CPU, bfloat16 on CUDA; contiguous
//   offsets    [n_routed + 1]    int32, contiguous, on x's device: offsets[0] = 0, non-decreasing,
//                                offsets[n_routed] = R. Segments may be empty. Rows that are
//                                padding (e.g. zero rows at a segment's end) are computed like any.
//   w13, w2    as above          x's dtype, contiguous
//   workspace  [>= moe_grouped_swiglu_workspace_size(...)] uint8, contiguous: the intermediate
//              h [R, F] plus per-thread packing panels (CPU) / the [R, 2F] gate-up activation and
//              the grouped-GEMM argument arrays (CUDA). The API never allocates memory.
//
// CPU: a blocked GEMM (weights packed to fp32 panels, register-blocked microkernel, SwiGLU fused
// into the gate/up epilogue; AVX512-BF16 machines multiply bf16 pairs with vdpbf16ps, AMX machines
// (Sapphire Rapids and later) bf16 tiles with TDPBF16PS), split over
// (expert, row-block, column-block) tiles across the library's threads. The offsets are checked
// (ValueError naming 'offsets' on a violation) on a copy the kernel then reads. The workspace
// size depends on num_threads(); the op runs on min(num_threads(), the threads the workspace has
// scratch for), fixed for the whole call, so set_num_threads() from another thread is safe.
// F = 0 (an empty intermediate) writes zeros.
// CUDA (sm_90a, needs CUTLASS at build time): two CUTLASS ptr-array grouped GEMMs (bf16, fp32
// accumulation, 128x128x64 tiles, cooperative warp-specialized TMA kernel) with an elementwise
// SwiGLU kernel between them. Per-group problem sizes and pointers are built on the device from
// offsets (no host synchronisation); offsets are not checked on CUDA beyond being clamped into
// [0, R] and made non-decreasing, so bad offsets give wrong rows but never out-of-bounds access.
// H and F must be multiples of 8 on CUDA, and x_perm, w13, w2, out and workspace must start at
// 16-byte aligned addresses (TMA); otherwise Error(Value) naming the argument.
#pragma once

#include "longcat/common.h"

namespace longcat {

// Bytes of workspace moe_grouped_swiglu needs for these sizes on `device` (a CUDA query of the
// device's SM count for the CUTLASS tile scheduler; CPU: proportional to num_threads()).
LONGCAT_API int64_t moe_grouped_swiglu_workspace_size(int64_t rows, int64_t hidden,
                                                      int64_t intermediate, int64_t n_routed,
                                                      DType dtype, Device device);

LONGCAT_API void moe_grouped_swiglu(const TensorView& out, const TensorView& x_perm,
                                    const TensorView& offsets, const TensorView& w13,
                                    const TensorView& w2, const TensorView& workspace,
                                    Stream stream = nullptr);

// For tests, not an API: moe_grouped_swiglu on CPU tensors run by the AMX copy's code with the
// tile instructions emulated in scalar C++ (runs on any CPU; slow), with the same checks.
LONGCAT_API void moe_grouped_swiglu_amx_emulated(const TensorView& out, const TensorView& x_perm,
                                                 const TensorView& offsets, const TensorView& w13,
                                                 const TensorView& w2, const TensorView& workspace);

}  // namespace longcat
