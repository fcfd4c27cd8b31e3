// MoE routing, dispatch and combine: argument checks and the choice of backend (CPU copy by
// ISA, or CUDA). The CPU dispatch's bookkeeping (a histogram, a prefix sum, the row of each slot)
// is done here with the checks it needs; its row copies, the router and combine kernels are in
// moe_route_kernels.inc. Semantics: longcat/moe_route.h.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "core/checks.h"
#include "core/moe_route_args.h"
#include "cpu/isa_dispatch.h"
#include "longcat/moe_route.h"

namespace longcat {
namespace cpu {
LONGCAT_DECLARE_ISA_FN(void, moe_route, const MoeRouteArgs&)
LONGCAT_DECLARE_ISA_FN(void, moe_dispatch_rows, const MoeDispatchArgs&, const int32_t*)
LONGCAT_DECLARE_ISA_FN(void, moe_combine, const MoeCombineArgs&)
}  // namespace cpu
#if defined(LONGCAT_WITH_CUDA_RUNTIME)
namespace cuda {
void moe_route(const MoeRouteArgs& a, Stream stream);
void moe_dispatch_layout(const MoeLayoutArgs& a, Stream stream);
void moe_dispatch(const MoeDispatchArgs& a, Stream stream);
void moe_combine(const MoeCombineArgs& a, Stream stream);
}  // namespace cuda
#endif

namespace {

void check_n_routed(const char* op, int64_t n_routed) {
  if (n_routed < 0 || n_routed > INT_MAX)
    fail(ErrorKind::Value, arg_prefix(op, "n_routed") + "must be in [0, 2^31-1], got " +
                               std::to_string(n_routed));
}

// topk_ids [T, k] int32 contiguous; on CPU every id must be >= 0.
void check_ids(const char* op, const TensorView& ids, int64_t tokens, const char* what) {
  check_dtype(op, "topk_ids", ids, {DType::Int32});
  check_ndim(op, "topk_ids", ids, 2);
  if (tokens >= 0) check_size(op, "topk_ids", ids, 0, tokens, what);
  check_contiguous(op, "topk_ids", ids);
}

// On CPU every id must be >= 0; `ids` is the op's snapshot of topk_ids ([T, k] flattened).
void check_ids_nonnegative(const char* op, const std::vector<int32_t>& ids, int64_t k) {
  k = std::max<int64_t>(k, 1);
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0)
      fail(ErrorKind::Value, arg_prefix(op, "topk_ids") + "must hold expert ids >= 0, got " +
                                 std::to_string(ids[i]) + " at [" + std::to_string(i / k) + ", " +
                                 std::to_string(i % k) + "]");
}

// The checks dispatch and combine share: x [T, H] and topk_ids [T, k]. Returns {T, H, k}.
std::tuple<int64_t, int64_t, int64_t> check_tokens_and_ids(const char* op, const TensorView& x,
                                                          const TensorView& topk_ids, int64_t n_routed) {
  check_n_routed(op, n_routed);
  check_ndim(op, "x", x, 2);
  check_float_dtype(op, "x", x);
  const int64_t T = x.size(0);
  check_ids(op, topk_ids, T, "the number of tokens x.shape[0]");
  check_same_device(op, "topk_ids", topk_ids, "x", x);
  return {T, x.size(1), topk_ids.size(1)};
}

}  // namespace

MoeScore parse_moe_score(const std::string& name) {
  if (name == "softmax") return MoeScore::Softmax;
  if (name == "sigmoid") return MoeScore::Sigmoid;
  fail(ErrorKind::Value, "moe_route: argument 'score' must be 'softmax' or 'sigmoid', got '" + name + "'");
}

// ---- moe_route ---------------------------------------------------------------------------------

void moe_route(const TensorView& topk_ids, const TensorView& topk_weights, const TensorView& hidden,
               const TensorView& weight, const TensorView* correction_bias, int64_t n_routed,
               int64_t n_zero, double routed_scaling_factor, MoeScore score, bool renormalize,
               Stream stream) {
  const char* op = "moe_route";
  check_views(op, {{"hidden", &hidden}, {"weight", &weight}, {"topk_ids", &topk_ids}, {"topk_weights", &topk_weights}});
  if (correction_bias) check_view(op, "correction_bias", *correction_bias);
  check_n_routed(op, n_routed);
  if (n_zero < 0 || n_zero > INT_MAX - n_routed)
    fail(ErrorKind::Value, arg_prefix(op, "n_zero") + "must be >= 0 with n_routed + n_zero < 2^31, got " +
                               std::to_string(n_zero));
  const int64_t E = n_routed + n_zero;
  if (E < 1)
    fail(ErrorKind::Value, std::string(op) + ": n_routed + n_zero must be >= 1 (the number of experts E), got 0");
  check_ndim(op, "hidden", hidden, 2);
  check_float_dtype(op, "hidden", hidden);
  const int64_t T = hidden.size(0), H = hidden.size(1);
  check_dtype(op, "weight", weight, {DType::Float32});
  check_ndim(op, "weight", weight, 2);
  check_size(op, "weight", weight, 0, E, "the number of experts E = n_routed + n_zero");
  check_size(op, "weight", weight, 1, H, "the hidden size hidden.shape[1]");
  check_contiguous(op, "weight", weight);
  check_same_device(op, "weight", weight, "hidden", hidden);
  if (correction_bias) {
    check_aux(op, "correction_bias", *correction_bias, DType::Float32, {E},
              "the number of experts E = n_routed + n_zero", "hidden", hidden);
  }
  check_dtype(op, "topk_ids", topk_ids, {DType::Int32});
  check_ndim(op, "topk_ids", topk_ids, 2);
  const int64_t k = topk_ids.size(1);
  if (k < 1 || k > E)
    fail(ErrorKind::Value, arg_prefix(op, "top_k") + "must be in [1, E] with E = n_routed + n_zero = " +
                               std::to_string(E) + ", got " + std::to_string(k));
  check_aux(op, "topk_ids", topk_ids, DType::Int32, {T, k}, "[tokens, top_k]", "hidden", hidden);
  check_aux(op, "topk_weights", topk_weights, DType::Float32, {T, k}, "[tokens, top_k]", "hidden", hidden);
  if (!std::isfinite(routed_scaling_factor))
    fail(ErrorKind::Value, arg_prefix(op, "routed_scaling_factor") + "must be finite, got " +
                               std::to_string(routed_scaling_factor));
  check_cuda_built(op, "hidden", hidden);
  for (auto [name, in] : {NamedView{"hidden", &hidden}, NamedView{"weight", &weight}}) {
    check_no_overlap(op, "topk_ids", topk_ids, name, *in);
    check_no_overlap(op, "topk_weights", topk_weights, name, *in);
  }
  if (correction_bias) {
    check_no_overlap(op, "topk_ids", topk_ids, "correction_bias", *correction_bias);
    check_no_overlap(op, "topk_weights", topk_weights, "correction_bias", *correction_bias);
  }
  check_no_overlap(op, "topk_weights", topk_weights, "topk_ids", topk_ids);
  MoeRouteArgs a{};
  a.topk_ids = topk_ids.ptr<int32_t>();
  a.topk_weights = topk_weights.ptr<float>();
  a.hidden = hidden.data;
  a.weight = weight.ptr<float>();
  a.bias = correction_bias ? correction_bias->ptr<float>() : nullptr;
  a.tokens = T;
  a.hidden_size = H;
  a.hidden_stride = row_stride(op, "hidden", hidden);
  a.experts = E;
  a.top_k = k;
  a.scale = static_cast<float>(routed_scaling_factor);
  a.score = score;
  a.renormalize = renormalize;
  a.dtype = hidden.dtype;
  a.device = hidden.device;
  if (T == 0) return;
#if defined(LONGCAT_WITH_CUDA_RUNTIME)
  if (hidden.device.type == DeviceType::CUDA) return cuda::moe_route(a, stream);
#endif
  LONGCAT_ISA_CALL(moe_route, a);
}

// ---- moe_dispatch_layout ---------------------------------------------------------------------

void moe_dispatch_layout(const TensorView& counts, const TensorView& offsets,
                         const TensorView& topk_ids, int64_t n_routed, int64_t align,
                         Stream stream) {
  const char* op = "moe_dispatch_layout";
  check_views(op, {{"topk_ids", &topk_ids}, {"counts", &counts}, {"offsets", &offsets}});
  check_n_routed(op, n_routed);
  if (align < 1 || align > (int64_t{1} << 20))
    fail(ErrorKind::Value, arg_prefix(op, "align") + "must be in [1, 2^20], got " + std::to_string(align));
  check_ids(op, topk_ids, -1, "");
  check_aux(op, "counts", counts, DType::Int32, {n_routed}, "n_routed", "topk_ids", topk_ids);
  check_aux(op, "offsets", offsets, DType::Int32, {n_routed + 1}, "n_routed + 1", "topk_ids", topk_ids);
  check_cuda_built(op, "topk_ids", topk_ids);
  check_no_overlap(op, "counts", counts, "topk_ids", topk_ids);
  check_no_overlap(op, "offsets", offsets, "topk_ids", topk_ids);
  check_no_overlap(op, "offsets", offsets, "counts", counts);
  MoeLayoutArgs a{};
  a.counts = counts.ptr<int32_t>();
  a.offsets = offsets.ptr<int32_t>();
  a.topk_ids = topk_ids.ptr<int32_t>();
  a.entries = topk_ids.numel();
  a.n_routed = n_routed;
  a.align = align;
  a.device = topk_ids.device;
  // Worst case R = entries + n_routed * (align - 1) must fit int32 (row indices are int32).
  if (a.entries + n_routed * (align - 1) > INT_MAX)
    fail(ErrorKind::Value, std::string(op) + ": tokens * top_k + n_routed * (align - 1) = " +
                               std::to_string(a.entries + n_routed * (align - 1)) +
                               " rows may not fit int32 row indices; split the batch");
#if defined(LONGCAT_WITH_CUDA_RUNTIME)
  if (topk_ids.device.type == DeviceType::CUDA) return cuda::moe_dispatch_layout(a, stream);
#endif
  const std::vector<int32_t> ids = snapshot_int32(topk_ids);  // checked = counted
  check_ids_nonnegative(op, ids, topk_ids.size(1));
  std::fill(a.counts, a.counts + n_routed, 0);
  for (const int32_t id : ids)
    if (id < n_routed) ++a.counts[id];
  int64_t off = 0;
  a.offsets[0] = 0;
  for (int64_t e = 0; e < n_routed; ++e) {
    off += (a.counts[e] + align - 1) / align * align;
    a.offsets[e + 1] = static_cast<int32_t>(off);
  }
}

// ---- moe_dispatch ------------------------------------------------------------------------------

void moe_dispatch(const TensorView& x_perm, const TensorView& row_token, const TensorView& slot_row,
                  const TensorView& x, const TensorView& topk_ids, const TensorView& counts,
                  const TensorView& offsets, int64_t n_routed, Stream stream) {
  const char* op = "moe_dispatch";
  check_views(op, {{"x", &x}, {"topk_ids", &topk_ids}, {"counts", &counts}, {"offsets", &offsets}, {"x_perm", &x_perm},
                   {"row_token", &row_token}, {"slot_row", &slot_row}});
  const auto [T, H, k] = check_tokens_and_ids(op, x, topk_ids, n_routed);
  check_aux(op, "counts", counts, DType::Int32, {n_routed}, "n_routed", "x", x);
  check_aux(op, "offsets", offsets, DType::Int32, {n_routed + 1}, "n_routed + 1", "x", x);
  check_ndim(op, "x_perm", x_perm, 2);
  const int64_t R = x_perm.size(0);
  check_size(op, "x_perm", x_perm, 1, H, "the hidden size x.shape[1]");
  check_same_dtype(op, "x_perm", x_perm, "x", x);
  check_contiguous(op, "x_perm", x_perm);
  check_same_device(op, "x_perm", x_perm, "x", x);
  check_aux(op, "row_token", row_token, DType::Int32, {R}, "the rows of x_perm", "x", x);
  check_aux(op, "slot_row", slot_row, DType::Int32, {T, k}, "[tokens, top_k]", "x", x);
  check_cuda_built(op, "x", x);
  for (auto [oname, out] : {NamedView{"x_perm", &x_perm}, NamedView{"row_token", &row_token}, NamedView{"slot_row", &slot_row}})
    for (auto [iname, in] : {NamedView{"x", &x}, NamedView{"topk_ids", &topk_ids}, NamedView{"counts", &counts},
                             NamedView{"offsets", &offsets}})
      check_no_overlap(op, oname, *out, iname, *in);
  check_no_overlap(op, "row_token", row_token, "x_perm", x_perm);
  check_no_overlap(op, "slot_row", slot_row, "x_perm", x_perm);
  check_no_overlap(op, "slot_row", slot_row, "row_token", row_token);
  MoeDispatchArgs a{};
  a.x_perm = x_perm.data;
  a.row_token = row_token.ptr<int32_t>();
  a.slot_row = slot_row.ptr<int32_t>();
  a.x = x.data;
  a.topk_ids = topk_ids.ptr<int32_t>();
  a.counts = counts.ptr<int32_t>();
  a.offsets = offsets.ptr<int32_t>();
  a.tokens = T;
  a.top_k = k;
  a.hidden = H;
  a.x_stride = row_stride(op, "x", x);
  a.rows = R;
  a.n_routed = n_routed;
  a.dtype = x.dtype;
  a.device = x.device;
#if defined(LONGCAT_WITH_CUDA_RUNTIME)
  if (x.device.type == DeviceType::CUDA) return cuda::moe_dispatch(a, stream);
#endif
  // Snapshots: what is checked below is what the rows are computed from.
  const std::vector<int32_t> ids = snapshot_int32(topk_ids), cnt = snapshot_int32(counts),
                             off = snapshot_int32(offsets);
  a.topk_ids = ids.data();
  a.counts = cnt.data();
  a.offsets = off.data();
  check_ids_nonnegative(op, ids, k);
  if (a.offsets[0] != 0 || a.offsets[n_routed] != R)
    fail(ErrorKind::Value, arg_prefix(op, "x_perm") + "must have R = offsets[n_routed] = " +
                               std::to_string(a.offsets[n_routed]) + " rows (with offsets[0] = 0), got " +
                               std::to_string(R) + " (call moe_dispatch_layout first)");
  // Row of each (t, j): a running cursor per expert, in flattened order (stable in token order).
  std::vector<int64_t> cursor(static_cast<size_t>(n_routed));
  std::vector<int32_t> token_of_row(static_cast<size_t>(R), -1);  // row_token, kept here for the copy
  for (int64_t e = 0; e < n_routed; ++e) {
    if (a.counts[e] < 0 || a.offsets[e] + int64_t{a.counts[e]} > a.offsets[e + 1])
      fail(ErrorKind::Value, std::string(op) + ": arguments 'counts' and 'offsets' are inconsistent at expert " +
                                 std::to_string(e) + " (call moe_dispatch_layout first)");
    cursor[e] = a.offsets[e];
  }
  const int64_t n = T * k;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t id = a.topk_ids[i];
    if (id >= n_routed) {
      a.slot_row[i] = -1;
      continue;
    }
    const int64_t r = cursor[id]++;
    if (r >= a.offsets[id] + int64_t{a.counts[id]})
      fail(ErrorKind::Value, std::string(op) + ": argument 'counts' does not match 'topk_ids' at expert " +
                                 std::to_string(id) + " (call moe_dispatch_layout first)");
    a.slot_row[i] = static_cast<int32_t>(r);
    token_of_row[r] = static_cast<int32_t>(i / k);
  }
  for (int64_t e = 0; e < n_routed; ++e) {
    if (cursor[e] != a.offsets[e] + int64_t{a.counts[e]})
      fail(ErrorKind::Value, std::string(op) + ": argument 'counts' does not match 'topk_ids' at expert " +
                                 std::to_string(e) + " (call moe_dispatch_layout first)");
  }
  if (R > 0) std::memcpy(a.row_token, token_of_row.data(), static_cast<size_t>(R) * sizeof(int32_t));
  if (R == 0 || H == 0) return;
  LONGCAT_ISA_CALL(moe_dispatch_rows, a, token_of_row.data());
}

// ---- moe_combine -------------------------------------------------------------------------------

void moe_combine(const TensorView& y, const TensorView& expert_out, const TensorView& slot_row,
                 const TensorView& topk_ids, const TensorView& topk_weights, const TensorView& x,
                 int64_t n_routed, Stream stream) {
  const char* op = "moe_combine";
  check_views(op, {{"y", &y}, {"expert_out", &expert_out}, {"slot_row", &slot_row}, {"topk_ids", &topk_ids},
                   {"topk_weights", &topk_weights}, {"x", &x}});
  const auto [T, H, k] = check_tokens_and_ids(op, x, topk_ids, n_routed);
  check_aux(op, "slot_row", slot_row, DType::Int32, {T, k}, "[tokens, top_k] as topk_ids", "x", x);
  check_aux(op, "topk_weights", topk_weights, DType::Float32, {T, k}, "[tokens, top_k] as topk_ids", "x", x);
  check_ndim(op, "expert_out", expert_out, 2);
  check_size(op, "expert_out", expert_out, 1, H, "the hidden size x.shape[1]");
  check_same_dtype(op, "expert_out", expert_out, "x", x);
  check_same_device(op, "expert_out", expert_out, "x", x);
  check_ndim(op, "y", y, 2);
  check_same_shape(op, "y", y, "x", x);
  check_same_dtype(op, "y", y, "x", x);
  check_contiguous(op, "y", y);
  check_same_device(op, "y", y, "x", x);
  check_cuda_built(op, "x", x);
  for (auto [name, in] : {NamedView{"x", &x}, NamedView{"expert_out", &expert_out}, NamedView{"slot_row", &slot_row},
                          NamedView{"topk_ids", &topk_ids}, NamedView{"topk_weights", &topk_weights}})
    check_no_overlap(op, "y", y, name, *in);
  MoeCombineArgs a{};
  a.y = y.data;
  a.expert_out = expert_out.data;
  a.slot_row = slot_row.ptr<int32_t>();
  a.topk_ids = topk_ids.ptr<int32_t>();
  a.topk_weights = topk_weights.ptr<float>();
  a.x = x.data;
  a.tokens = T;
  a.top_k = k;
  a.hidden = H;
  a.rows = expert_out.size(0);
  a.expert_out_stride = row_stride(op, "expert_out", expert_out);
  a.x_stride = row_stride(op, "x", x);
  a.n_routed = n_routed;
  a.dtype = x.dtype;
  a.device = x.device;
  if (T == 0 || H == 0) return;
#if defined(LONGCAT_WITH_CUDA_RUNTIME)
  if (x.device.type == DeviceType::CUDA) return cuda::moe_combine(a, stream);
#endif
  const std::vector<int32_t> ids = snapshot_int32(topk_ids), rows = snapshot_int32(slot_row);
  a.topk_ids = ids.data();
  a.slot_row = rows.data();
  check_ids_nonnegative(op, ids, k);
  for (int64_t i = 0; i < T * k; ++i)
    if (a.topk_ids[i] < n_routed && (a.slot_row[i] < 0 || a.slot_row[i] >= a.rows))
      fail(ErrorKind::Value, arg_prefix(op, "slot_row") + "must hold a row of expert_out in [0, " +
                                 std::to_string(a.rows) + ") for a routed expert, got " +
                                 std::to_string(a.slot_row[i]) + " at [" + std::to_string(i / k) +
                                 ", " + std::to_string(i % k) + "]");
  LONGCAT_ISA_CALL(moe_combine, a);
}

}  // namespace longcat
