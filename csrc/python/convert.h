// DLPack (nanobind ndarray) -> longcat::TensorView, with errors that name the argument.
#pragma once

#include <nanobind/ndarray.h>

#include <string>

#include "longcat/common.h"
#include "longcat/mla.h"

namespace longcat::python {

namespace nb = nanobind;

// Any dtype, device, rank and strides; the C++ API checks what each op needs.
using Array = nb::ndarray<>;

TensorView to_view(const Array& a, const char* op, const char* arg);

}  // namespace longcat::python

// longcat.ops.SsaWindow (a frozen dataclass: sink, local, block_size, tokens) -> longcat::SsaWindow.
// Any object with those four attributes converts; the values are checked by the C++ API.
namespace nanobind::detail {
template <>
struct type_caster<longcat::SsaWindow> {
  NB_TYPE_CASTER(longcat::SsaWindow, const_name("SsaWindow"))

  bool from_python(handle src, uint8_t, cleanup_list*) noexcept {
    for (const char* field : {"sink", "local", "block_size", "tokens"})
      if (!hasattr(src, field)) return false;
    if (!try_cast(src.attr("sink"), value.sink) || !try_cast(src.attr("local"), value.local) ||
        !try_cast(src.attr("block_size"), value.block_size))
      return false;
    bool tokens = false;
    if (!try_cast(src.attr("tokens"), tokens)) return false;
    value.unit = tokens ? longcat::SsaWindow::Unit::Tokens : longcat::SsaWindow::Unit::Blocks;
    return true;
  }

  static handle from_cpp(const longcat::SsaWindow& w, rv_policy, cleanup_list*) noexcept {
    return make_tuple(w.unit == longcat::SsaWindow::Unit::Tokens, w.sink, w.local, w.block_size).release();
  }
};
}  // namespace nanobind::detail
