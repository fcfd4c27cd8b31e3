// longcat public C++ API: a weight-streaming linear layer for few rows (decode).
//
//   out[m, n] = sum_k x[m, k] * weight[n, k]        (torch's F.linear without bias)
//
// The products are summed in fp32 and rounded once to the output dtype. With a handful of rows
// (decode of a small batch) a linear layer is bound by reading its weight matrix; this kernel
// reads each weight row once per 8 rows of x, straight from the caller's [N, K] matrix (no
// packed copy), and on AVX512-BF16 CPUs multiplies bf16 pairs with vdpbf16ps.
//
// Shapes: x [M, K], weight [N, K], out [M, N]; or, batched over G groups (e.g. attention heads,
// as torch.bmm(x, weight.transpose(1, 2))): x [G, M, K], weight [G, N, K], out [G, M, N], group
// g using weight[g]. x needs only a contiguous last dim (any row and group strides, e.g. one
// head of a [M, heads, K] tensor); weight is contiguous; out needs a contiguous last dim and
// rows and groups that do not overlap (any row and group strides, e.g. the first 512 values of
// each head of a [M, heads, 576] tensor, written in place). Any G, M, N, K >= 0 (K = 0 gives
// zeros).
// dtypes: float32 or bfloat16, the same for all three. CPU only: a CUDA tensor is Error(Runtime).
// out may not overlap x or weight. CPU work is split over (group, column block) pairs across
// the library's threads.
#pragma once

#include "longcat/common.h"

namespace longcat {

LONGCAT_API void linear(const TensorView& out, const TensorView& x, const TensorView& weight,
                        Stream stream = nullptr);

}  // namespace longcat
