// longcat public C++ API: MLA attention over a paged latent KV cache, varlen prefill, streaming
// sparse attention (SSA, sink + local window) for Zig-Zag layers, interleaved RoPE.
//
// ---- Paged latent KV cache (FlashMLA layout) ------------------------------------------------
//   kv_cache    [num_pages, page_size, 1, 576]  512 latent + 64 rope values per token; bf16 or
//               fp32 on CPU, bf16 or fp16 on CUDA; pages contiguous (any page order).
//   block_table [batch, max_pages] int32        page ids of each sequence, in order
//   cache_seqlens [batch] int32                 tokens in each sequence's cache (>= 0)
// Token p of sequence b lives in page block_table[b, p / page_size], row p % page_size. Pages
// beyond ceil(cache_seqlens[b] / page_size) are never read (they may hold NaN or garbage).
//
// ---- Visibility ----------------------------------------------------------------------------
// A query at absolute position p (0-based) sees key j iff j <= p (causal) and, with a
// SparseWindow w:
//   w.mode == Blocks: with bs = w.block_size, qb = p / bs, kb = j / bs:
//                     kb < w.sink  or  kb >= qb - w.local + 1      (sink blocks, then the last
//                     `local` blocks up to and including the query's own block, causal in it)
//   w.mode == Tokens: j < w.sink  or  j >= p - w.local + 1         (sink tokens, then a window of
//                     `local` tokens ending at and including p)
// Without a window (nullptr) every key j <= p is visible (full attention).
// Decode: query i of s_q in sequence b is at p = cache_seqlens[b] - s_q + i when causal; the new
// tokens are already in the cache. causal = false: every query sees keys 0..cache_seqlens[b]-1
// (the window, if any, is applied at p = cache_seqlens[b] - 1).
// Prefill (varlen, FlashAttention >= 2.1 convention, bottom-right aligned): query i of a
// sequence with len_q queries and len_k keys is at p = i + len_k - len_q.
// A query that sees no key gets out = 0 and lse = +inf (FlashMLA / FlashAttention convention).
//
// lse = log(sum_j exp(scale * q.k_j)) in natural log, fp32. Softmax and accumulation in fp32.
#pragma once

#include <cstdint>

#include "longcat/common.h"

namespace longcat {

struct SparseWindow {
  enum class Mode : uint8_t { Blocks, Tokens };
  Mode mode = Mode::Blocks;
  int64_t sink = 1;          // blocks (Blocks) or tokens (Tokens), >= 0
  int64_t local = 7;         // blocks (Blocks) or tokens (Tokens), >= 1
  int64_t block_size = 128;  // Blocks mode only, >= 1
};

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

// ---- MLA decode (absorbed form, FlashMLA-compatible) -----------------------------------------
// Split-KV plan, computed once per decode step and reused by every layer:
//   metadata [batch + 1, 2] int32: metadata[b, 0] = index of sequence b's first split (prefix
//   sum; metadata[batch, 0] = total splits S), metadata[b, 1] = keys per split of sequence b (a
//   multiple of 64; at least 64 on CPU, 256 on CUDA). A sequence with no visible key gets one
//   split. The planner balances the visible keys of all sequences over `num_workers` (CPU
//   threads; on CUDA, FlashMLA's num_sm_parts = SMs / ceil(s_q * h_q / 64), the SM groups that
//   each run one CTA per 64-row tile), so S <= batch + num_workers. `window` (SSA) makes the
//   plan cover only the visible keys.
LONGCAT_API int64_t mla_decode_max_splits(int64_t batch, int64_t num_workers);
LONGCAT_API void mla_decode_metadata(const TensorView& metadata, const TensorView& cache_seqlens,
                                     int64_t s_q, int64_t num_workers,
                                     const SparseWindow* window = nullptr, bool causal = true,
                                     Stream stream = nullptr);

// Workspace for the split-KV partial results (fp32 out and lse per split), in bytes.
LONGCAT_API int64_t mla_decode_workspace_size(int64_t batch, int64_t s_q, int64_t h_q,
                                              int64_t head_dim_v, int64_t num_workers);

// out[b, i, h, :] = sum_j softmax_j(scale * q[b, i, h, :] . k_j) * k_j[:head_dim_v] over the
// visible keys k_j = kv_cache[token j of sequence b, 0, :];
//   q [batch, s_q, h_q, 576] (last dim contiguous, kv_cache's dtype); out [batch, s_q, h_q,
//   head_dim_v] q's dtype contiguous; lse [batch, h_q, s_q] float32 contiguous; head_dim_v = 512;
//   softmax_scale > 0 (callers pass 576^-0.5 when they have no other); metadata from
//   mla_decode_metadata with the same cache_seqlens, s_q, window and causal, and workspace of
//   mla_decode_workspace_size bytes for the same num_workers (uint8, contiguous).
LONGCAT_API void mla_decode(const TensorView& out, const TensorView& lse, const TensorView& q,
                            const TensorView& kv_cache, const TensorView& block_table,
                            const TensorView& cache_seqlens, int64_t head_dim_v,
                            double softmax_scale, bool causal, const TensorView& metadata,
                            const TensorView& workspace, int64_t num_workers,
                            const SparseWindow* window = nullptr, Stream stream = nullptr);

// ---- MLA prefill (varlen) --------------------------------------------------------------------
//   q [total_q, h, d_qk], k [total_k, h_k, d_qk], v [total_k, h_k, d_v]: last dim contiguous, one
//   stride per other dim; h % h_k == 0 (h_k = h for MLA); d_qk, d_v multiples of 8 up to 576.
//   cu_seqlens_q [batch + 1], cu_seqlens_k [batch + 1] int32 (non-decreasing, start 0, end total);
//   max_seqlen_q / max_seqlen_k bound the per-sequence lengths (checked on CPU).
//   out [total_q, h, d_v] q's dtype contiguous; lse [h, total_q] float32 contiguous.
//   Visibility: see the top of this file (bottom-right causal; `window` for SSA prefill).
LONGCAT_API void mla_prefill(const TensorView& out, const TensorView& lse, const TensorView& q,
                             const TensorView& k, const TensorView& v,
                             const TensorView& cu_seqlens_q, const TensorView& cu_seqlens_k,
                             int64_t max_seqlen_q, int64_t max_seqlen_k, double softmax_scale,
                             bool causal, const SparseWindow* window = nullptr,
                             Stream stream = nullptr);

}  // namespace longcat
