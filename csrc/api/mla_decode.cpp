// MLA decode over the paged latent cache (with the SSA window): argument checks, the split-KV
// planner and the choice of backend (CPU copy by ISA, or CUDA). The CPU kernel and the combine
// of split partials live in mla_decode_kernels.inc. Semantics: longcat/mla.h.
#include <algorithm>
#include <climits>
#include <cmath>
#include <string>
#include <vector>

#include "core/checks.h"
#include "core/mla_args.h"
#include "core/mla_decode_call.h"
#include "cpu/isa_dispatch.h"
#include "longcat/mla.h"

namespace longcat {
namespace cpu {
LONGCAT_DECLARE_AMX_FN(void, mla_decode, const MlaDecodeArgs&)
}  // namespace cpu

namespace {

void check_workers(const char* op, int64_t num_workers) {
  if (num_workers < 1 || num_workers > (int64_t{1} << 20))
    fail(ErrorKind::Value, arg_prefix(op, "num_workers") + "must be in [1, 2^20], got " +
                               std::to_string(num_workers));
}

// cache_seqlens [batch] int32 contiguous. On CPU every length must be >= 0.
void check_seqlens(const char* op, const TensorView& seqlens) {
  check_dtype(op, "cache_seqlens", seqlens, {DType::Int32});
  check_ndim(op, "cache_seqlens", seqlens, 1);
  check_contiguous(op, "cache_seqlens", seqlens);
  if (seqlens.size(0) > INT_MAX)
    fail(ErrorKind::Value, arg_prefix(op, "cache_seqlens") + "must have at most 2^31-1 sequences, got " +
                               std::to_string(seqlens.size(0)));
  if (seqlens.device.type != DeviceType::CPU) return;
  const int32_t* L = seqlens.ptr<int32_t>();
  for (int64_t b = 0; b < seqlens.size(0); ++b)
    if (L[b] < 0)
      fail(ErrorKind::Value, arg_prefix(op, "cache_seqlens") + "must hold lengths >= 0, got " +
                                 std::to_string(L[b]) + " at [" + std::to_string(b) + "]");
}

void check_s_q(const char* op, int64_t s_q) {
  if (s_q < 1 || s_q > (int64_t{1} << 16))
    fail(ErrorKind::Value, arg_prefix(op, "s_q") + "must be in [1, 65536], got " + std::to_string(s_q));
}

// The visible keys of sequence b under the plan's rule (core/mla_args.h).
int64_t visible_count(const WindowArgs& w, int64_t L, int64_t s_q, bool causal) {
  return num_keys(decode_visible_keys(w, L, s_q, causal));
}

// The plan's rule (attention.h, mla_decode_metadata): sequence b has max(1, ceil(keys_b / chunk_b))
// splits of chunk_b keys (a multiple of 64) and starts at split md[2b]. Returns the total S.
// `md` and `L` are the op's snapshots.
int64_t check_plan(const char* op, const int32_t* md, const int32_t* L, int64_t batch, int64_t s_q, bool causal,
                   const WindowArgs& w) {
  if (md[0] != 0)
    fail(ErrorKind::Value, arg_prefix(op, "metadata") + "must start with split 0, got " + std::to_string(md[0]) +
                               " (use mla_decode_metadata)");
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t keys = visible_count(w, L[b], s_q, causal), splits = int64_t{md[2 * b + 2]} - md[2 * b],
                  chunk = md[2 * b + 1];
    if (splits < 1 || chunk < 64 || chunk % 64 != 0 || splits * chunk < keys ||
        (splits - 1) * chunk >= std::max<int64_t>(keys, 1))
      fail(ErrorKind::Value, arg_prefix(op, "metadata") + "does not match cache_seqlens, s_q, causal and the window "
                                 "at sequence " + std::to_string(b) + " (" + std::to_string(keys) +
                                 " visible keys, " + std::to_string(splits) + " splits of " + std::to_string(chunk) +
                                 " keys); compute it with mla_decode_metadata for this step");
  }
  return md[2 * batch];
}

// The split plan's shape: [batch + 1, 2] int32, contiguous, beside cache_seqlens.
void check_metadata_shape(const char* op, const TensorView& metadata, const TensorView& cache_seqlens,
                          int64_t batch) {
  check_dtype(op, "metadata", metadata, {DType::Int32});
  check_ndim(op, "metadata", metadata, 2);
  check_size(op, "metadata", metadata, 0, batch + 1, "batch + 1 = cache_seqlens.shape[0] + 1");
  check_size(op, "metadata", metadata, 1, 2, "first split, keys per split");
  check_contiguous(op, "metadata", metadata);
  check_same_device(op, "metadata", metadata, "cache_seqlens", cache_seqlens);
}

}  // namespace

int64_t mla_decode_plan_splits(const TensorView& metadata, const TensorView& cache_seqlens, int64_t s_q,
                               bool causal, const SsaWindow* window) {
  const char* op = "mla_decode";
  check_views(op, {{"metadata", &metadata}, {"cache_seqlens", &cache_seqlens}});
  check_s_q(op, s_q);
  const WindowArgs w = window_args(op, window);
  check_seqlens(op, cache_seqlens);
  const int64_t batch = cache_seqlens.size(0);
  check_metadata_shape(op, metadata, cache_seqlens, batch);
  if (cache_seqlens.device.type != DeviceType::CPU)
    fail(ErrorKind::Value, arg_prefix(op, "metadata") + "can be checked on the host only; got " +
                               device_name(cache_seqlens.device));
  const std::vector<int32_t> md = snapshot_int32(metadata), L = snapshot_int32(cache_seqlens);
  for (int64_t b = 0; b < batch; ++b)
    if (L[b] < 0)
      fail(ErrorKind::Value, arg_prefix(op, "cache_seqlens") + "must hold lengths >= 0, got " +
                                 std::to_string(L[b]) + " at [" + std::to_string(b) + "]");
  return check_plan(op, md.data(), L.data(), batch, s_q, causal, w);
}

int64_t mla_decode_max_splits(int64_t batch, int64_t num_workers) {
  const char* op = "mla_decode_max_splits";
  if (batch < 0 || batch > INT_MAX)
    fail(ErrorKind::Value, arg_prefix(op, "batch") + "must be in [0, 2^31-1], got " + std::to_string(batch));
  check_workers(op, num_workers);
  return batch + num_workers;
}

int64_t mla_decode_workspace_size(int64_t batch, int64_t s_q, int64_t h_q, int64_t head_dim_v,
                                  int64_t num_workers) {
  const char* op = "mla_decode_workspace_size";
  const int64_t S = mla_decode_max_splits(batch, num_workers);
  check_s_q(op, s_q);
  if (h_q < 1 || h_q > (int64_t{1} << 16))
    fail(ErrorKind::Value, arg_prefix(op, "h_q") + "must be in [1, 65536], got " + std::to_string(h_q));
  if (head_dim_v != kMlaDimV)
    fail(ErrorKind::Value, arg_prefix(op, "head_dim_v") + "must be 512, got " + std::to_string(head_dim_v));
  // fp32 partial out [S, s_q, h_q, dv], then fp32 partial lse [S, s_q, h_q]; computed in 128
  // bits so that sizes whose product overflows are refused instead of wrapping negative.
  const __int128 bytes = static_cast<__int128>(S) * s_q * h_q * (head_dim_v + 1) * 4;
  if (bytes > INT64_MAX / 2)
    fail(ErrorKind::Value, std::string(op) + ": a workspace for batch=" + std::to_string(batch) + ", s_q=" +
                               std::to_string(s_q) + ", h_q=" + std::to_string(h_q) + ", num_workers=" +
                               std::to_string(num_workers) + " would exceed 2^62 bytes");
  return static_cast<int64_t>(bytes);
}

void mla_decode_metadata(const TensorView& metadata, const TensorView& cache_seqlens, int64_t s_q,
                         int64_t num_workers, const SsaWindow* window, bool causal,
                         Stream stream) {
  const char* op = "mla_decode_metadata";
  check_views(op, {{"metadata", &metadata}, {"cache_seqlens", &cache_seqlens}});
  check_workers(op, num_workers);
  check_s_q(op, s_q);
  const WindowArgs w = window_args(op, window);
  check_seqlens(op, cache_seqlens);
  const int64_t batch = cache_seqlens.size(0);
  check_metadata_shape(op, metadata, cache_seqlens, batch);
  check_cuda_built(op, "cache_seqlens", cache_seqlens);
  DecodeMetadataArgs a{};
  a.metadata = metadata.ptr<int32_t>();
  a.cache_seqlens = cache_seqlens.ptr<int32_t>();
  a.batch = batch;
  a.s_q = s_q;
  a.num_workers = num_workers;
  a.causal = causal;
  a.window = w;
  a.device = cache_seqlens.device;
#if defined(LONGCAT_WITH_CUDA_RUNTIME)
  if (cache_seqlens.device.type == DeviceType::CUDA) return cuda::mla_decode_metadata(a, stream);
#endif
  const std::vector<int32_t> lens = snapshot_int32(cache_seqlens);  // one set of lengths for both passes
  a.cache_seqlens = lens.data();
  for (int64_t b = 0; b < batch; ++b)
    if (lens[b] < 0)
      fail(ErrorKind::Value, arg_prefix(op, "cache_seqlens") + "must hold lengths >= 0, got " +
                                 std::to_string(lens[b]) + " at [" + std::to_string(b) + "]");
  // Each sequence also costs a fixed 64 keys' worth (its setup, its combine), as in FlashMLA.
  int64_t total = 0;
  for (int64_t b = 0; b < batch; ++b) total += visible_count(w, a.cache_seqlens[b], s_q, causal) + 64;
  const int64_t chunk = decode_split_chunk(total, num_workers, kDecodeMinChunkCpu);
  int64_t first = 0;
  for (int64_t b = 0; b < batch; ++b) {
    a.metadata[2 * b] = static_cast<int32_t>(first);
    a.metadata[2 * b + 1] = static_cast<int32_t>(std::min<int64_t>(chunk, INT_MAX / 64 * 64));
    first += decode_num_splits(visible_count(w, a.cache_seqlens[b], s_q, causal), chunk);
  }
  a.metadata[2 * batch] = static_cast<int32_t>(first);
  a.metadata[2 * batch + 1] = 0;
}

MlaDecodeCall mla_decode_prepare(const char* op, const TensorView& out, const TensorView& lse,
                                 const TensorView& q, const TensorView& kv_cache,
                                 const TensorView& block_table, const TensorView& cache_seqlens,
                                 int64_t head_dim_v, double softmax_scale, bool causal,
                                 const TensorView& metadata, const TensorView& workspace, int64_t num_workers,
                                 const SsaWindow* window) {
  check_views(op, {{"q", &q}, {"kv_cache", &kv_cache}, {"block_table", &block_table}, {"cache_seqlens", &cache_seqlens},
                   {"metadata", &metadata}, {"out", &out}, {"lse", &lse}, {"workspace", &workspace}});
  check_workers(op, num_workers);
  const WindowArgs w = window_args(op, window);
  // q [batch, s_q, h_q, 576]
  check_ndim(op, "q", q, 4);
  if (q.device.type == DeviceType::CPU) check_dtype(op, "q", q, {DType::BFloat16, DType::Float32});
  else check_dtype(op, "q", q, {DType::BFloat16, DType::Float16});
  check_size(op, "q", q, 3, kMlaDimQK, "512 latent + 64 rope values");
  check_last_dim_contiguous(op, "q", q);
  const int64_t batch = q.size(0), s_q = q.size(1), h_q = q.size(2);
  check_s_q(op, s_q);
  if (h_q < 1 || h_q > (int64_t{1} << 16))
    fail(ErrorKind::Value, arg_prefix(op, "q") + "must have 1 to 65536 heads in dimension 2, got " +
                               std::to_string(h_q));
  if (head_dim_v != kMlaDimV)
    fail(ErrorKind::Value, arg_prefix(op, "head_dim_v") + "must be 512, got " + std::to_string(head_dim_v));
  if (!(softmax_scale > 0) || !std::isfinite(softmax_scale))
    fail(ErrorKind::Value, arg_prefix(op, "softmax_scale") + "must be finite and > 0, got " +
                               std::to_string(softmax_scale));
  // kv_cache [num_pages, page_size, 1, 576] in q's dtype, contiguous
  check_ndim(op, "kv_cache", kv_cache, 4);
  check_same_dtype(op, "kv_cache", kv_cache, "q", q);
  check_size(op, "kv_cache", kv_cache, 2, 1, "one latent KV head");
  check_size(op, "kv_cache", kv_cache, 3, kMlaDimQK, "512 latent + 64 rope values");
  check_contiguous(op, "kv_cache", kv_cache);
  check_same_device(op, "kv_cache", kv_cache, "q", q);
  const int64_t num_pages = kv_cache.size(0), page_size = kv_cache.size(1);
  if (page_size < 1)
    fail(ErrorKind::Value, arg_prefix(op, "kv_cache") + "must have a page size >= 1 in dimension 1, got " +
                               std::to_string(page_size));
  // block_table [batch, max_pages] int32, rows may be strided
  check_dtype(op, "block_table", block_table, {DType::Int32});
  check_ndim(op, "block_table", block_table, 2);
  check_size(op, "block_table", block_table, 0, batch, "the batch q.shape[0]");
  check_same_device(op, "block_table", block_table, "q", q);
  const int64_t max_pages = block_table.size(1);
  if (max_pages > 0 && block_table.stride(1) != 1 && block_table.size(0) > 0)
    fail(ErrorKind::Value, arg_prefix(op, "block_table") + "must have a contiguous last dimension");
  check_seqlens(op, cache_seqlens);
  check_size(op, "cache_seqlens", cache_seqlens, 0, batch, "the batch q.shape[0]");
  check_same_device(op, "cache_seqlens", cache_seqlens, "q", q);
  // out [batch, s_q, h_q, 512] q's dtype, lse [batch, h_q, s_q] fp32
  check_ndim(op, "out", out, 4);
  check_same_dtype(op, "out", out, "q", q);
  for (int d = 0; d < 3; ++d) check_size(op, "out", out, d, q.size(d), "as q");
  check_size(op, "out", out, 3, head_dim_v, "head_dim_v");
  check_contiguous(op, "out", out);
  check_same_device(op, "out", out, "q", q);
  check_dtype(op, "lse", lse, {DType::Float32});
  check_ndim(op, "lse", lse, 3);
  check_size(op, "lse", lse, 0, batch, "the batch q.shape[0]");
  check_size(op, "lse", lse, 1, h_q, "the heads q.shape[2]");
  check_size(op, "lse", lse, 2, s_q, "the new tokens q.shape[1]");
  check_contiguous(op, "lse", lse);
  check_same_device(op, "lse", lse, "q", q);
  // metadata [batch + 1, 2] int32 from mla_decode_metadata
  check_dtype(op, "metadata", metadata, {DType::Int32});
  check_ndim(op, "metadata", metadata, 2);
  check_size(op, "metadata", metadata, 0, batch + 1, "batch + 1 (mla_decode_metadata for these cache_seqlens)");
  check_size(op, "metadata", metadata, 1, 2, "first split, keys per split");
  check_contiguous(op, "metadata", metadata);
  check_same_device(op, "metadata", metadata, "q", q);
  const int64_t max_splits = mla_decode_max_splits(batch, num_workers);
  const int64_t ws_bytes = mla_decode_workspace_size(batch, s_q, h_q, head_dim_v, num_workers);
  check_dtype(op, "workspace", workspace, {DType::UInt8});
  check_contiguous(op, "workspace", workspace);
  check_same_device(op, "workspace", workspace, "q", q);
  if (workspace.numel() < ws_bytes)
    fail(ErrorKind::Value, arg_prefix(op, "workspace") + "must hold at least " + std::to_string(ws_bytes) +
                               " bytes (mla_decode_workspace_size), got " + std::to_string(workspace.numel()));
  check_cuda_built(op, "q", q);
  for (auto [oname, o] : {NamedView{"out", &out}, NamedView{"lse", &lse}, NamedView{"workspace", &workspace}})
    for (auto [iname, in] : {NamedView{"q", &q}, NamedView{"kv_cache", &kv_cache}, NamedView{"block_table", &block_table},
                             NamedView{"cache_seqlens", &cache_seqlens}, NamedView{"metadata", &metadata}})
      check_no_overlap(op, oname, *o, iname, *in);
  check_no_overlap(op, "lse", lse, "out", out);
  check_no_overlap(op, "workspace", workspace, "out", out);
  check_no_overlap(op, "workspace", workspace, "lse", lse);

  MlaDecodeCall call;
  MlaDecodeArgs& a = call.args;
  a.out = out.data;
  a.lse = lse.ptr<float>();
  a.q = q.data;
  a.kv_cache = kv_cache.data;
  a.block_table = block_table.ptr<int32_t>();
  a.cache_seqlens = cache_seqlens.ptr<int32_t>();
  a.metadata = metadata.ptr<int32_t>();
  a.workspace_out = workspace.ptr<float>();
  a.workspace_lse = a.workspace_out + max_splits * s_q * h_q * head_dim_v;
  a.batch = batch;
  a.s_q = s_q;
  a.h_q = h_q;
  a.d_qk = kMlaDimQK;
  a.dv = head_dim_v;
  a.num_pages = num_pages;
  a.page_size = page_size;
  a.max_pages = max_pages;
  a.block_table_stride = block_table.size(0) > 1 ? block_table.stride(0) : max_pages;
  a.q_stride_b = q.stride(0);
  a.q_stride_s = q.stride(1);
  a.q_stride_h = q.stride(2);
  a.num_workers = num_workers;
  a.max_splits = max_splits;
  a.scale = static_cast<float>(softmax_scale);
  a.causal = causal;
  a.window = w;
  a.dtype = q.dtype;
  a.device = q.device;
  // CUDA: the kernel checks page ids and the plan as it reads them (bad ones give NaN rows).
  if (batch == 0 || q.device.type == DeviceType::CUDA) return call;
  // CPU: snapshots of the index inputs, so the kernel reads exactly what is checked here: the
  // pages each sequence reads must exist, and the plan must cover its visible keys.
  call.lens = snapshot_int32(cache_seqlens);
  call.table = snapshot_int32(block_table);
  call.plan = snapshot_int32(metadata);
  a.block_table_stride = max_pages;
  const int32_t* L = call.lens.data();
  const int32_t* md = call.plan.data();
  for (int64_t b = 0; b < batch; ++b) {
    if (L[b] < 0)
      fail(ErrorKind::Value, arg_prefix(op, "cache_seqlens") + "must hold lengths >= 0, got " +
                                 std::to_string(L[b]) + " at [" + std::to_string(b) + "]");
    const int64_t pages = (int64_t{L[b]} + page_size - 1) / page_size;
    if (pages > max_pages)
      fail(ErrorKind::Value, arg_prefix(op, "block_table") + "has " + std::to_string(max_pages) +
                                 " pages per sequence, but sequence " + std::to_string(b) + " holds " +
                                 std::to_string(L[b]) + " tokens = " + std::to_string(pages) +
                                 " pages of " + std::to_string(page_size) + " (cache_seqlens[" +
                                 std::to_string(b) + "])");
    // Only pages holding visible keys are read; check exactly those.
    const KeyRanges r = decode_visible_keys(w, L[b], s_q, causal);
    auto check_pages = [&](int64_t k0, int64_t k1) {
      if (k0 >= k1) return;
      for (int64_t p = k0 / page_size; p <= (k1 - 1) / page_size; ++p) {
        const int32_t id = call.table[b * max_pages + p];
        if (id < 0 || id >= num_pages)
          fail(ErrorKind::Value, arg_prefix(op, "block_table") + "must hold page ids in [0, " +
                                     std::to_string(num_pages) + ") (kv_cache.shape[0]), got " +
                                     std::to_string(id) + " at [" + std::to_string(b) + ", " +
                                     std::to_string(p) + "]");
      }
    };
    check_pages(0, r.sink_end);
    check_pages(r.local_begin, r.end);
  }
  check_plan(op, md, L, batch, s_q, causal, w);
  if (md[2 * batch] > max_splits)
    fail(ErrorKind::Value, arg_prefix(op, "metadata") + "plans " + std::to_string(md[2 * batch]) +
                               " splits, more than batch + num_workers = " + std::to_string(max_splits) +
                               " (pass the num_workers it was computed with)");
  return call;
}

void mla_decode_launch(const MlaDecodeCall& call, Stream stream, CpuCopy copy) {
  MlaDecodeArgs a = call.args;
  if (a.batch == 0) return;
#if defined(LONGCAT_WITH_CUDA_RUNTIME)
  if (a.device.type == DeviceType::CUDA) return cuda::mla_decode(a, stream);
#endif
  (void)stream;
  a.cache_seqlens = call.lens.data();
  a.block_table = call.table.data();
  a.metadata = call.plan.data();
  LONGCAT_ISA_CALL_COPY(copy, mla_decode, a);
}

void mla_decode(const TensorView& out, const TensorView& lse, const TensorView& q,
                const TensorView& kv_cache, const TensorView& block_table,
                const TensorView& cache_seqlens, int64_t head_dim_v, double softmax_scale,
                bool causal, const TensorView& metadata, const TensorView& workspace,
                int64_t num_workers, const SsaWindow* window, Stream stream) {
  mla_decode_launch(mla_decode_prepare("mla_decode", out, lse, q, kv_cache, block_table, cache_seqlens, head_dim_v,
                                       softmax_scale, causal, metadata, workspace, num_workers, window),
                    stream, CpuCopy::Best);
}

void mla_decode_amx_emulated(const TensorView& out, const TensorView& lse, const TensorView& q,
                             const TensorView& kv_cache, const TensorView& block_table,
                             const TensorView& cache_seqlens, int64_t head_dim_v, double softmax_scale,
                             bool causal, const TensorView& metadata, const TensorView& workspace,
                             int64_t num_workers, const SsaWindow* window) {
  if (q.device.type != DeviceType::CPU)
    fail(ErrorKind::Value, "mla_decode_amx_emulated: argument 'q' must be a CPU tensor (the emulated AMX copy is "
                           "CPU code)");
  mla_decode_launch(mla_decode_prepare("mla_decode", out, lse, q, kv_cache, block_table, cache_seqlens, head_dim_v,
                                       softmax_scale, causal, metadata, workspace, num_workers, window),
                    nullptr, CpuCopy::AmxEmulated);
}

}  // namespace longcat
