// longcat public C++ API: one MLA attention sublayer of LongCat-Flash for decode rows, in one call.
//
// A decode step runs ~15 small ops per attention sublayer (projections, two latent RMSNorms,
// RoPE, the cache append, the absorbed query, mla_decode, the value and output projections);
// called one by one from Python each pays a binding call and its own allocations. This entry
// point runs exactly that composition of the library's own ops (the same kernels in the same
// order, so the result is bit for bit what the ops give one by one), with every intermediate
// in a caller-provided workspace. For T decode rows (one new token per sequence, token t of
// sequence seq_ids[t] at positions[t]), with R = q_rank, nh heads, nope + 64 query dims, v value dims:
//
//   a       = linear(x, w_a)                          [T, R + 512 + 64]
//   q       = linear(rms_norm(a[:, :R], q_norm), w_qb) viewed [T, nh, nope + 64]
//   latent  = rms_norm(a[:, R:R+512], kv_norm);  k_rope = rope(a[:, R+512:], positions)
//   mla_append_kv(kv_cache, latent, k_rope, block_table, seq_ids, positions)
//   q_abs[t, 0, h] = [linear(q[t, h, :nope], w_uk_t[h]) (512) , rope(q[t, h, nope:]) (64)]
//   attn    = mla_decode(q_abs, kv_cache, block_table, cache_seqlens, metadata, window)  [T, 1, nh, 512]
//   o[t, h] = linear(attn[t, 0, h], w_uv[h])          [T, nh, v]
//   out     = linear(o viewed [T, nh * v], w_o)       [T, H]
//
// Scalings (LoRA scales, the kv latent scale) are the caller's: fold them into w_qb / kv_norm.
// RoPE is interleaved with half_output (transformers' layout), positions int32.
#pragma once

#include <cstdint>

#include "longcat/common.h"
#include "longcat/mla.h"

namespace longcat {

// The sublayer's weights (non-owning views; checked by mla_decode_layer_check_weights):
//   w_a [R + 576, H], q_norm [R], w_qb [nh * (nope + 64), R], kv_norm [512],
//   w_uk_t [nh, 512, nope], w_uv [nh, v, 512], w_o [H, nh * v]: one float dtype (bf16 / fp32),
//   contiguous, CPU; inv_freq [32] float32 contiguous (RoPE's frequencies, see rope_interleaved).
struct MlaLayerWeights {
  TensorView w_a, q_norm, w_qb, kv_norm, w_uk_t, w_uv, w_o, inv_freq;
  double norm_eps = 1e-6;  // both latent RMSNorms
};

// Error naming the weight whose shape, dtype, device or layout does not fit the others.
LONGCAT_API void mla_decode_layer_check_weights(const MlaLayerWeights& w);

// Bytes of workspace mla_decode_layer needs for `tokens` rows of x's dtype (w's dtype), with the
// mla_decode split partials for `num_workers` (as mla_decode_workspace_size).
LONGCAT_API int64_t mla_decode_layer_workspace_size(const MlaLayerWeights& w, int64_t tokens,
                                                    int64_t num_workers);

//   out [T, H] and x [T, H] in the weights' dtype, contiguous, not overlapping each other or the
//   workspace; kv_cache, block_table, cache_seqlens, metadata, num_workers, window and
//   softmax_scale as mla_decode with s_q = 1 (cache_seqlens [T] counts the new token);
//   positions [T] and seq_ids [T] int32 as mla_append_kv (seq_ids index block_table's rows);
//   workspace uint8 contiguous of at least mla_decode_layer_workspace_size(w, T, num_workers)
//   bytes. CPU only (Error(Runtime) for CUDA tensors).
LONGCAT_API void mla_decode_layer(const TensorView& out, const TensorView& x, const MlaLayerWeights& w,
                                  const TensorView& kv_cache, const TensorView& block_table,
                                  const TensorView& cache_seqlens, const TensorView& positions,
                                  const TensorView& seq_ids, double softmax_scale,
                                  const TensorView& metadata, const TensorView& workspace,
                                  int64_t num_workers, const SsaWindow* window = nullptr);

}  // namespace longcat
