// DLPack (nanobind ndarray) -> longcat::TensorView, with errors that name the argument.
#pragma once

#include <nanobind/ndarray.h>

#include "longcat/common.h"

namespace longcat::python {

namespace nb = nanobind;

// Any dtype, device, rank and strides; the C++ API checks what each op needs.
using Array = nb::ndarray<>;

TensorView to_view(const Array& a, const char* op, const char* arg);

}  // namespace longcat::python
