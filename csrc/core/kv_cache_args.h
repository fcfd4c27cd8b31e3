// KV-cache and RoPE kernel arguments after validation, shared by the CPU and CUDA backends
// (internal). Semantics: csrc/include/longcat/kv_cache.h. Strides are in elements.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "longcat/common.h"
#include "longcat/kv_cache.h"

namespace longcat {

struct RopeArgs {
  void* out;                 // [rows, D] contiguous, rows = T * (product of middle dims)
  const void* x;             // [T, M, D] with strides x_stride_t, x_stride_m (last dim contiguous)
  const void* positions;     // [T]
  const float* inv_freq;     // [dim / 2]
  bool positions_int64;
  int64_t tokens, middle, dim, x_stride_t, x_stride_m;
  bool half_output;
  DType dtype;
  Device device;
};

struct AppendKvArgs {
  void* kv_cache;            // [num_pages, page_size, 576] contiguous
  const void* latent;        // [T, 512], row stride latent_stride
  const void* rope_k;        // [T, 64], row stride rope_stride
  const int32_t* block_table;  // [batch, max_pages], row stride block_table_stride
  const int32_t* seq_ids;    // [T]
  const int32_t* positions;  // [T]
  int64_t tokens, num_pages, page_size, batch, max_pages, block_table_stride;
  int64_t latent_stride, rope_stride;
  DType dtype;
  Device device;
};

struct GatherKvArgs {
  void* out;                 // [total, 576] contiguous
  const void* kv_cache;      // [num_pages, page_size, 576] contiguous
  const int32_t* block_table;
  const int32_t* cache_seqlens;  // [batch]
  const int32_t* cu_seqlens;     // [batch + 1]
  int64_t batch, num_pages, page_size, max_pages, block_table_stride, total;
  DType dtype;
  Device device;
};

// A validated kv_copy_blocks call as runs of consecutive pages: run r copies run_pages[r] pages
// from src page run_src[r] to dst page run_dst[r]. Host vectors (the ids are host tensors).
struct KvCopyPlan {
  void* dst;
  const void* src;
  const int32_t* src_ids;    // [pages], the validated page pairs (the CPU path copies these)
  const int32_t* dst_ids;
  const int32_t* run_src;
  const int32_t* run_dst;
  const int32_t* run_pages;
  int64_t runs, pages, page_bytes;
  Device src_device, dst_device;
};

// kv_copy_blocks' checks and CPU copy in parts (api/kv_cache.cpp), shared with KvCopyQueue
// (api/kv_copy_queue.cpp), which checks a whole transfer once and copies its chunks later.
namespace kv_copy {

// One pool pair and the method, as kv_copy_blocks checks them; the args name the pools in
// errors. Returns whether both are the same pool (then no page may be read and written in one
// copy).
bool check_pools(const char* op, const TensorView& src_pool, const char* src_arg, const TensorView& dst_pool,
                 const char* dst_arg, KvCopyMethod method);

// src_ids, dst_ids: [n] int32 contiguous CPU tensors (one destination per source), read into
// host vectors: what is checked is what the copy reads.
struct Ids {
  std::vector<int32_t> src, dst;
};
Ids read_ids(const char* op, const TensorView& src_ids, const TensorView& dst_ids);

// The n page pairs of one copy: ids in [0, src_pages) and [0, dst_pages) (src_pool / dst_pool
// name the pools bounding them), no destination twice, and with same_pool no page both read and
// written. `base` is the index errors give src[0] (a chunk's offset in its transfer).
void check_ids(const char* op, const int32_t* src, const int32_t* dst, int64_t n, int64_t base, int64_t src_pages,
               const char* src_pool, int64_t dst_pages, const char* dst_pool, bool same_pool);

// Within one pool, no page both read and written by the n page pairs of one copy (the range and
// destination checks of check_ids are not repeated).
void check_same_pool_copy(const char* op, const int32_t* src, const int32_t* dst, int64_t n, int64_t base);

// Every layer's pool pair as check_pools checks it (named src_pools[l] / dst_pools[l]), the
// same number (>= 1) of each, and one device per side. The ids of a copy over all layers are
// bounded by the smallest pool of each side (its page count and name here).
struct Layers {
  bool any_same_pool;  // some layer copies within one pool
  int64_t src_pages, dst_pages;
  std::string src_name, dst_name;
};
Layers check_layers(const char* op, const std::vector<TensorView>& src_pools, const std::vector<TensorView>& dst_pools,
                    KvCopyMethod method);

// dst_pool[dst[i]] = src_pool[src[i]] on the calling thread's share of the CPU pool, for pools
// and ids checked above.
void copy_cpu(const TensorView& src_pool, const TensorView& dst_pool, const int32_t* src, const int32_t* dst,
              int64_t n);

}  // namespace kv_copy

#if defined(LONGCAT_WITH_CUDA_RUNTIME)
namespace cuda {
void rope_interleaved(const RopeArgs& a, Stream stream);
void mla_append_kv(const AppendKvArgs& a, Stream stream);
void mla_gather(const GatherKvArgs& a, Stream stream);
// Validated in api/kv_cache.cpp; checks that a host pool is pinned, picks the method for Auto.
KvCopyMethod kv_copy_blocks(const KvCopyPlan& p, KvCopyMethod method, Stream stream);
}  // namespace cuda
#endif

}  // namespace longcat
