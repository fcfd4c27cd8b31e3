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
  check_ndim(op, "x", x, 2);
  check_ndim(op, "weight", weight, 2);
  check_ndim(op, "out", out, 2);
  if (x.device.type != DeviceType::CPU)
    fail(ErrorKind::Runtime, arg_prefix(op, "x") + "must be a CPU tensor (linear has no CUDA kernel), got " +
                                 device_name(x.device));
  check_dtype(op, "x", x, {DType::BFloat16, DType::Float32});
  check_same_dtype(op, "weight", weight, "x", x);
  check_same_dtype(op, "out", out, "x", x);
  check_same_device(op, "weight", weight, "x", x);
  check_same_device(op, "out", out, "x", x);
  check_size(op, "weight", weight, 1, x.size(1), "the input size x.shape[1]");
  check_size(op, "out", out, 0, x.size(0), "the rows of x");
  check_size(op, "out", out, 1, weight.size(0), "the output size weight.shape[0]");
  check_contiguous(op, "weight", weight);
  check_contiguous(op, "out", out);
  check_no_overlap(op, "out", out, "x", x);
  check_no_overlap(op, "out", out, "weight", weight);
  LinearArgs a{};
  a.out = out.data;
  a.x = x.data;
  a.weight = weight.data;
  a.M = x.size(0);
  a.N = weight.size(0);
  a.K = x.size(1);
  a.x_stride = row_stride(op, "x", x);
  a.dtype = x.dtype;
  if (a.M == 0 || a.N == 0) return;
  check_nonnull(op, "out", out);
  if (a.K > 0) {
    check_nonnull(op, "x", x);
    check_nonnull(op, "weight", weight);
  }
  LONGCAT_ISA_CALL(linear, a);
}

}  // namespace longcat
