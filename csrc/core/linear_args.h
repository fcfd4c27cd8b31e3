// linear kernel arguments after validation (internal).
#pragma once

#include <cstdint>

#include "longcat/common.h"

namespace longcat {

struct LinearArgs {
  void* out;            // [M, N] contiguous
  const void* x;        // [M, K], rows x_stride elements apart
  const void* weight;   // [N, K] contiguous
  int64_t M, N, K;
  int64_t x_stride;
  DType dtype;
};

}  // namespace longcat
