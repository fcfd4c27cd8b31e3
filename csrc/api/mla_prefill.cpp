// Varlen MLA / SSA prefill: argument checks and the choice of backend (CPU copy by ISA, or
// CUDA). The kernels are in mla_prefill_kernels.inc. Semantics: longcat/mla.h.
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/checks.h"
#include "core/mla_args.h"
#include "cpu/isa_dispatch.h"
#include "longcat/mla.h"

namespace longcat {
namespace cpu {
LONGCAT_DECLARE_AMX_FN(void, mla_prefill, const MlaPrefillArgs&)
}  // namespace cpu

namespace {

constexpr const char* kOp = "mla_prefill";

// Strides of a [tokens, heads, dim] tensor whose last dim is contiguous.
void check_qkv(const char* arg, const TensorView& t) {
  check_ndim(kOp, arg, t, 3);
  check_last_dim_contiguous(kOp, arg, t);
}

void check_head_dim(const char* arg, int64_t d) {
  if (d < 8 || d > 576 || d % 8 != 0)
    fail(ErrorKind::Value, arg_prefix(kOp, arg) + "must have a last dimension that is a multiple of 8 in [8, 576], got " +
                               std::to_string(d));
}

// cu_seqlens [batch + 1] int32 contiguous; on CPU its values are checked on the op's snapshot
// `c` (on CUDA they cannot be read without a synchronisation; the kernels there clamp instead).
void check_cu_seqlens(const char* arg, const TensorView& cu, int64_t batch, const TensorView& ref) {
  check_dtype(kOp, arg, cu, {DType::Int32});
  check_ndim(kOp, arg, cu, 1);
  check_size(kOp, arg, cu, 0, batch + 1, "batch + 1");
  check_contiguous(kOp, arg, cu);
  check_same_device(kOp, arg, cu, "q", ref);
}

void check_cu_values(const char* arg, const int32_t* c, int64_t batch, int64_t total, const char* total_what,
                     int64_t max_seqlen, const char* max_arg) {
  if (c[0] != 0)
    fail(ErrorKind::Value, arg_prefix(kOp, arg) + "must start at 0, got " + std::to_string(c[0]));
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t len = int64_t{c[b + 1]} - c[b];
    if (len < 0)
      fail(ErrorKind::Value, arg_prefix(kOp, arg) + "must be non-decreasing, got " + std::to_string(c[b]) +
                                 " then " + std::to_string(c[b + 1]) + " at index " + std::to_string(b));
    if (len > max_seqlen)
      fail(ErrorKind::Value, arg_prefix(kOp, arg) + "holds a sequence of length " + std::to_string(len) +
                                 " (index " + std::to_string(b) + ") above '" + max_arg + "' = " +
                                 std::to_string(max_seqlen));
  }
  if (c[batch] != total)
    fail(ErrorKind::Value, arg_prefix(kOp, arg) + "must end at " + total_what + " = " + std::to_string(total) +
                               ", got " + std::to_string(c[batch]));
}

void run(const TensorView& out, const TensorView& lse, const TensorView& q, const TensorView& k, const TensorView& v,
         const TensorView& cu_seqlens_q, const TensorView& cu_seqlens_k, int64_t max_seqlen_q, int64_t max_seqlen_k,
         double softmax_scale, bool causal, const SsaWindow* window, Stream stream, CpuCopy copy) {
  check_views(kOp, {{"q", &q}, {"k", &k}, {"v", &v}, {"cu_seqlens_q", &cu_seqlens_q}, {"cu_seqlens_k", &cu_seqlens_k},
                    {"out", &out}, {"lse", &lse}});
  check_qkv("q", q);
  check_qkv("k", k);
  check_qkv("v", v);
  if (q.device.type == DeviceType::CPU) check_dtype(kOp, "q", q, {DType::BFloat16, DType::Float32});
  else check_dtype(kOp, "q", q, {DType::BFloat16, DType::Float16});
  check_same_dtype(kOp, "k", k, "q", q);
  check_same_dtype(kOp, "v", v, "q", q);
  check_same_device(kOp, "k", k, "q", q);
  check_same_device(kOp, "v", v, "q", q);
  const int64_t total_q = q.size(0), h = q.size(1), d_qk = q.size(2);
  const int64_t total_k = k.size(0), h_k = k.size(1), dv = v.size(2);
  check_head_dim("q", d_qk);
  check_head_dim("v", dv);
  check_size(kOp, "k", k, 2, d_qk, "the query/key head dim q.shape[2]");
  check_size(kOp, "v", v, 0, total_k, "the number of keys k.shape[0]");
  check_size(kOp, "v", v, 1, h_k, "the number of key heads k.shape[1]");
  if (h < 1 || h_k < 1 || h % h_k != 0)
    fail(ErrorKind::Value, std::string(kOp) + ": the query heads q.shape[1] = " + std::to_string(h) +
                               " must be a positive multiple of the key heads k.shape[1] = " +
                               std::to_string(h_k));
  check_dtype(kOp, "out", out, {q.dtype});
  check_ndim(kOp, "out", out, 3);
  check_size(kOp, "out", out, 0, total_q, "total_q = q.shape[0]");
  check_size(kOp, "out", out, 1, h, "the query heads q.shape[1]");
  check_size(kOp, "out", out, 2, dv, "the value head dim v.shape[2]");
  check_contiguous(kOp, "out", out);
  check_same_device(kOp, "out", out, "q", q);
  check_dtype(kOp, "lse", lse, {DType::Float32});
  check_ndim(kOp, "lse", lse, 2);
  check_size(kOp, "lse", lse, 0, h, "the query heads q.shape[1]");
  check_size(kOp, "lse", lse, 1, total_q, "total_q = q.shape[0]");
  check_contiguous(kOp, "lse", lse);
  check_same_device(kOp, "lse", lse, "q", q);
  if (max_seqlen_q < 0 || max_seqlen_q > INT32_MAX)
    fail(ErrorKind::Value, arg_prefix(kOp, "max_seqlen_q") + "must be in [0, 2^31-1], got " + std::to_string(max_seqlen_q));
  if (max_seqlen_k < 0 || max_seqlen_k > INT32_MAX)
    fail(ErrorKind::Value, arg_prefix(kOp, "max_seqlen_k") + "must be in [0, 2^31-1], got " + std::to_string(max_seqlen_k));
  if (total_q > INT32_MAX || total_k > INT32_MAX)
    fail(ErrorKind::Value, std::string(kOp) + ": total_q and total_k must fit int32 (cu_seqlens), got " +
                               std::to_string(total_q) + " and " + std::to_string(total_k));
  check_ndim(kOp, "cu_seqlens_q", cu_seqlens_q, 1);
  const int64_t batch = cu_seqlens_q.size(0) - 1;
  if (batch < 0)
    fail(ErrorKind::Value, arg_prefix(kOp, "cu_seqlens_q") + "must have at least 1 element (batch + 1), got 0");
  check_cu_seqlens("cu_seqlens_q", cu_seqlens_q, batch, q);
  check_cu_seqlens("cu_seqlens_k", cu_seqlens_k, batch, q);
  // CPU: snapshots, so the kernel walks exactly the sequence bounds checked here.
  const std::vector<int32_t> cq = snapshot_int32(cu_seqlens_q), ck = snapshot_int32(cu_seqlens_k);
  if (q.device.type == DeviceType::CPU) {
    check_cu_values("cu_seqlens_q", cq.data(), batch, total_q, "total_q = q.shape[0]", max_seqlen_q, "max_seqlen_q");
    check_cu_values("cu_seqlens_k", ck.data(), batch, total_k, "total_k = k.shape[0]", max_seqlen_k, "max_seqlen_k");
  }
  if (!(softmax_scale > 0.0) || !std::isfinite(softmax_scale))
    fail(ErrorKind::Value, arg_prefix(kOp, "softmax_scale") + "must be finite and > 0, got " + std::to_string(softmax_scale));
  if (window && !causal)
    fail(ErrorKind::Value, std::string(kOp) + ": a sparse window (SSA) requires causal=True, got causal=False");
  const WindowArgs w = window_args(kOp, window);
#if !defined(LONGCAT_WITH_CUDA_RUNTIME)
  if (q.device.type == DeviceType::CUDA)
    fail(ErrorKind::Runtime, arg_prefix(kOp, "q") + "is on " + device_name(q.device) +
                                 " but this build of longcat has no CUDA kernels (rebuild with LONGCAT_CUDA=ON)");
#endif

  for (auto [oname, o] : {NamedView{"out", &out}, NamedView{"lse", &lse}})
    for (auto [iname, in] : {NamedView{"q", &q}, NamedView{"k", &k}, NamedView{"v", &v},
                             NamedView{"cu_seqlens_q", &cu_seqlens_q}, NamedView{"cu_seqlens_k", &cu_seqlens_k}})
      check_no_overlap(kOp, oname, *o, iname, *in);
  check_no_overlap(kOp, "lse", lse, "out", out);

  MlaPrefillArgs a{};
  a.out = out.data;
  a.lse = lse.ptr<float>();
  a.q = q.data;
  a.k = k.data;
  a.v = v.data;
  const bool host = q.device.type == DeviceType::CPU;
  a.cu_seqlens_q = host ? cq.data() : cu_seqlens_q.ptr<int32_t>();
  a.cu_seqlens_k = host ? ck.data() : cu_seqlens_k.ptr<int32_t>();
  a.batch = batch;
  a.total_q = total_q;
  a.total_k = total_k;
  a.h = h;
  a.h_k = h_k;
  a.d_qk = d_qk;
  a.dv = dv;
  a.max_seqlen_q = max_seqlen_q;
  a.max_seqlen_k = max_seqlen_k;
  a.q_stride_t = q.stride(0);
  a.q_stride_h = q.stride(1);
  a.k_stride_t = k.stride(0);
  a.k_stride_h = k.stride(1);
  a.v_stride_t = v.stride(0);
  a.v_stride_h = v.stride(1);
  a.scale = static_cast<float>(softmax_scale);
  a.causal = causal;
  a.window = w;
  a.dtype = q.dtype;
  a.device = q.device;
  if (total_q == 0 || batch == 0) return;
#if defined(LONGCAT_WITH_CUDA_RUNTIME)
  if (q.device.type == DeviceType::CUDA) return cuda::mla_prefill(a, stream);
#endif
  LONGCAT_ISA_CALL_COPY(copy, mla_prefill, a);
}

}  // namespace

void mla_prefill(const TensorView& out, const TensorView& lse, const TensorView& q,
                 const TensorView& k, const TensorView& v, const TensorView& cu_seqlens_q,
                 const TensorView& cu_seqlens_k, int64_t max_seqlen_q, int64_t max_seqlen_k,
                 double softmax_scale, bool causal, const SsaWindow* window, Stream stream) {
  run(out, lse, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale, causal, window,
      stream, CpuCopy::Best);
}

void mla_prefill_amx_emulated(const TensorView& out, const TensorView& lse, const TensorView& q,
                              const TensorView& k, const TensorView& v, const TensorView& cu_seqlens_q,
                              const TensorView& cu_seqlens_k, int64_t max_seqlen_q, int64_t max_seqlen_k,
                              double softmax_scale, bool causal, const SsaWindow* window) {
  if (q.device.type != DeviceType::CPU)
    fail(ErrorKind::Value, "mla_prefill_amx_emulated: argument 'q' must be a CPU tensor (the emulated AMX copy is "
                           "CPU code)");
  run(out, lse, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale, causal, window,
      nullptr, CpuCopy::AmxEmulated);
}

}  // namespace longcat
