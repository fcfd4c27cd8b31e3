// DLPack (nanobind ndarray) -> longcat::TensorView, with errors that name the argument.
#pragma once

#include <nanobind/ndarray.h>

#include <optional>
#include <string>

#include "longcat/attention.h"
#include "longcat/common.h"

namespace longcat::python {

namespace nb = nanobind;

// Any dtype, device, rank and strides; the C++ API checks what each op needs.
using Array = nb::ndarray<>;

TensorView to_view(const Array& a, const char* op, const char* arg);

// The SSA window of the attention bindings: window_mode "none" (full attention), "blocks" or
// "tokens"; the numbers are checked by the C++ API (window_args).
std::optional<SparseWindow> make_window(const char* op, const std::string& mode, int64_t sink,
                                        int64_t local, int64_t block_size);

}  // namespace longcat::python
