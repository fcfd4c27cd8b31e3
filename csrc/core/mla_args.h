// Attention kernel arguments after validation, shared by the CPU and CUDA backends (internal).
// Semantics: csrc/include/longcat/mla.h. Strides are in elements.
#pragma once

#include <cstdint>

#include "longcat/mla.h"
#include "longcat/common.h"

#if defined(__CUDACC__)
#define LONGCAT_HD __host__ __device__
#else
#define LONGCAT_HD
#endif

namespace longcat {

// The visibility rule of attention.h, flattened for kernels. has_window = false: full attention.
struct WindowArgs {
  bool has_window = false;
  bool blocks = true;        // Blocks mode (else Tokens)
  int64_t sink = 0, local = 0, block_size = 1;
};

// Checks a user's SsaWindow (nullptr: full attention) and flattens it; errors name `op` and
// the field ('window.sink', ...). Defined in csrc/core/mla_window.cpp.
WindowArgs window_args(const char* op, const SsaWindow* window);

// Keys visible to a query at absolute position p form at most two ranges [0, sink_end) and
// [local_begin, p + 1) (attention.h); without a window, sink_end = 0 and local_begin = 0.
struct KeyRanges {
  int64_t sink_end, local_begin, end;  // end = p + 1 (exclusive)
};

LONGCAT_HD inline KeyRanges visible_keys(const WindowArgs& w, int64_t p) {
  KeyRanges r{0, 0, p + 1};
  if (p < 0) return KeyRanges{0, 0, 0};
  if (!w.has_window) return r;
  int64_t sink_end = w.blocks ? w.sink * w.block_size : w.sink;
  int64_t local_begin = w.blocks ? (p / w.block_size - w.local + 1) * w.block_size : p - w.local + 1;
  if (local_begin < 0) local_begin = 0;
  if (sink_end > local_begin) sink_end = local_begin;  // ranges merge: count each key once
  r.sink_end = sink_end;
  r.local_begin = local_begin;
  return r;
}

// Decode: the union of the keys visible to the s_q queries of a sequence with L cached tokens
// (queries at L - s_q .. L - 1 when causal, all at L - 1 otherwise). The union is again
// [0, sink_end) + [local_begin, L) because local_begin grows with p. Its size is what the
// split-KV planner balances; visible index v < sink_end maps to key v, else to
// local_begin + (v - sink_end).
LONGCAT_HD inline KeyRanges decode_visible_keys(const WindowArgs& w, int64_t L, int64_t s_q,
                                                bool causal) {
  if (L <= 0) return KeyRanges{0, 0, 0};
  int64_t p_first = causal ? L - s_q : L - 1;
  if (p_first < 0) p_first = 0;
  KeyRanges r = visible_keys(w, p_first);
  r.end = L;
  return r;
}

LONGCAT_HD inline int64_t num_keys(const KeyRanges& r) {
  return r.sink_end + (r.end > r.local_begin ? r.end - r.local_begin : 0);
}

// The split-KV plan (attention.h, mla_decode_metadata), written once for both backends:
// chunk = max(64, round_up(ceil(sum_b (keys_b + 64) / num_workers), 64)); sequence b gets
// max(1, ceil(keys_b / chunk)) splits, so the total is <= batch + num_workers.
LONGCAT_HD inline int64_t decode_split_chunk(int64_t total_cost, int64_t num_workers) {
  int64_t per = (total_cost + num_workers - 1) / num_workers;
  per = (per + 63) / 64 * 64;
  return per < 64 ? 64 : per;
}
LONGCAT_HD inline int64_t decode_num_splits(int64_t keys, int64_t chunk) {
  int64_t s = (keys + chunk - 1) / chunk;
  return s < 1 ? 1 : s;
}

struct DecodeMetadataArgs {
  int32_t* metadata;         // [batch + 1, 2]
  const int32_t* cache_seqlens;  // [batch]
  int64_t batch, s_q, num_workers;
  bool causal;
  WindowArgs window;
  Device device;
};

struct MlaDecodeArgs {
  void* out;                 // [batch, s_q, h_q, dv] contiguous
  float* lse;                // [batch, h_q, s_q]
  const void* q;             // [batch, s_q, h_q, 576], strides q_stride_b, q_stride_s, q_stride_h
  const void* kv_cache;      // [num_pages, page_size, 576] contiguous
  const int32_t* block_table;  // [batch, max_pages], row stride block_table_stride
  const int32_t* cache_seqlens;  // [batch]
  const int32_t* metadata;   // [batch + 1, 2]
  float* workspace_out;      // [max_splits, s_q, h_q, dv] fp32 partial outputs
  float* workspace_lse;      // [max_splits, s_q, h_q] fp32 partial lse
  int64_t batch, s_q, h_q, d_qk, dv, num_pages, page_size, max_pages, block_table_stride;
  int64_t q_stride_b, q_stride_s, q_stride_h;
  int64_t num_workers, max_splits;
  float scale;
  bool causal;
  WindowArgs window;
  DType dtype;
  Device device;
};

struct MlaPrefillArgs {
  void* out;                 // [total_q, h, dv] contiguous
  float* lse;                // [h, total_q]
  const void* q;             // [total_q, h, d_qk], strides q_stride_t, q_stride_h
  const void* k;             // [total_k, h_k, d_qk], strides k_stride_t, k_stride_h
  const void* v;             // [total_k, h_k, dv], strides v_stride_t, v_stride_h
  const int32_t* cu_seqlens_q;  // [batch + 1]
  const int32_t* cu_seqlens_k;  // [batch + 1]
  int64_t batch, total_q, total_k, h, h_k, d_qk, dv, max_seqlen_q, max_seqlen_k;
  int64_t q_stride_t, q_stride_h, k_stride_t, k_stride_h, v_stride_t, v_stride_h;
  float scale;
  bool causal;
  WindowArgs window;
  DType dtype;
  Device device;
};

#if defined(LONGCAT_WITH_CUDA_RUNTIME)
namespace cuda {
void mla_decode_metadata(const DecodeMetadataArgs& a, Stream stream);
void mla_decode(const MlaDecodeArgs& a, Stream stream);
void mla_prefill(const MlaPrefillArgs& a, Stream stream);
}  // namespace cuda
#endif

}  // namespace longcat
