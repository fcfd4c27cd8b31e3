// mla_decode_layer: one MLA decode sublayer as the composition of the library's own ops
// (longcat/mla_layer.h), every intermediate a view into the caller's workspace.
#include <cstring>
#include <string>

#include "core/checks.h"
#include "core/mla_decode_call.h"
#include "longcat/kv_cache.h"
#include "longcat/linear.h"
#include "longcat/mla_layer.h"
#include "longcat/norm.h"

namespace longcat {
namespace {

constexpr const char* kOp = "mla_decode_layer";
constexpr int64_t kAlign = 64;  // each workspace part starts on a cache line

// The sublayer's sizes, read from (checked) weights.
struct Dims {
  int64_t hidden, q_rank, heads, nope, qk, v;
};

Dims dims_of(const MlaLayerWeights& w) {
  Dims d{};
  d.hidden = w.w_a.size(1);
  d.q_rank = w.q_norm.size(0);
  d.heads = w.w_uk_t.size(0);
  d.nope = w.w_uk_t.size(2);
  d.qk = d.nope + kMlaDimRope;
  d.v = w.w_uv.size(1);
  return d;
}

// Byte offsets of the workspace parts for T rows; `total` is the size.
struct Layout {
  int64_t a, qn, q, latent, k_rope, q_rope, q_abs, attn, lse, o, decode_ws, decode_ws_bytes, total;
};

Layout layout_of(const Dims& d, int64_t T, int64_t elem, int64_t num_workers) {
  Layout l{};
  int64_t at = 0;
  auto take = [&](int64_t bytes) {
    const int64_t start = at;
    at += (bytes + kAlign - 1) / kAlign * kAlign;
    return start;
  };
  l.a = take(T * (d.q_rank + kMlaDimQK) * elem);
  l.qn = take(T * d.q_rank * elem);
  l.q = take(T * d.heads * d.qk * elem);
  l.latent = take(T * kMlaDimV * elem);
  l.k_rope = take(T * kMlaDimRope * elem);
  l.q_rope = take(T * d.heads * kMlaDimRope * elem);
  l.q_abs = take(T * d.heads * kMlaDimQK * elem);
  l.attn = take(T * d.heads * kMlaDimV * elem);
  l.lse = take(T * d.heads * 4);
  l.o = take(T * d.heads * d.v * elem);
  l.decode_ws_bytes = mla_decode_workspace_size(T, 1, d.heads, kMlaDimV, num_workers);
  l.decode_ws = take(l.decode_ws_bytes);
  l.total = at;
  return l;
}

// v with the given shape and strides (elements).
TensorView with_layout(TensorView v, std::initializer_list<int64_t> shape, std::initializer_list<int64_t> strides) {
  v.ndim = static_cast<int>(shape.size());
  int i = 0;
  for (int64_t s : shape) v.shape[i++] = s;
  i = 0;
  for (int64_t s : strides) v.strides[i++] = s;
  return v;
}

// A strided view of `shape` / `strides` (elements) at byte offset `offset` of the workspace.
TensorView part(const TensorView& ws, int64_t offset, DType dtype, std::initializer_list<int64_t> shape,
                std::initializer_list<int64_t> strides) {
  TensorView v;
  v.data = static_cast<char*>(ws.data) + offset;
  v.dtype = dtype;
  v.device = ws.device;
  return with_layout(v, shape, strides);
}

// A strided view into an existing tensor (same dtype), e.g. a column slice.
TensorView slice(const TensorView& t, int64_t elem_offset, std::initializer_list<int64_t> shape,
                 std::initializer_list<int64_t> strides) {
  TensorView v = t;
  v.data = static_cast<char*>(t.data) + elem_offset * dtype_size(t.dtype);
  return with_layout(v, shape, strides);
}

void check_weight(const char* arg, const TensorView& t, const TensorView& ref, std::initializer_list<int64_t> shape,
                  const char* what) {
  check_view(kOp, arg, t);
  check_ndim(kOp, arg, t, static_cast<int>(shape.size()));
  int d = 0;
  for (int64_t s : shape) check_size(kOp, arg, t, d++, s, what);
  check_same_dtype(kOp, arg, t, "w_a", ref);
  check_same_device(kOp, arg, t, "w_a", ref);
  check_contiguous(kOp, arg, t);
  check_nonnull(kOp, arg, t);
}

}  // namespace

void mla_decode_layer_check_weights(const MlaLayerWeights& w) {
  check_views(kOp, {{"w_a", &w.w_a}, {"q_norm", &w.q_norm}, {"w_uk_t", &w.w_uk_t}, {"w_uv", &w.w_uv}});
  if (w.w_a.device.type != DeviceType::CPU)
    fail(ErrorKind::Runtime, arg_prefix(kOp, "w_a") + "must be a CPU tensor (mla_decode_layer runs on CPU), got " +
                                 device_name(w.w_a.device));
  check_dtype(kOp, "w_a", w.w_a, {DType::BFloat16, DType::Float32});
  check_ndim(kOp, "w_a", w.w_a, 2);
  check_ndim(kOp, "q_norm", w.q_norm, 1);
  check_ndim(kOp, "w_uk_t", w.w_uk_t, 3);
  check_ndim(kOp, "w_uv", w.w_uv, 3);
  if (!(w.norm_eps >= 0.0))
    fail(ErrorKind::Value, std::string(kOp) + ": argument 'norm_eps' must be >= 0, got " + std::to_string(w.norm_eps));
  const Dims d = dims_of(w);
  if (d.hidden < 1 || d.q_rank < 1 || d.heads < 1 || d.nope < 1 || d.v < 1)
    fail(ErrorKind::Value, std::string(kOp) + ": the weights must have non-empty dims, got w_a " +
                               shape_str(w.w_a) + ", q_norm " + shape_str(w.q_norm) + ", w_uk_t " +
                               shape_str(w.w_uk_t) + ", w_uv " + shape_str(w.w_uv));
  check_weight("w_a", w.w_a, w.w_a, {d.q_rank + kMlaDimQK, d.hidden}, "q_rank + 576 rows (q_rank = q_norm's size)");
  check_weight("q_norm", w.q_norm, w.w_a, {d.q_rank}, "q_rank");
  check_weight("w_qb", w.w_qb, w.w_a, {d.heads * d.qk, d.q_rank}, "heads * (nope + 64) by q_rank (from w_uk_t, q_norm)");
  check_weight("kv_norm", w.kv_norm, w.w_a, {kMlaDimV}, "512 (the latent)");
  check_weight("w_uk_t", w.w_uk_t, w.w_a, {d.heads, kMlaDimV, d.nope}, "[heads, 512, nope]");
  check_weight("w_uv", w.w_uv, w.w_a, {d.heads, d.v, kMlaDimV}, "[heads, v, 512]");
  check_weight("w_o", w.w_o, w.w_a, {d.hidden, d.heads * d.v}, "[hidden, heads * v] (hidden = w_a.shape[1])");
  check_view(kOp, "inv_freq", w.inv_freq);
  check_aux(kOp, "inv_freq", w.inv_freq, DType::Float32, {kMlaDimRope / 2}, "[32] (RoPE's frequencies)", "w_a",
            w.w_a);
}

int64_t mla_decode_layer_workspace_size(const MlaLayerWeights& w, int64_t tokens, int64_t num_workers) {
  mla_decode_layer_check_weights(w);
  if (tokens < 0)
    fail(ErrorKind::Value, std::string(kOp) + ": argument 'tokens' must be >= 0, got " + std::to_string(tokens));
  if (num_workers < 1)
    fail(ErrorKind::Value, std::string(kOp) + ": argument 'num_workers' must be >= 1, got " +
                               std::to_string(num_workers));
  return layout_of(dims_of(w), tokens, dtype_size(w.w_a.dtype), num_workers).total;
}

void mla_decode_layer(const TensorView& out, const TensorView& x, const MlaLayerWeights& w,
                      const TensorView& kv_cache, const TensorView& block_table, const TensorView& cache_seqlens,
                      const TensorView& positions, const TensorView& seq_ids, double softmax_scale,
                      const TensorView& metadata, const TensorView& workspace, int64_t num_workers,
                      const SsaWindow* window) {
  mla_decode_layer_check_weights(w);
  // Every argument here, also those only the inner ops read: refused under this op's name, and
  // before mla_append_kv writes the cache.
  check_views(kOp, {{"x", &x}, {"out", &out}, {"workspace", &workspace}, {"kv_cache", &kv_cache},
                    {"block_table", &block_table}, {"cache_seqlens", &cache_seqlens}, {"positions", &positions},
                    {"seq_ids", &seq_ids}, {"metadata", &metadata}});
  const Dims d = dims_of(w);
  check_ndim(kOp, "x", x, 2);
  check_size(kOp, "x", x, 1, d.hidden, "the hidden size w_a.shape[1]");
  check_same_dtype(kOp, "x", x, "w_a", w.w_a);
  check_same_device(kOp, "x", x, "w_a", w.w_a);
  check_contiguous(kOp, "x", x);
  const int64_t T = x.size(0);
  check_same_shape(kOp, "out", out, "x", x);
  check_same_dtype(kOp, "out", out, "x", x);
  check_same_device(kOp, "out", out, "x", x);
  check_contiguous(kOp, "out", out);
  check_dtype(kOp, "workspace", workspace, {DType::UInt8});
  check_ndim(kOp, "workspace", workspace, 1);
  check_contiguous(kOp, "workspace", workspace);
  check_same_device(kOp, "workspace", workspace, "x", x);
  if (num_workers < 1)
    fail(ErrorKind::Value, std::string(kOp) + ": argument 'num_workers' must be >= 1, got " +
                               std::to_string(num_workers));
  const int64_t elem = dtype_size(x.dtype);
  const Layout l = layout_of(d, T, elem, num_workers);
  if (workspace.size(0) < l.total)
    fail(ErrorKind::Value, arg_prefix(kOp, "workspace") + "must hold at least " + std::to_string(l.total) +
                               " bytes (mla_decode_layer_workspace_size for " + std::to_string(T) + " rows, " +
                               std::to_string(num_workers) + " workers), got " + std::to_string(workspace.size(0)));
  check_no_overlap(kOp, "out", out, "x", x);
  check_no_overlap(kOp, "out", out, "workspace", workspace);
  check_no_overlap(kOp, "workspace", workspace, "x", x);
  check_no_overlap(kOp, "workspace", workspace, "kv_cache", kv_cache);
  check_no_overlap(kOp, "out", out, "kv_cache", kv_cache);
  if (T == 0) return;

  const DType dt = x.dtype;
  const int64_t R = d.q_rank, nh = d.heads, qk = d.qk, A = R + kMlaDimQK;
  const TensorView a = part(workspace, l.a, dt, {T, A}, {A, 1});
  const TensorView qn = part(workspace, l.qn, dt, {T, R}, {R, 1});
  const TensorView q = part(workspace, l.q, dt, {T, nh * qk}, {nh * qk, 1});
  const TensorView latent = part(workspace, l.latent, dt, {T, kMlaDimV}, {kMlaDimV, 1});
  const TensorView k_rope = part(workspace, l.k_rope, dt, {T, kMlaDimRope}, {kMlaDimRope, 1});
  const TensorView q_rope = part(workspace, l.q_rope, dt, {T, nh, kMlaDimRope}, {nh * kMlaDimRope, kMlaDimRope, 1});
  const TensorView q_abs = part(workspace, l.q_abs, dt, {T, 1, nh, kMlaDimQK},
                                {nh * kMlaDimQK, nh * kMlaDimQK, kMlaDimQK, 1});
  const TensorView attn = part(workspace, l.attn, dt, {T, 1, nh, kMlaDimV}, {nh * kMlaDimV, nh * kMlaDimV, kMlaDimV, 1});
  const TensorView lse = part(workspace, l.lse, DType::Float32, {T, nh, 1}, {nh, 1, 1});
  const TensorView o = part(workspace, l.o, dt, {T, nh * d.v}, {nh * d.v, 1});
  const TensorView decode_ws = part(workspace, l.decode_ws, DType::UInt8, {l.decode_ws_bytes}, {1});
  // The attention call is checked in full (page ids, lengths, the plan) before the append
  // writes the cache: a refused call leaves the cache as it was.
  const MlaDecodeCall attention = mla_decode_prepare(kOp, attn, lse, q_abs, kv_cache, block_table, cache_seqlens,
                                                     kMlaDimV, softmax_scale, true, metadata, decode_ws, num_workers,
                                                     window);

  // Projections and latents (the Python composition: modeling.MLA.forward_paged).
  linear(a, x, w.w_a);
  rms_norm(qn, slice(a, 0, {T, R}, {A, 1}), w.q_norm, w.norm_eps);
  linear(q, qn, w.w_qb);
  rms_norm(latent, slice(a, R, {T, kMlaDimV}, {A, 1}), w.kv_norm, w.norm_eps);
  rope_interleaved(k_rope, slice(a, R + kMlaDimV, {T, kMlaDimRope}, {A, 1}), positions, w.inv_freq, true);
  rope_interleaved(q_rope, slice(q, d.nope, {T, nh, kMlaDimRope}, {nh * qk, qk, 1}), positions, w.inv_freq, true);
  mla_append_kv(kv_cache, latent, k_rope, block_table, seq_ids, positions);

  // The absorbed query: per head, q_nope through kv_b's key half into the first 512 values,
  // the rotated rope part in the last 64.
  const int64_t rope_bytes = kMlaDimRope * elem;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < nh; ++h)
      std::memcpy(static_cast<char*>(q_abs.data) + ((t * nh + h) * kMlaDimQK + kMlaDimV) * elem,
                  static_cast<const char*>(q_rope.data) + (t * nh + h) * rope_bytes, rope_bytes);
  linear(slice(q_abs, 0, {nh, T, kMlaDimV}, {kMlaDimQK, nh * kMlaDimQK, 1}),
         slice(q, 0, {nh, T, d.nope}, {qk, nh * qk, 1}), w.w_uk_t);

  mla_decode_launch(attention, nullptr, CpuCopy::Best);

  // kv_b's value half per head, written as [T, nh, v], then the output projection.
  linear(slice(o, 0, {nh, T, d.v}, {d.v, nh * d.v, 1}), slice(attn, 0, {nh, T, kMlaDimV}, {kMlaDimV, nh * kMlaDimV, 1}),
         w.w_uv);
  linear(out, o, w.w_o);
}

}  // namespace longcat
