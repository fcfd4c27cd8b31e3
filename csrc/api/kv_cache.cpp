// Paged latent KV cache writes and reads (mla_append_kv, mla_gather) and interleaved RoPE:
// argument checks and the choice of backend. The CPU row copies are in kv_cache_kernels.inc, the
// RoPE kernel in kv_cache_rope.inc. Semantics: longcat/mla.h.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "core/checks.h"
#include "core/kv_cache_args.h"
#include "cpu/isa_dispatch.h"
#include "longcat/kv_cache.h"

namespace longcat {
namespace cpu {
LONGCAT_DECLARE_ISA_FN(void, rope_interleaved, const RopeArgs&)
LONGCAT_DECLARE_ISA_FN(void, kv_copy_blocks, const KvCopyPlan&, bool)
LONGCAT_DECLARE_ISA_FN(void, mla_append_kv, const AppendKvArgs&)
LONGCAT_DECLARE_ISA_FN(void, mla_gather, const GatherKvArgs&)
}  // namespace cpu

namespace {

// kv_cache [num_pages, page_size, 1, 576], contiguous.
// The page layout [num_pages, page_size, 1, 576], contiguous (dtype checked by the caller).
void check_kv_pages(const char* op, const TensorView& kv, const char* arg) {
  check_ndim(op, arg, kv, 4);
  check_size(op, arg, kv, 2, 1, "1 (one latent KV head)");
  check_size(op, arg, kv, 3, kMlaDimQK, "576 (512 latent + 64 rope)");
  check_contiguous(op, arg, kv);
  if (kv.shape[1] < 1) fail(ErrorKind::Value, arg_prefix(op, arg) + "must have page_size >= 1, got " + shape_str(kv));
}

void check_kv_cache(const char* op, const TensorView& kv, const char* arg = "kv_cache") {
  check_float_dtype(op, arg, kv);
  check_kv_pages(op, kv, arg);
}

// block_table [batch, max_pages] int32 with a unit stride along pages.
void check_block_table(const char* op, const TensorView& bt, const TensorView& kv) {
  check_dtype(op, "block_table", bt, {DType::Int32});
  check_ndim(op, "block_table", bt, 2);
  check_same_device(op, "block_table", bt, "kv_cache", kv);
  if (bt.shape[1] > 1 && bt.strides[1] != 1)
    fail(ErrorKind::Value, arg_prefix(op, "block_table") + "must be contiguous along its last dim");
}

void check_vector(const char* op, const char* arg, const TensorView& t, int64_t n, const char* what,
                  const TensorView& ref) {
  check_aux(op, arg, t, DType::Int32, {n}, what, "kv_cache", ref);
}

}  // namespace

// ---- rope_interleaved ------------------------------------------------------------------------

void rope_interleaved(const TensorView& out, const TensorView& x, const TensorView& positions,
                      const TensorView& inv_freq, bool half_output, Stream stream) {
  const char* op = "rope_interleaved";
  check_views(op, {{"x", &x}, {"positions", &positions}, {"inv_freq", &inv_freq}, {"out", &out}});
  check_float_dtype(op, "x", x);
  if (x.ndim < 2 || x.ndim > 3)
    fail(ErrorKind::Value, arg_prefix(op, "x") + "must have shape [T, D] or [T, heads, D], got " + shape_str(x));
  const int64_t D = x.size(-1);
  if (D < 2 || D % 2 != 0 || D > 4096)
    fail(ErrorKind::Value, arg_prefix(op, "x") + "must have an even last dim in [2, 4096], got " + shape_str(x));
  check_last_dim_contiguous(op, "x", x);
  check_same_dtype(op, "out", out, "x", x);
  check_same_shape(op, "out", out, "x", x);
  check_contiguous(op, "out", out);
  check_same_device(op, "out", out, "x", x);
  check_dtype(op, "positions", positions, {DType::Int32, DType::Int64});
  check_ndim(op, "positions", positions, 1);
  check_size(op, "positions", positions, 0, x.shape[0], "x.shape[0] (one position per token)");
  check_contiguous(op, "positions", positions);
  check_same_device(op, "positions", positions, "x", x);
  check_dtype(op, "inv_freq", inv_freq, {DType::Float32});
  check_ndim(op, "inv_freq", inv_freq, 1);
  check_size(op, "inv_freq", inv_freq, 0, D / 2, "x.shape[-1] / 2");
  check_contiguous(op, "inv_freq", inv_freq);
  check_same_device(op, "inv_freq", inv_freq, "x", x);
  check_cuda_built(op, "x", x);
  check_no_overlap(op, "out", out, "positions", positions);
  check_no_overlap(op, "out", out, "inv_freq", inv_freq);
  RopeArgs a{};
  a.out = out.data;
  a.x = x.data;
  a.positions = positions.data;
  a.positions_int64 = positions.dtype == DType::Int64;
  a.tokens = x.shape[0];
  a.middle = x.ndim == 3 ? x.shape[1] : 1;
  a.dim = D;
  a.x_stride_t = x.strides[0];
  a.x_stride_m = x.ndim == 3 ? x.strides[1] : D;
  a.inv_freq = inv_freq.ptr<float>();
  a.half_output = half_output;
  a.dtype = x.dtype;
  a.device = x.device;
  if (a.tokens == 0 || a.middle == 0) return;
  // In place is allowed only as exact aliasing; a partial overlap would read rotated values.
  if (out.data != x.data) {
    const char* xb = static_cast<const char*>(x.data);
    const char* ob = static_cast<const char*>(out.data);
    const int64_t bytes = out.numel() * dtype_size(out.dtype);
    const int64_t xspan = ((a.tokens - 1) * a.x_stride_t + (a.middle - 1) * a.x_stride_m + D) * dtype_size(x.dtype);
    if (ob < xb + xspan && xb < ob + bytes)
      fail(ErrorKind::Value, arg_prefix(op, "out") + "overlaps 'x' without being x itself");
  } else if (!x.is_contiguous()) {
    fail(ErrorKind::Value, arg_prefix(op, "out") + "may be x only when x is contiguous");
  }
  if (x.device.type == DeviceType::CPU) {
    const int64_t* p64 = a.positions_int64 ? positions.ptr<int64_t>() : nullptr;
    const int32_t* p32 = a.positions_int64 ? nullptr : positions.ptr<int32_t>();
    for (int64_t t = 0; t < a.tokens; ++t) {
      const int64_t p = p64 ? p64[t] : p32[t];
      if (p < 0)
        fail(ErrorKind::Value, arg_prefix(op, "positions") + "must be >= 0, got " + std::to_string(p) +
                                   " at index " + std::to_string(t));
    }
  }
#if defined(LONGCAT_WITH_CUDA_RUNTIME)
  if (x.device.type == DeviceType::CUDA) return cuda::rope_interleaved(a, stream);
#endif
  (void)stream;
  LONGCAT_ISA_CALL(rope_interleaved, a);
}

// ---- mla_append_kv ---------------------------------------------------------------------------

void mla_append_kv(const TensorView& kv_cache, const TensorView& latent, const TensorView& rope_k,
                   const TensorView& block_table, const TensorView& seq_ids,
                   const TensorView& positions, Stream stream) {
  const char* op = "mla_append_kv";
  check_views(op, {{"kv_cache", &kv_cache}, {"latent", &latent}, {"rope_k", &rope_k}, {"block_table", &block_table},
                   {"seq_ids", &seq_ids}, {"positions", &positions}});
  check_kv_cache(op, kv_cache);
  check_same_dtype(op, "latent", latent, "kv_cache", kv_cache);
  check_same_dtype(op, "rope_k", rope_k, "kv_cache", kv_cache);
  check_ndim(op, "latent", latent, 2);
  check_size(op, "latent", latent, 1, kMlaDimV, "512 (kv_lora_rank)");
  check_ndim(op, "rope_k", rope_k, 2);
  check_size(op, "rope_k", rope_k, 1, kMlaDimRope, "64 (qk_rope_head_dim)");
  const int64_t T = latent.shape[0];
  check_size(op, "rope_k", rope_k, 0, T, "latent.shape[0]");
  check_same_device(op, "latent", latent, "kv_cache", kv_cache);
  check_same_device(op, "rope_k", rope_k, "kv_cache", kv_cache);
  check_block_table(op, block_table, kv_cache);
  check_vector(op, "seq_ids", seq_ids, T, "latent.shape[0]", kv_cache);
  check_vector(op, "positions", positions, T, "latent.shape[0]", kv_cache);
  check_cuda_built(op, "kv_cache", kv_cache);
  for (auto [name, in] : {NamedView{"latent", &latent}, NamedView{"rope_k", &rope_k}, NamedView{"block_table", &block_table},
                          NamedView{"seq_ids", &seq_ids}, NamedView{"positions", &positions}})
    check_no_overlap(op, "kv_cache", kv_cache, name, *in);
  AppendKvArgs a{};
  a.kv_cache = kv_cache.data;
  a.latent = latent.data;
  a.rope_k = rope_k.data;
  a.block_table = block_table.ptr<int32_t>();
  a.seq_ids = seq_ids.ptr<int32_t>();
  a.positions = positions.ptr<int32_t>();
  a.tokens = T;
  a.num_pages = kv_cache.shape[0];
  a.page_size = kv_cache.shape[1];
  a.batch = block_table.shape[0];
  a.max_pages = block_table.shape[1];
  a.block_table_stride = block_table.strides[0];
  a.latent_stride = T ? row_stride(op, "latent", latent) : kMlaDimV;
  a.rope_stride = T ? row_stride(op, "rope_k", rope_k) : kMlaDimRope;
  a.dtype = kv_cache.dtype;
  a.device = kv_cache.device;
  if (T == 0) return;
#if defined(LONGCAT_WITH_CUDA_RUNTIME)
  if (kv_cache.device.type == DeviceType::CUDA) return cuda::mla_append_kv(a, stream);
#endif
  (void)stream;
  // Snapshots of the index inputs: the destinations checked below are the ones written.
  const std::vector<int32_t> seq = snapshot_int32(seq_ids), pos = snapshot_int32(positions),
                             table = snapshot_int32(block_table);
  a.seq_ids = seq.data();
  a.positions = pos.data();
  a.block_table = table.data();
  a.block_table_stride = a.max_pages;
  // Check every destination before writing any, so a bad id leaves the cache untouched.
  for (int64_t t = 0; t < T; ++t) {
    const int64_t s = a.seq_ids[t], p = a.positions[t];
    if (s < 0 || s >= a.batch)
      fail(ErrorKind::Value, arg_prefix(op, "seq_ids") + "must be in [0, " + std::to_string(a.batch) +
                                 ") (block_table rows), got " + std::to_string(s) + " at index " + std::to_string(t));
    if (p < 0 || p / a.page_size >= a.max_pages)
      fail(ErrorKind::Value, arg_prefix(op, "positions") + "must be in [0, max_pages * page_size = " +
                                 std::to_string(a.max_pages * a.page_size) + "), got " + std::to_string(p) +
                                 " at index " + std::to_string(t));
    const int64_t page = a.block_table[s * a.block_table_stride + p / a.page_size];
    if (page < 0 || page >= a.num_pages)
      fail(ErrorKind::Value, arg_prefix(op, "block_table") + "entry [" + std::to_string(s) + ", " +
                                 std::to_string(p / a.page_size) + "] = " + std::to_string(page) +
                                 " is not a page of kv_cache (num_pages " + std::to_string(a.num_pages) + ")");
  }
  LONGCAT_ISA_CALL(mla_append_kv, a);
}

// ---- mla_gather ------------------------------------------------------------------------------

void mla_gather(const TensorView& out, const TensorView& kv_cache, const TensorView& block_table,
                const TensorView& cache_seqlens, const TensorView& cu_seqlens, Stream stream) {
  const char* op = "mla_gather";
  check_views(op, {{"out", &out}, {"kv_cache", &kv_cache}, {"block_table", &block_table},
                   {"cache_seqlens", &cache_seqlens}, {"cu_seqlens", &cu_seqlens}});
  check_kv_cache(op, kv_cache);
  check_block_table(op, block_table, kv_cache);
  const int64_t B = block_table.shape[0];
  check_vector(op, "cache_seqlens", cache_seqlens, B, "block_table.shape[0] (batch)", kv_cache);
  check_vector(op, "cu_seqlens", cu_seqlens, B + 1, "batch + 1", kv_cache);
  check_same_dtype(op, "out", out, "kv_cache", kv_cache);
  check_ndim(op, "out", out, 2);
  check_size(op, "out", out, 1, kMlaDimQK, "576");
  check_contiguous(op, "out", out);
  check_same_device(op, "out", out, "kv_cache", kv_cache);
  check_cuda_built(op, "kv_cache", kv_cache);
  for (auto [name, in] : {NamedView{"kv_cache", &kv_cache}, NamedView{"block_table", &block_table},
                          NamedView{"cache_seqlens", &cache_seqlens}, NamedView{"cu_seqlens", &cu_seqlens}})
    check_no_overlap(op, "out", out, name, *in);
  GatherKvArgs a{};
  a.out = out.data;
  a.kv_cache = kv_cache.data;
  a.block_table = block_table.ptr<int32_t>();
  a.cache_seqlens = cache_seqlens.ptr<int32_t>();
  a.cu_seqlens = cu_seqlens.ptr<int32_t>();
  a.batch = B;
  a.num_pages = kv_cache.shape[0];
  a.page_size = kv_cache.shape[1];
  a.max_pages = block_table.shape[1];
  a.block_table_stride = block_table.strides[0];
  a.total = out.shape[0];
  a.dtype = kv_cache.dtype;
  a.device = kv_cache.device;
  if (B == 0) return;
#if defined(LONGCAT_WITH_CUDA_RUNTIME)
  if (kv_cache.device.type == DeviceType::CUDA) return cuda::mla_gather(a, stream);
#endif
  (void)stream;
  const std::vector<int32_t> lens = snapshot_int32(cache_seqlens), cu = snapshot_int32(cu_seqlens),
                             table = snapshot_int32(block_table);
  a.cache_seqlens = lens.data();
  a.cu_seqlens = cu.data();
  a.block_table = table.data();
  a.block_table_stride = a.max_pages;
  if (a.cu_seqlens[0] != 0)
    fail(ErrorKind::Value, arg_prefix(op, "cu_seqlens") + "must start at 0, got " + std::to_string(a.cu_seqlens[0]));
  for (int64_t b = 0; b < B; ++b) {
    const int64_t L = a.cache_seqlens[b];
    if (L < 0)
      fail(ErrorKind::Value, arg_prefix(op, "cache_seqlens") + "must be >= 0, got " + std::to_string(L) +
                                 " at index " + std::to_string(b));
    if (int64_t{a.cu_seqlens[b + 1]} - a.cu_seqlens[b] != L)  // in int64: an int32 prefix sum may wrap
      fail(ErrorKind::Value, arg_prefix(op, "cu_seqlens") + "must be the prefix sum of cache_seqlens; entry " +
                                 std::to_string(b + 1) + " is " + std::to_string(a.cu_seqlens[b + 1]));
    if ((L + a.page_size - 1) / a.page_size > a.max_pages)
      fail(ErrorKind::Value, arg_prefix(op, "block_table") + "has " + std::to_string(a.max_pages) +
                                 " pages per sequence, too few for cache_seqlens[" + std::to_string(b) +
                                 "] = " + std::to_string(L) + " with page_size " + std::to_string(a.page_size));
    for (int64_t i = 0; i < (L + a.page_size - 1) / a.page_size; ++i) {
      const int64_t page = a.block_table[b * a.block_table_stride + i];
      if (page < 0 || page >= a.num_pages)
        fail(ErrorKind::Value, arg_prefix(op, "block_table") + "entry [" + std::to_string(b) + ", " +
                                   std::to_string(i) + "] = " + std::to_string(page) +
                                   " is not a page of kv_cache (num_pages " + std::to_string(a.num_pages) + ")");
    }
  }
  if (a.cu_seqlens[B] != a.total)
    fail(ErrorKind::Value, arg_prefix(op, "out") + "must have cu_seqlens[-1] = " + std::to_string(a.cu_seqlens[B]) +
                               " rows, got " + shape_str(out));
  LONGCAT_ISA_CALL(mla_gather, a);
}

// ---- kv_copy_blocks ----------------------------------------------------------------------------
// The checks below are kv_copy_blocks' and KvCopyQueue's (api/kv_copy_queue.cpp) alike.

namespace {

// From this many bytes per call the CPU path writes with non-temporal stores (kv_cache_kernels.inc).
// A swapped page is not read again soon, and a cached store first reads the destination line
// from DRAM (read-for-ownership): streaming saves that read, a third of the traffic, and leaves
// the model's working set in the caches. Measured on Zen 4 (1 thread, scattered 73.7 KB pages
// from and to pools larger than the L3): 1.35x faster than memcpy at 16 pages, 1.4x at 64; Zen 5
// (AVX-512, with the prefetch in kv_cache_kernels.inc): 1.15-1.2x at 16-512 pages.
// Below a few pages (256 KiB, a quarter of a core's L2) the destination may still be cached and
// there is little traffic to save, so memcpy keeps those. Sizes that fit the L3 (32 MB here)
// stream too: Zen 5, scattered pages after a 64 MB cache scrub, thread CPU time, 16 / 128 / 512
// pages: 76 / 550 / 2188 us streamed against 90 / 851 / 2791 us with AVX-512 cached stores
// (memcpy of the same bytes, contiguous: 71 / 548 / 2509 us); only with the 2.4 MB of a
// 16-page copy already hot in the caches do cached stores win (23 against 33 us), which a swap's
// destination rarely is.
constexpr int64_t kNonTemporalBytes = int64_t{256} << 10;

void check_id_tensor(const char* op, const char* arg, const TensorView& ids) {
  check_dtype(op, arg, ids, {DType::Int32});
  check_ndim(op, arg, ids, 1);
  check_contiguous(op, arg, ids);
  if (ids.device.type != DeviceType::CPU)
    fail(ErrorKind::Value, arg_prefix(op, arg) + "must be a CPU tensor (the host validates and plans the copy), "
                               "got a CUDA tensor");
}

// Every id in [0, pages); `pool` names the pool in the message, `base` is ids[0]'s index.
void check_id_range(const char* op, const char* arg, const int32_t* ids, int64_t n, int64_t base, int64_t pages,
                    const char* pool) {
  for (int64_t i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= pages)
      fail(ErrorKind::Value, arg_prefix(op, arg) + "must hold page ids in [0, " + std::to_string(pages) + ") (" +
                                 pool + ".shape[0]), got " + std::to_string(ids[i]) + " at index " +
                                 std::to_string(base + i));
}

// No destination page twice. The (page, index) pairs are sorted, O(n log n) in the ids of the
// call: a page-indexed table would cost O(pool pages) per call (a swap of 16 pages into a host
// tier of 10^5 pages would clear 800 KB per layer for a check over 16 ids). The error names the
// first repeat in call order. Returns the sorted pairs (check_reads_not_written uses them).
// (page, index) pairs of the destinations, sorted: equal pages are adjacent, the first writer first.
std::vector<std::pair<int32_t, int64_t>> sorted_writes(const int32_t* dst, int64_t n) {
  std::vector<std::pair<int32_t, int64_t>> w(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) w[i] = {dst[i], i};
  std::sort(w.begin(), w.end());
  return w;
}

std::vector<std::pair<int32_t, int64_t>> check_distinct_dst(const char* op, const int32_t* dst, int64_t n,
                                                            int64_t base) {
  std::vector<std::pair<int32_t, int64_t>> w = sorted_writes(dst, n);
  int64_t bad = -1, bad_first = -1;  // the repeat with the smallest index, and its page's first writer
  for (int64_t k = 1, group = 0; k < n; ++k) {
    if (w[k].first != w[k - 1].first) {
      group = k;
    } else if (bad < 0 || w[k].second < bad) {
      bad = w[k].second;
      bad_first = w[group].second;
    }
  }
  if (bad >= 0)
    fail(ErrorKind::Value, arg_prefix(op, "dst_ids") + "must not repeat a destination page; page " +
                               std::to_string(dst[bad]) + " appears at indices " + std::to_string(base + bad_first) +
                               " and " + std::to_string(base + bad));
  return w;
}

// Within one pool: no page both read and written by one copy (its pages move in parallel).
// `written`: the copy's (dst page, index) pairs, sorted.
void check_reads_not_written(const char* op, const int32_t* src, int64_t n, int64_t base,
                             const std::vector<std::pair<int32_t, int64_t>>& written) {
  for (int64_t i = 0; i < n; ++i) {
    auto it = std::lower_bound(written.begin(), written.end(), std::pair<int32_t, int64_t>{src[i], -1});
    if (it != written.end() && it->first == src[i])
      fail(ErrorKind::Value, arg_prefix(op, "src_ids") + "reads page " + std::to_string(src[i]) + " at index " +
                                 std::to_string(base + i) + ", which dst_ids[" + std::to_string(base + it->second) +
                                 "] writes in the same pool (the copies run in parallel: overlapping ranges "
                                 "are refused)");
  }
}

}  // namespace

namespace kv_copy {

bool check_pools(const char* op, const TensorView& src_pool, const char* src_arg, const TensorView& dst_pool,
                 const char* dst_arg, KvCopyMethod method) {
  check_views(op, {{src_arg, &src_pool}, {dst_arg, &dst_pool}});
  // Any float dtype on either side: a pinned host pool of a float16 device cache is float16 too.
  check_dtype(op, src_arg, src_pool, {DType::Float32, DType::BFloat16, DType::Float16});
  check_kv_pages(op, src_pool, src_arg);
  check_kv_pages(op, dst_pool, dst_arg);
  check_same_dtype(op, dst_arg, dst_pool, src_arg, src_pool);
  const std::string same_page = std::string(src_arg) + ".shape[1] (the same page_size)";
  check_size(op, dst_arg, dst_pool, 1, src_pool.shape[1], same_page.c_str());
  const int m = static_cast<int>(method);
  if (m < 0 || m > static_cast<int>(KvCopyMethod::MemcpyPerBlock))
    fail(ErrorKind::Value, arg_prefix(op, "method") + "must be one of Auto, CpuThreads, Kernel, MemcpyBatch, "
                               "MemcpyPerBlock, got " + std::to_string(m));
  const bool on_cuda = src_pool.device.type == DeviceType::CUDA || dst_pool.device.type == DeviceType::CUDA;
  if (on_cuda) {
    check_cuda_built(op, src_pool.device.type == DeviceType::CUDA ? src_arg : dst_arg,
                     src_pool.device.type == DeviceType::CUDA ? src_pool : dst_pool);
    if (src_pool.device.type == DeviceType::CUDA && dst_pool.device.type == DeviceType::CUDA)
      check_same_device(op, dst_arg, dst_pool, src_arg, src_pool);
    if (method == KvCopyMethod::CpuThreads)
      fail(ErrorKind::Value, arg_prefix(op, "method") + "CpuThreads copies host pools only; a pool is on CUDA");
  } else if (method != KvCopyMethod::Auto && method != KvCopyMethod::CpuThreads) {
    fail(ErrorKind::Value, arg_prefix(op, "method") + "must be Auto or CpuThreads for two host pools, got a CUDA "
                               "method (" + std::to_string(m) + ")");
  }
  // The same pool on both sides is allowed (compaction, duplication); a partial overlap is not.
  const bool same_pool = src_pool.data == dst_pool.data && src_pool.device == dst_pool.device &&
                         src_pool.shape[0] == dst_pool.shape[0];
  if (!same_pool) check_no_overlap(op, dst_arg, dst_pool, src_arg, src_pool);
  return same_pool;
}

Ids read_ids(const char* op, const TensorView& src_ids, const TensorView& dst_ids) {
  check_views(op, {{"src_ids", &src_ids}, {"dst_ids", &dst_ids}});
  check_id_tensor(op, "src_ids", src_ids);
  check_id_tensor(op, "dst_ids", dst_ids);
  check_size(op, "dst_ids", dst_ids, 0, src_ids.shape[0], "src_ids.shape[0] (one destination per source)");
  // Snapshots: what is validated is what the copy reads, even if the caller's ids change.
  return {snapshot_int32(src_ids), snapshot_int32(dst_ids)};
}

void check_ids(const char* op, const int32_t* src, const int32_t* dst, int64_t n, int64_t base, int64_t src_pages,
               const char* src_pool, int64_t dst_pages, const char* dst_pool, bool same_pool) {
  check_id_range(op, "src_ids", src, n, base, src_pages, src_pool);
  check_id_range(op, "dst_ids", dst, n, base, dst_pages, dst_pool);
  const auto written = check_distinct_dst(op, dst, n, base);
  if (same_pool) check_reads_not_written(op, src, n, base, written);
}

void check_same_pool_copy(const char* op, const int32_t* src, const int32_t* dst, int64_t n, int64_t base) {
  check_reads_not_written(op, src, n, base, sorted_writes(dst, n));
}

Layers check_layers(const char* op, const std::vector<TensorView>& src_pools, const std::vector<TensorView>& dst_pools,
                    KvCopyMethod method) {
  if (src_pools.empty() || src_pools.size() != dst_pools.size())
    fail(ErrorKind::Value, std::string(op) + ": arguments 'src_pools' and 'dst_pools' must hold the same number "
                               "(>= 1) of pools, got " + std::to_string(src_pools.size()) + " and " +
                               std::to_string(dst_pools.size()));
  Layers out{};
  size_t src_at = 0, dst_at = 0;  // the smallest pool of each side
  for (size_t l = 0; l < src_pools.size(); ++l) {
    const std::string s = "src_pools[" + std::to_string(l) + "]", d = "dst_pools[" + std::to_string(l) + "]";
    out.any_same_pool |= check_pools(op, src_pools[l], s.c_str(), dst_pools[l], d.c_str(), method);
    // One device per side for every layer, so that one path (and its checks) serves all layers.
    if (!(src_pools[l].device == src_pools[0].device))
      fail(ErrorKind::Value, arg_prefix(op, s.c_str()) + "must be on the device of 'src_pools[0]' (" +
                                 device_name(src_pools[0].device) + "), got " + device_name(src_pools[l].device));
    if (!(dst_pools[l].device == dst_pools[0].device))
      fail(ErrorKind::Value, arg_prefix(op, d.c_str()) + "must be on the device of 'dst_pools[0]' (" +
                                 device_name(dst_pools[0].device) + "), got " + device_name(dst_pools[l].device));
    if (src_pools[l].shape[0] < src_pools[src_at].shape[0]) src_at = l;
    if (dst_pools[l].shape[0] < dst_pools[dst_at].shape[0]) dst_at = l;
  }
  out.src_pages = src_pools[src_at].shape[0];
  out.dst_pages = dst_pools[dst_at].shape[0];
  out.src_name = "src_pools[" + std::to_string(src_at) + "]";
  out.dst_name = "dst_pools[" + std::to_string(dst_at) + "]";
  return out;
}

void copy_cpu(const TensorView& src_pool, const TensorView& dst_pool, const int32_t* src, const int32_t* dst,
              int64_t n) {
  if (n == 0) return;
  KvCopyPlan p{};
  p.dst = dst_pool.data;
  p.src = src_pool.data;
  p.src_ids = src;
  p.dst_ids = dst;
  p.pages = n;
  p.page_bytes = src_pool.shape[1] * kMlaDimQK * dtype_size(src_pool.dtype);
  p.src_device = src_pool.device;
  p.dst_device = dst_pool.device;
  LONGCAT_ISA_CALL(kv_copy_blocks, p, n * p.page_bytes >= kNonTemporalBytes);
}

}  // namespace kv_copy

KvCopyMethod kv_copy_blocks(const TensorView& src_pool, const TensorView& dst_pool, const TensorView& src_ids,
                            const TensorView& dst_ids, Stream stream, KvCopyMethod method) {
  const char* op = "kv_copy_blocks";
  const bool same_pool = kv_copy::check_pools(op, src_pool, "src_pool", dst_pool, "dst_pool", method);
  const kv_copy::Ids ids = kv_copy::read_ids(op, src_ids, dst_ids);
  check_no_overlap(op, "dst_pool", dst_pool, "src_ids", src_ids);
  check_no_overlap(op, "dst_pool", dst_pool, "dst_ids", dst_ids);
  const std::vector<int32_t>&src = ids.src, &dst = ids.dst;
  const int64_t n = static_cast<int64_t>(src.size());
  kv_copy::check_ids(op, src.data(), dst.data(), n, 0, src_pool.shape[0], "src_pool", dst_pool.shape[0], "dst_pool",
                     same_pool);
#if defined(LONGCAT_WITH_CUDA_RUNTIME)
  if (src_pool.device.type == DeviceType::CUDA || dst_pool.device.type == DeviceType::CUDA) {
    // Runs of consecutive pages on both sides become one copy each (DMA paths).
    std::vector<int32_t> run_src, run_dst, run_pages;
    for (int64_t i = 0; i < n; ++i) {
      if (!run_pages.empty() && src[i] == run_src.back() + run_pages.back() && dst[i] == run_dst.back() + run_pages.back()) {
        ++run_pages.back();
      } else {
        run_src.push_back(src[i]);
        run_dst.push_back(dst[i]);
        run_pages.push_back(1);
      }
    }
    KvCopyPlan p{};
    p.dst = dst_pool.data;
    p.src = src_pool.data;
    p.src_ids = src.data();
    p.dst_ids = dst.data();
    p.run_src = run_src.data();
    p.run_dst = run_dst.data();
    p.run_pages = run_pages.data();
    p.runs = static_cast<int64_t>(run_pages.size());
    p.pages = n;
    p.page_bytes = src_pool.shape[1] * kMlaDimQK * dtype_size(src_pool.dtype);
    p.src_device = src_pool.device;
    p.dst_device = dst_pool.device;
    return cuda::kv_copy_blocks(p, method, stream);
  }
#endif
  (void)stream;
  kv_copy::copy_cpu(src_pool, dst_pool, src.data(), dst.data(), n);
  return KvCopyMethod::CpuThreads;
}

void kv_copy_blocks_layers(const std::vector<TensorView>& src_pools, const std::vector<TensorView>& dst_pools,
                           const TensorView& src_ids, const TensorView& dst_ids, Stream stream, KvCopyMethod method) {
  const char* op = "kv_copy_blocks_layers";
  const kv_copy::Layers layers = kv_copy::check_layers(op, src_pools, dst_pools, method);
  const kv_copy::Ids ids = kv_copy::read_ids(op, src_ids, dst_ids);
  const int64_t n = static_cast<int64_t>(ids.src.size());
  kv_copy::check_ids(op, ids.src.data(), ids.dst.data(), n, 0, layers.src_pages, layers.src_name.c_str(),
                     layers.dst_pages, layers.dst_name.c_str(), layers.any_same_pool);
  for (size_t l = 0; l < dst_pools.size(); ++l) {
    const std::string d = "dst_pools[" + std::to_string(l) + "]";
    check_no_overlap(op, d.c_str(), dst_pools[l], "src_ids", src_ids);
    check_no_overlap(op, d.c_str(), dst_pools[l], "dst_ids", dst_ids);
  }
  const bool on_cuda = src_pools[0].device.type == DeviceType::CUDA || dst_pools[0].device.type == DeviceType::CUDA;
  if (!on_cuda) {
    for (size_t l = 0; l < src_pools.size(); ++l)
      kv_copy::copy_cpu(src_pools[l], dst_pools[l], ids.src.data(), ids.dst.data(), n);
    return;
  }
  // CUDA: kv_copy_blocks per layer plans the runs and checks pinning; every layer's pools are on
  // one device per side and every id was checked above, so layer 0 fails before anything moves.
  for (size_t l = 0; l < src_pools.size(); ++l) kv_copy_blocks(src_pools[l], dst_pools[l], src_ids, dst_ids, stream, method);
}

}  // namespace longcat
