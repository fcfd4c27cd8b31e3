// Bindings: what the MLA ops share (csrc/include/longcat/mla.h): the head dims, and the defaults
// of SsaWindow for the Python dataclass longcat.ops.SsaWindow (converted by python/convert.h).
#include <nanobind/nanobind.h>

#include "longcat/mla.h"

namespace nb = nanobind;

namespace longcat::python {

void register_mla(nb::module_& m) {
  m.attr("MLA_DIM_V") = kMlaDimV;
  m.attr("MLA_DIM_ROPE") = kMlaDimRope;
  m.attr("MLA_DIM_QK") = kMlaDimQK;
  const SsaWindow d;  // the defaults of longcat/mla.h, the only place they are written
  m.attr("SSA_WINDOW_DEFAULT") = nb::make_tuple(d.sink, d.local, d.block_size);
}

}  // namespace longcat::python
