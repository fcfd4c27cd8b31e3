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
}

}  // namespace longcat::python
