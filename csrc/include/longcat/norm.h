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
#pragma once

#include "longcat/common.h"

namespace longcat {

LONGCAT_API void rms_norm(const TensorView& out, const TensorView& x, const TensorView& weight,
                          double eps, Stream stream = nullptr);

LONGCAT_API void fused_add_rms_norm(const TensorView& out, const TensorView& residual_out,
                                    const TensorView& x, const TensorView& residual,
                                    const TensorView& weight, double eps,
                                    Stream stream = nullptr);

}  // namespace longcat
