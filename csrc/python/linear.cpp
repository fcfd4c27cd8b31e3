// Bindings: linear (csrc/include/longcat/linear.h).
#include <nanobind/nanobind.h>

#include "longcat/linear.h"
#include "python/convert.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace longcat::python {

void register_linear(nb::module_& m) {
  m.def(
      "linear",
      [](Array out, Array x, Array weight) {
        const char* op = "linear";
        TensorView o = to_view(out, op, "out"), xv = to_view(x, op, "x"), w = to_view(weight, op, "weight");
        nb::gil_scoped_release release;
        longcat::linear(o, xv, w);
      },
      "out"_a, "x"_a, "weight"_a,
      "out = x @ weight.T with fp32 sums (see longcat/linear.h). Writes into out.");
}

}  // namespace longcat::python
