// Bindings: RMSNorm (csrc/include/longcat/norm.h).
#include <nanobind/nanobind.h>

#include "longcat/norm.h"
#include "python/convert.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace longcat::python {

void register_norm(nb::module_& m) {
  m.def(
      "rms_norm",
      [](Array out, Array x, Array weight, double eps, uintptr_t stream) {
        const char* op = "rms_norm";
        TensorView o = to_view(out, op, "out"), xv = to_view(x, op, "x"), w = to_view(weight, op, "weight");
        nb::gil_scoped_release release;
        longcat::rms_norm(o, xv, w, eps, reinterpret_cast<Stream>(stream));
      },
      "out"_a, "x"_a, "weight"_a, "eps"_a, "stream"_a = 0,
      "out = weight * normalize(x) over the last dim (see longcat/norm.h). Writes into out.");
  m.def(
      "fused_add_rms_norm",
      [](Array out, Array residual_out, Array x, Array residual, Array weight, double eps,
         uintptr_t stream) {
        const char* op = "fused_add_rms_norm";
        TensorView o = to_view(out, op, "out"), ro = to_view(residual_out, op, "residual_out"),
                   xv = to_view(x, op, "x"), r = to_view(residual, op, "residual"),
                   w = to_view(weight, op, "weight");
        nb::gil_scoped_release release;
        longcat::fused_add_rms_norm(o, ro, xv, r, w, eps, reinterpret_cast<Stream>(stream));
      },
      "out"_a, "residual_out"_a, "x"_a, "residual"_a, "weight"_a, "eps"_a, "stream"_a = 0,
      "residual_out = x + residual; out = rms_norm(residual_out). Writes into out and residual_out.");
  m.def(
      "rms_norm_backward",
      [](Array grad_x, Array grad_w_partial, Array grad_out, Array x, Array weight, double eps,
         uintptr_t stream) {
        const char* op = "rms_norm_backward";
        TensorView gx = to_view(grad_x, op, "grad_x"), gw = to_view(grad_w_partial, op, "grad_w_partial"),
                   g = to_view(grad_out, op, "grad_out"), xv = to_view(x, op, "x"),
                   w = to_view(weight, op, "weight");
        nb::gil_scoped_release release;
        longcat::rms_norm_backward(gx, gw, g, xv, w, eps, reinterpret_cast<Stream>(stream));
      },
      "grad_x"_a, "grad_w_partial"_a, "grad_out"_a, "x"_a, "weight"_a, "eps"_a, "stream"_a = 0,
      "The gradients of rms_norm (see longcat/norm.h): writes grad_x and, per block of rows, "
      "a partial sum of grad_w into grad_w_partial [P, H] float32.");
}

}  // namespace longcat::python
