// linear: argument checks and the choice of the CPU copy by ISA (no CUDA backend: CPU only).
#include "core/checks.h"
#include "core/linear_args.h"
#include "cpu/isa_dispatch.h"
#include "longcat/linear.h"

namespace longcat {
namespace cpu {
LONGCAT_DECLARE_ISA_FN(void, linear, const LinearArgs&)
}  // namespace cpu

void linear(const TensorView& out, const TensorView& x, const TensorView& weight, Stream) {
  const char* op = "linear";
  check_views(op, {{"x", &x}, {"weight", &weight}, {"out", &out}});
  const bool batched = x.ndim == 3;
  if (x.ndim != 2 && x.ndim != 3)
    fail(ErrorKind::Value, arg_prefix(op, "x") + "must have 2 dimensions [M, K] or 3 [G, M, K], got shape " +
                               shape_str(x));
  check_ndim(op, "weight", weight, x.ndim);
  check_ndim(op, "out", out, x.ndim);
  if (x.device.type != DeviceType::CPU)
    fail(ErrorKind::Runtime, arg_prefix(op, "x") + "must be a CPU tensor (linear has no CUDA kernel), got " +
                                 device_name(x.device));
  check_dtype(op, "x", x, {DType::BFloat16, DType::Float32});
  check_same_dtype(op, "weight", weight, "x", x);
  check_same_dtype(op, "out", out, "x", x);
  check_same_device(op, "weight", weight, "x", x);
  check_same_device(op, "out", out, "x", x);
  const int d = batched ? 1 : 0;  // the row dim of x and out
  if (batched) {
    check_size(op, "weight", weight, 0, x.size(0), "the groups x.shape[0]");
    check_size(op, "out", out, 0, x.size(0), "the groups x.shape[0]");
  }
  check_size(op, "weight", weight, d + 1, x.size(-1), "the input size x.shape[-1]");
  check_size(op, "out", out, d, x.size(d), "the rows of x");
  check_size(op, "out", out, d + 1, weight.size(d), "the output size of weight");
  check_contiguous(op, "weight", weight);
  check_last_dim_contiguous(op, "out", out);
  check_no_internal_overlap(op, "out", out);
  check_last_dim_contiguous(op, "x", x);
  check_no_overlap(op, "out", out, "x", x);
  check_no_overlap(op, "out", out, "weight", weight);
  LinearArgs a{};
  a.out = out.data;
  a.x = x.data;
  a.weight = weight.data;
  a.G = batched ? x.size(0) : 1;
  a.M = x.size(d);
  a.N = weight.size(d);
  a.K = x.size(-1);
  a.x_stride = x.stride(d);
  a.x_group_stride = batched ? x.stride(0) : 0;
  a.out_stride = out.stride(d);
  a.out_group_stride = batched ? out.stride(0) : 0;
  a.dtype = x.dtype;
  if (a.G == 0 || a.M == 0 || a.N == 0) return;
  check_nonnull(op, "out", out);
  if (a.K > 0) {
    check_nonnull(op, "x", x);
    check_nonnull(op, "weight", weight);
  }
  LONGCAT_ISA_CALL(linear, a);
}

}  // namespace longcat
