// linear kernel arguments after validation (internal).
#pragma once

#include <cstdint>

#include "longcat/common.h"

namespace longcat {

struct LinearArgs {
  void* out;            // [G, M, N]: rows out_stride, groups out_group_stride elements apart
  const void* x;        // [G, M, K]: rows x_stride, groups x_group_stride elements apart
  const void* weight;   // [G, N, K] contiguous
  int64_t G, M, N, K;
  int64_t x_stride, x_group_stride;
  int64_t out_stride, out_group_stride;
  DType dtype;
};

}  // namespace longcat
