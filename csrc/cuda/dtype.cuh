// Element conversions shared by the CUDA kernels (internal): fp32 <-> float / half / bfloat16,
// rounding to nearest even as torch does.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace longcat::cuda {

template <typename T> __device__ __forceinline__ float to_f(T v);
template <> __device__ __forceinline__ float to_f(float v) { return v; }
template <> __device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f(float v) { return v; }
template <> __device__ __forceinline__ __half from_f(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f(float v) { return __float2bfloat16_rn(v); }
// Round to T's precision and back, as torch does between two ops.
template <typename T> __device__ __forceinline__ float quantize(float v) { return to_f(from_f<T>(v)); }

}  // namespace longcat::cuda
