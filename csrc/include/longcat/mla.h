// longcat public C++ API: MLA attention over a paged latent KV cache (decode), varlen prefill,
// streaming sparse attention (SSA, sink + local window) for Zig-Zag layers. The cache writes and
// reads and RoPE are in longcat/kv_cache.h.
//
// ---- Paged latent KV cache (FlashMLA layout) ------------------------------------------------
//   kv_cache    [num_pages, page_size, 1, kMlaDimQK = 576]  kMlaDimV = 512 latent + kMlaDimRope = 64
//               rope values per token (V = the latent part); bf16 or
//               fp32 on CPU, bf16 or fp16 on CUDA; pages contiguous (any page order).
//   block_table [batch, max_pages] int32        page ids of each sequence, in order
//   cache_seqlens [batch] int32                 tokens in each sequence's cache (>= 0)
// Token p of sequence b lives in page block_table[b, p / page_size], row p % page_size. Pages
// beyond ceil(cache_seqlens[b] / page_size) are never read (they may hold NaN or garbage).
//
// ---- Visibility ----------------------------------------------------------------------------
// A query at absolute position p (0-based) sees key j iff j <= p (causal) and, with a
// SsaWindow w:
//   w.unit == Blocks: with bs = w.block_size, qb = p / bs, kb = j / bs:
//                     kb < w.sink  or  kb >= qb - w.local + 1      (sink blocks, then the last
//                     `local` blocks up to and including the query's own block, causal in it)
//   w.unit == Tokens: j < w.sink  or  j >= p - w.local + 1         (sink tokens, then a window of
//                     `local` tokens ending at and including p)
// Without a window (nullptr) every key j <= p is visible (full attention).
// Decode: query i of s_q in sequence b is at p = cache_seqlens[b] - s_q + i when causal; the new
// tokens are already in the cache. causal = false: every query sees keys 0..cache_seqlens[b]-1
// (the window, if any, is applied at p = cache_seqlens[b] - 1).
// Prefill (varlen, FlashAttention >= 2.1 convention, bottom-right aligned): query i of a
// sequence with len_q queries and len_k keys is at p = i + len_k - len_q.
// A query that sees no key gets out = 0 and lse = +inf (FlashMLA / FlashAttention convention).
// NaN propagates as in torch SDPA, the same on every CPU ISA copy and on CUDA: a query whose
// scores include a NaN (a NaN in the query, or in a key it sees) gets out = NaN and lse = NaN;
// keys it does not see never make it NaN through their scores. A NaN value (prefill's v) reaches
// the out (not the lse) of the queries that share its key tile, as torch's P @ V does.
// Index inputs (block_table, cache_seqlens, metadata, cu_seqlens) are copied on CPU before they
// are checked, so another thread changing them meanwhile cannot make a kernel read out of range.
//
// lse = log(sum_j exp(scale * q.k_j)) in natural log, fp32. Softmax and accumulation in fp32.
#pragma once

#include <cstdint>

#include "longcat/common.h"

namespace longcat {

// The MLA head dims (LongCat-Flash / DeepSeek-V3 absorbed form), the one definition every layer
// uses (the Python ops read them from longcat._C): a cached token is kMlaDimV latent values
// followed by kMlaDimRope rotated rope-key values.
constexpr int64_t kMlaDimV = 512;                         // kv_lora_rank: latent = V
constexpr int64_t kMlaDimRope = 64;                       // qk_rope_head_dim
constexpr int64_t kMlaDimQK = kMlaDimV + kMlaDimRope;     // 576: q . k over latent + rope

// The SSA window of a Zig-Zag layer (visibility rule above); the defaults are the report's
// 1 sink block + 7 local blocks of 128 tokens. Python: longcat.ops.SsaWindow (the same struct).
struct SsaWindow {
  enum class Unit : uint8_t { Blocks, Tokens };
  Unit unit = Unit::Blocks;
  int64_t sink = 1;          // blocks (Blocks) or tokens (Tokens), >= 0
  int64_t local = 7;         // blocks (Blocks) or tokens (Tokens), >= 1
  int64_t block_size = 128;  // Blocks only, >= 1
};

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
                                     const SsaWindow* window = nullptr, bool causal = true,
                                     Stream stream = nullptr);

// Checks a plan held in host memory against cache_seqlens, s_q, causal and the window exactly as
// mla_decode does, and returns its total splits S (metadata[batch, 0]); a caller sizing the
// workspace for a plan it did not make (e.g. made for more workers) uses S - batch as
// num_workers. Error(Value) naming 'metadata' when the plan does not match.
LONGCAT_API int64_t mla_decode_plan_splits(const TensorView& metadata, const TensorView& cache_seqlens,
                                           int64_t s_q, bool causal, const SsaWindow* window = nullptr);

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
                            const SsaWindow* window = nullptr, Stream stream = nullptr);

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
                             bool causal, const SsaWindow* window = nullptr,
                             Stream stream = nullptr);

// For tests, not an API: mla_decode / mla_prefill on CPU tensors run by the AMX copy's code with
// the tile instructions emulated in scalar C++ (runs on any CPU; slow), with the same checks.
LONGCAT_API void mla_decode_amx_emulated(const TensorView& out, const TensorView& lse, const TensorView& q,
                                         const TensorView& kv_cache, const TensorView& block_table,
                                         const TensorView& cache_seqlens, int64_t head_dim_v,
                                         double softmax_scale, bool causal, const TensorView& metadata,
                                         const TensorView& workspace, int64_t num_workers,
                                         const SsaWindow* window = nullptr);
LONGCAT_API void mla_prefill_amx_emulated(const TensorView& out, const TensorView& lse, const TensorView& q,
                                          const TensorView& k, const TensorView& v,
                                          const TensorView& cu_seqlens_q, const TensorView& cu_seqlens_k,
                                          int64_t max_seqlen_q, int64_t max_seqlen_k, double softmax_scale,
                                          bool causal, const SsaWindow* window = nullptr);

}  // namespace longcat
