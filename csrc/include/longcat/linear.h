// longcat public C++ API: a weight-streaming linear layer for few rows (decode).
//
//   out[m, n] = sum_k x[m, k] * weight[n, k]        (torch's F.linear without bias)
//
// The products are summed in fp32 and rounded once to the output dtype. With a handful of rows
// (decode of a small batch) a linear layer is bound by reading its weight matrix; this kernel
// reads each weight row once per 8 rows of x, straight from the caller's [N, K] matrix (no
// packed copy), and on AVX512-BF16 CPUs multiplies bf16 pairs with vdpbf16ps.
//
// Shapes: x [M, K] (last dim contiguous, rows at one row stride: a column slice is fine),
// weight [N, K] contiguous, out [M, N] contiguous. Any M, N, K >= 0 (K = 0 gives zeros).
// dtypes: float32 or bfloat16, the same for all three. CPU only: a CUDA tensor is Error(Runtime).
// out may not overlap x or weight. CPU work is split over column blocks across the library's
// threads.
#pragma once

#include "longcat/common.h"

namespace longcat {

LONGCAT_API void linear(const TensorView& out, const TensorView& x, const TensorView& weight,
                        Stream stream = nullptr);

}  // namespace longcat
