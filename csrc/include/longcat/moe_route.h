// longcat public C++ API: MoE routing with zero-computation experts, token dispatch and combine.
//
// Experts: E = n_routed + n_zero. Ids 0..n_routed-1 are routed experts (they run a GEMM); ids
// n_routed..E-1 are zero-computation (identity) experts of LongCat-Flash: they add weight * x
// and never enter a GEMM or a dispatch buffer.
//
// moe_route (LongCat-Flash semantics, exactly Hugging Face transformers' LongcatFlashTopkRouter):
//   logits  = float32(hidden) @ weight^T                        fp32, [T, E]
//   scores  = softmax(logits) over all E      (MoeScore::Sigmoid: sigmoid(logits))
//   ids     = top_k experts of scores + correction_bias, sorted by that biased score, descending;
//             ties go to the lowest expert id (deterministic)
//   weights = scores[ids] (the UNBIASED scores; zero experts too), renormalised to sum 1 over
//             the k (+1e-20 in the denominator, as transformers / DeepSeek) when `renormalize`,
//             then times routed_scaling_factor.
//   hidden [T, H] float32 or bfloat16 (float16 too on CUDA), last dim contiguous, rows may have
//   one row stride; weight [E, H] float32 contiguous; correction_bias [E] float32 contiguous or
//   nullptr; topk_ids [T, k] int32 and topk_weights [T, k] float32 contiguous outputs, where
//   k = topk_ids.shape[1] must be in [1, E]. NaN scores give valid but unspecified ids.
//
// Dispatch is two calls because the number of rows R of the dispatch buffer depends on the data:
//   1. moe_dispatch_layout: counts[e] = number of (t, j) with topk_ids[t, j] == e (e < n_routed),
//      offsets[e+1] = offsets[e] + round_up(counts[e], align), offsets[0] = 0. R = offsets[n_routed].
//   2. the caller reads R (on CUDA: a device-to-host copy, i.e. a sync), allocates x_perm [R, H],
//      row_token [R], slot_row [T, k], and calls moe_dispatch, which fills them:
//      rows of expert e are offsets[e] .. offsets[e] + counts[e] - 1, in token order (stable: for
//      the flattened order t * k + j); padding rows offsets[e] + counts[e] .. offsets[e+1] - 1
//      are zero with row_token = -1; row_token[r] = the token whose row r is;
//      slot_row[t, j] = the row of x_perm holding token t's j-th choice, or -1 for a zero expert.
//   x [T, H] float32 / bfloat16 (float16 too on CUDA), last dim contiguous, one row stride;
//   topk_ids [T, k] int32 contiguous; counts [n_routed] int32, offsets [n_routed + 1] int32,
//   row_token [R] int32, slot_row [T, k] int32, x_perm [R, H] x's dtype: contiguous.
//   align >= 1 (pad each expert segment to a multiple of it, as vLLM's moe_align_block_size).
//
// moe_combine: y[t] = sum_j topk_weights[t, j] * (expert_out[slot_row[t, j]] if topk_ids[t, j]
//   < n_routed else x[t]), accumulated in fp32 over j in order, rounded once to x's dtype.
//   expert_out [R, H] and x [T, H] (last dim contiguous, one row stride each), slot_row /
//   topk_ids [T, k] int32 and topk_weights [T, k] float32 contiguous, y [T, H] x's dtype contiguous.
//
// Ids: on CPU, a negative id (or a slot_row outside [0, R) for a routed id in combine) throws
// Error(Value) naming the argument. CUDA kernels cannot report without a sync: there a negative
// id is dropped (slot_row -1, contributes nothing to y), as is a routed entry with a bad slot_row.
//
// CPU work is split over tokens (route, combine) or rows (dispatch) across the library's
// threads; moe_route's CPU path allocates a host scratch of T * E floats for the logits.
// CUDA kernels need no workspace; `stream` orders them.
#pragma once

#include <cstdint>
#include <string>

#include "longcat/common.h"

namespace longcat {

enum class MoeScore : uint8_t { Softmax, Sigmoid };

// "softmax" / "sigmoid"; anything else throws Error(Value) naming the argument 'score'.
LONGCAT_API MoeScore parse_moe_score(const std::string& name);

LONGCAT_API void moe_route(const TensorView& topk_ids, const TensorView& topk_weights,
                           const TensorView& hidden, const TensorView& weight,
                           const TensorView* correction_bias, int64_t n_routed, int64_t n_zero,
                           double routed_scaling_factor = 1.0,
                           MoeScore score = MoeScore::Softmax, bool renormalize = false,
                           Stream stream = nullptr);

LONGCAT_API void moe_dispatch_layout(const TensorView& counts, const TensorView& offsets,
                                     const TensorView& topk_ids, int64_t n_routed,
                                     int64_t align = 1, Stream stream = nullptr);

// counts / offsets: what moe_dispatch_layout wrote for the same topk_ids, n_routed and align.
LONGCAT_API void moe_dispatch(const TensorView& x_perm, const TensorView& row_token,
                              const TensorView& slot_row, const TensorView& x,
                              const TensorView& topk_ids, const TensorView& counts,
                              const TensorView& offsets, int64_t n_routed, Stream stream = nullptr);

LONGCAT_API void moe_combine(const TensorView& y, const TensorView& expert_out,
                             const TensorView& slot_row, const TensorView& topk_ids,
                             const TensorView& topk_weights, const TensorView& x,
                             int64_t n_routed, Stream stream = nullptr);

}  // namespace longcat
