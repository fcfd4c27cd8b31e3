// longcat public C++ API: the paged latent KV cache of MLA (writes and reads) and the interleaved
// RoPE applied to the rope part of the keys. Cache layout and dims: longcat/mla.h.
#pragma once

#include <cstdint>

#include "longcat/common.h"
#include "longcat/mla.h"

namespace longcat {

// ---- RoPE ----------------------------------------------------------------------------------
// Interleaved (DeepSeek / LongCat-Flash) rotary embedding on the last dim D (even) of x:
//   theta_i = float(positions[t]) * inv_freq[i],  i in [0, D/2)                 (fp32)
//   a = x[2i], b = x[2i+1];  a' = a cos - b sin;  b' = b cos + a sin   (fp32, one rounding)
//   half_output = true  (transformers' apply_rotary_pos_emb_interleave): out[i] = a', out[i + D/2] = b'
//   half_output = false (rotation in place of the pairs):               out[2i] = a', out[2i+1] = b'
// inv_freq [D/2] float32 contiguous: base^(-2i/D) for plain RoPE (LongCat-Flash: base 1e7), or
// any scaled variant (YaRN, ...) computed by the caller, so results match the caller's tables
// bit for bit. x [T, D] or [T, M, D] (last dim contiguous, float32 / bfloat16, float16 on
// CUDA); out: x's shape and dtype, contiguous, may be x itself (in place) when x is contiguous;
// positions [T] int32 or int64 (>= 0).
LONGCAT_API void rope_interleaved(const TensorView& out, const TensorView& x,
                                  const TensorView& positions, const TensorView& inv_freq,
                                  bool half_output = true, Stream stream = nullptr);

// ---- Cache writes and reads ----------------------------------------------------------------
// mla_append_kv: for each new token t, kv_cache[page, row, 0, :512] = latent[t],
//   kv_cache[page, row, 0, 512:] = rope_k[t] (already rotated), where page =
//   block_table[seq_ids[t], positions[t] / page_size] and row = positions[t] % page_size.
//   latent [T, 512] and rope_k [T, 64] in kv_cache's dtype, last dim contiguous; seq_ids [T] and
//   positions [T] int32. A position whose page index is >= max_pages, a page id outside
//   [0, num_pages) or a seq id outside [0, batch) throws Error(Value) on CPU (dropped on CUDA).
LONGCAT_API void mla_append_kv(const TensorView& kv_cache, const TensorView& latent,
                               const TensorView& rope_k, const TensorView& block_table,
                               const TensorView& seq_ids, const TensorView& positions,
                               Stream stream = nullptr);

// mla_gather: out[cu_seqlens[b] + p] = kv_cache[token p of sequence b], p < cache_seqlens[b];
//   out [cu_seqlens[batch], 576] kv_cache's dtype contiguous; cu_seqlens [batch + 1] int32 the
//   prefix sum of cache_seqlens (checked on CPU).
LONGCAT_API void mla_gather(const TensorView& out, const TensorView& kv_cache,
                            const TensorView& block_table, const TensorView& cache_seqlens,
                            const TensorView& cu_seqlens, Stream stream = nullptr);

}  // namespace longcat
