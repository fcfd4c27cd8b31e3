// longcat public C++ API: RMSNorm, plain and fused with the residual add.
//
// Semantics match Hugging Face transformers' LongcatFlashRMSNorm / LlamaRMSNorm and vLLM's
// rms_norm, bit for bit in the rounding order:
//   r   = 1 / sqrt(mean(float(x)^2 over the last dim) + eps)            (fp32)
//   out = dtype(dtype(float(x) * r) * float(weight))                      (two roundings, as torch)
// fused_add_rms_norm first forms s = dtype(float(x) + float(residual)), writes s to
// residual_out, and normalises s.
//
// Shapes: x [..., H] (any rank >= 1; rows = product of the leading dims), weight [H].
// dtypes: float32 and bfloat16 on CPU; float32, float16 and bfloat16 on CUDA; weight has x's dtype.
// Layout: the last dim of every tensor is contiguous; the leading dims of x and residual may
// have one common row stride (e.g. a column slice x[:, :512]); out / residual_out are
// contiguous. out may be exactly x and residual_out exactly residual (in-place use); any other
// sharing of memory between an output and an input or the other output is Error(Value).
// CPU work is split over rows across the library's threads; `stream` orders CUDA work.
//
// rms_norm_backward: the exact gradient of the fp32 math above (the roundings to x's dtype pass
// gradients straight through, as autograd through transformers' RMSNorm in fp32 computes):
//   r = 1 / sqrt(mean(x^2) + eps), c = r^3 * mean(g * w * x)     (per row, fp32; g = grad_out)
//   grad_x = dtype(r * g * w - c * x)
//   grad_w_partial[p, :] = sum over the rows of block p of g * x * r   (fp32)
// The rows are cut into P = grad_w_partial.shape[0] blocks of ceil(rows / P) consecutive rows;
// the caller sums the P partials into grad_w. The blocks do not depend on the thread count, so
// the result is the same on any number of threads. Every element of grad_w_partial is written
// (zero for a block without rows). grad_x, grad_out and x have one shape and dtype; grad_out
// and x may have a row stride like x above, grad_x and grad_w_partial ([P, H], float32) are
// contiguous, and neither output may share memory with an input or the other output.
#pragma once

#include "longcat/common.h"

namespace longcat {

LONGCAT_API void rms_norm(const TensorView& out, const TensorView& x, const TensorView& weight,
                          double eps, Stream stream = nullptr);

LONGCAT_API void fused_add_rms_norm(const TensorView& out, const TensorView& residual_out,
                                    const TensorView& x, const TensorView& residual,
                                    const TensorView& weight, double eps,
                                    Stream stream = nullptr);

LONGCAT_API void rms_norm_backward(const TensorView& grad_x, const TensorView& grad_w_partial,
                                   const TensorView& grad_out, const TensorView& x,
                                   const TensorView& weight, double eps, Stream stream = nullptr);

}  // namespace longcat
