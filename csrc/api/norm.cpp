// RMSNorm: argument checks and the choice of backend (CPU copy by ISA, or CUDA).
#include <cmath>
#include <utility>

#include "core/checks.h"
#include "core/norm_args.h"
#include "cpu/isa_dispatch.h"
#include "longcat/norm.h"

namespace longcat {
namespace cpu {
LONGCAT_DECLARE_ISA_FN(void, rms_norm, const NormArgs&)
LONGCAT_DECLARE_ISA_FN(void, fused_add_rms_norm, const NormArgs&)
LONGCAT_DECLARE_ISA_FN(void, rms_norm_backward, const NormBackwardArgs&)
}  // namespace cpu
#if defined(LONGCAT_WITH_CUDA_RUNTIME)
namespace cuda {
void rms_norm(const NormArgs& a, Stream stream);
void fused_add_rms_norm(const NormArgs& a, Stream stream);
void rms_norm_backward(const NormBackwardArgs& a, Stream stream);
}  // namespace cuda
#endif

namespace {

// t has x's shape, dtype and device (a second activation or an output of the op).
void check_like_x(const char* op, const char* arg, const TensorView& t, const TensorView& x) {
  check_same_shape(op, arg, t, "x", x);
  check_same_dtype(op, arg, t, "x", x);
  check_same_device(op, arg, t, "x", x);
}

// x, weight and eps as every norm op takes them, and `out` (named out_name) like x.
NormArgs check_norm_args(const char* op, const TensorView& out, const TensorView& x,
                         const TensorView& weight, double eps, const char* out_name = "out") {
  check_views(op, {{"x", &x}, {"weight", &weight}, {out_name, &out}});
  check_min_ndim(op, "x", x, 1);
  if (x.device.type == DeviceType::CPU) check_dtype(op, "x", x, {DType::BFloat16, DType::Float32});
  else check_dtype(op, "x", x, {DType::BFloat16, DType::Float16, DType::Float32});
  check_ndim(op, "weight", weight, 1);
  check_size(op, "weight", weight, 0, x.size(-1), "the hidden size x.shape[-1]");
  check_same_dtype(op, "weight", weight, "x", x);
  check_same_device(op, "weight", weight, "x", x);
  check_contiguous(op, "weight", weight);
  check_like_x(op, out_name, out, x);
  if (!(eps >= 0.0) || !std::isfinite(eps))
    fail(ErrorKind::Value, std::string(op) + ": argument 'eps' must be finite and >= 0, got " +
                               std::to_string(eps));
  check_cuda_built(op, "x", x);
  NormArgs a{};
  a.out = out.data;
  a.x = x.data;
  a.weight = weight.data;
  a.hidden = x.size(-1);
  a.rows = a.hidden == 0 ? 0 : x.numel() / a.hidden;
  a.x_stride = row_stride(op, "x", x);
  a.out_stride = row_stride(op, out_name, out);
  a.eps = static_cast<float>(eps);
  a.dtype = x.dtype;
  a.device = x.device;
  return a;
}

}  // namespace

void rms_norm(const TensorView& out, const TensorView& x, const TensorView& weight, double eps,
              Stream stream) {
  NormArgs a = check_norm_args("rms_norm", out, x, weight, eps);
  check_no_overlap("rms_norm", "out", out, "x", x, /*allow_same=*/true);
  check_no_overlap("rms_norm", "out", out, "weight", weight);
  if (a.rows == 0) return;
#if defined(LONGCAT_WITH_CUDA_RUNTIME)
  if (x.device.type == DeviceType::CUDA) return cuda::rms_norm(a, stream);
#endif
  LONGCAT_ISA_CALL(rms_norm, a);
}

void fused_add_rms_norm(const TensorView& out, const TensorView& residual_out, const TensorView& x,
                        const TensorView& residual, const TensorView& weight, double eps,
                        Stream stream) {
  const char* op = "fused_add_rms_norm";
  check_views(op, {{"residual", &residual}, {"residual_out", &residual_out}});
  NormArgs a = check_norm_args(op, out, x, weight, eps);
  check_like_x(op, "residual", residual, x);
  check_like_x(op, "residual_out", residual_out, x);
  a.residual = residual.data;
  a.residual_out = residual_out.data;
  a.residual_stride = row_stride(op, "residual", residual);
  a.residual_out_stride = row_stride(op, "residual_out", residual_out);
  // In place is out = x and residual_out = residual exactly (vLLM's convention); any other
  // sharing (x overlapping residual, a shifted view) would read values already overwritten.
  check_no_overlap(op, "out", out, "x", x, /*allow_same=*/true);
  check_no_overlap(op, "residual_out", residual_out, "residual", residual, /*allow_same=*/true);
  check_no_overlap(op, "out", out, "residual", residual);
  check_no_overlap(op, "out", out, "residual_out", residual_out);
  check_no_overlap(op, "residual_out", residual_out, "x", x);
  check_no_overlap(op, "out", out, "weight", weight);
  check_no_overlap(op, "residual_out", residual_out, "weight", weight);
  if (a.rows == 0) return;
#if defined(LONGCAT_WITH_CUDA_RUNTIME)
  if (x.device.type == DeviceType::CUDA) return cuda::fused_add_rms_norm(a, stream);
#endif
  LONGCAT_ISA_CALL(fused_add_rms_norm, a);
}

void rms_norm_backward(const TensorView& grad_x, const TensorView& grad_w_partial,
                       const TensorView& grad_out, const TensorView& x, const TensorView& weight,
                       double eps, Stream stream) {
  const char* op = "rms_norm_backward";
  check_views(op, {{"grad_out", &grad_out}, {"grad_w_partial", &grad_w_partial}});
  const NormArgs f = check_norm_args(op, grad_x, x, weight, eps, "grad_x");
  check_contiguous(op, "grad_x", grad_x);
  check_like_x(op, "grad_out", grad_out, x);
  check_ndim(op, "grad_w_partial", grad_w_partial, 2);
  check_dtype(op, "grad_w_partial", grad_w_partial, {DType::Float32});
  check_size(op, "grad_w_partial", grad_w_partial, 1, f.hidden, "the hidden size x.shape[-1]");
  check_same_device(op, "grad_w_partial", grad_w_partial, "x", x);
  check_contiguous(op, "grad_w_partial", grad_w_partial);
  if (grad_w_partial.size(0) < 1)
    fail(ErrorKind::Value, std::string(op) + ": argument 'grad_w_partial' must have at least one row "
                                             "(the number of partial sums), got shape[0] = 0");
  check_no_overlap(op, "grad_x", grad_x, "grad_w_partial", grad_w_partial);
  for (const auto& [name, in] : {std::pair<const char*, const TensorView*>{"grad_out", &grad_out},
                                 {"x", &x}, {"weight", &weight}}) {
    check_no_overlap(op, "grad_x", grad_x, name, *in);
    check_no_overlap(op, "grad_w_partial", grad_w_partial, name, *in);
  }
  NormBackwardArgs a{};
  a.grad_x = grad_x.data;
  a.grad_w_partial = static_cast<float*>(grad_w_partial.data);
  a.grad_out = grad_out.data;
  a.x = x.data;
  a.weight = weight.data;
  a.rows = f.rows;
  a.hidden = f.hidden;
  a.partials = grad_w_partial.size(0);
  a.rows_per_partial = (a.rows + a.partials - 1) / a.partials;
  a.grad_x_stride = f.out_stride;
  a.grad_out_stride = row_stride(op, "grad_out", grad_out);
  a.x_stride = f.x_stride;
  a.eps = f.eps;
  a.dtype = f.dtype;
  a.device = f.device;
  if (a.hidden == 0) return;  // nothing to write: every tensor is empty
#if defined(LONGCAT_WITH_CUDA_RUNTIME)
  if (x.device.type == DeviceType::CUDA) return cuda::rms_norm_backward(a, stream);
#endif
  LONGCAT_ISA_CALL(rms_norm_backward, a);
}

}  // namespace longcat
