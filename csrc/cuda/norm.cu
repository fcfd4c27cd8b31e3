// RMSNorm CUDA kernels (sm_90a); semantics in csrc/include/longcat/norm.h.
//
// One block per row. Each thread owns a fixed set of 16-byte packs of the row and keeps the
// same set in both passes, so the fused variant reads back exactly the sums it wrote itself
// (no block-wide barrier beyond the reduction). Rows too misaligned for 16-byte access take a
// scalar loop with the same ownership rule.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <string>

#include "cuda/dtype.cuh"
#include "core/norm_args.h"
#include "cuda/launch.cuh"
#include "cuda/nvtx.cuh"

namespace longcat::cuda {
namespace {


template <typename T>
struct alignas(16) Pack {
  static constexpr int N = 16 / sizeof(T);
  T v[N];
};

__device__ __forceinline__ float block_sum(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : 0.f;
  if (warp == 0)
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x == 0) scratch[0] = v;
  __syncthreads();
  return scratch[0];
}

template <typename T, bool kFused, bool kVec>
__global__ void __launch_bounds__(1024) norm_kernel(NormArgs a) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x, H = a.hidden;
  const T* x = static_cast<const T*>(a.x) + row * a.x_stride;
  const T* w = static_cast<const T*>(a.weight);
  T* out = static_cast<T*>(a.out) + row * a.out_stride;
  const T* r = kFused ? static_cast<const T*>(a.residual) + row * a.residual_stride : nullptr;
  T* s = kFused ? static_cast<T*>(a.residual_out) + row * a.residual_out_stride : nullptr;
  const T* src = kFused ? s : x;
  float ss = 0.f;
  if constexpr (kVec) {
    using P = Pack<T>;
    const int64_t packs = H / P::N;
    for (int64_t p = threadIdx.x; p < packs; p += blockDim.x) {
      P xv = reinterpret_cast<const P*>(x)[p];
      if constexpr (kFused) {
        P rv = reinterpret_cast<const P*>(r)[p];
#pragma unroll
        for (int j = 0; j < P::N; ++j) xv.v[j] = from_f<T>(to_f(xv.v[j]) + to_f(rv.v[j]));
        reinterpret_cast<P*>(s)[p] = xv;
      }
#pragma unroll
      for (int j = 0; j < P::N; ++j) ss += to_f(xv.v[j]) * to_f(xv.v[j]);
    }
    const float inv = rsqrtf(block_sum(ss, scratch) / static_cast<float>(H) + a.eps);
    for (int64_t p = threadIdx.x; p < packs; p += blockDim.x) {
      P v = reinterpret_cast<const P*>(src)[p], wv = reinterpret_cast<const P*>(w)[p];
#pragma unroll
      for (int j = 0; j < P::N; ++j) v.v[j] = from_f<T>(quantize<T>(to_f(v.v[j]) * inv) * to_f(wv.v[j]));
      reinterpret_cast<P*>(out)[p] = v;
    }
  } else {
    for (int64_t i = threadIdx.x; i < H; i += blockDim.x) {
      float v = to_f(x[i]);
      if constexpr (kFused) {
        v = quantize<T>(v + to_f(r[i]));
        s[i] = from_f<T>(v);
      }
      ss += v * v;
    }
    const float inv = rsqrtf(block_sum(ss, scratch) / static_cast<float>(H) + a.eps);
    for (int64_t i = threadIdx.x; i < H; i += blockDim.x)
      out[i] = from_f<T>(quantize<T>(to_f(src[i]) * inv) * to_f(w[i]));
  }
}

bool aligned16(const void* p, int64_t stride_elems, int64_t elem_size) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0 && (stride_elems * elem_size) % 16 == 0;
}

template <typename T, bool kFused>
void launch(const NormArgs& a, cudaStream_t stream) {
  constexpr int N = Pack<T>::N;
  bool vec = a.hidden % N == 0 && aligned16(a.x, a.x_stride, sizeof(T)) &&
             aligned16(a.out, a.out_stride, sizeof(T)) && aligned16(a.weight, 0, sizeof(T));
  if (kFused)
    vec = vec && aligned16(a.residual, a.residual_stride, sizeof(T)) &&
          aligned16(a.residual_out, a.residual_out_stride, sizeof(T));
  const int64_t work = vec ? a.hidden / N : a.hidden;
  int threads = static_cast<int>(std::min<int64_t>(1024, (work + 31) / 32 * 32));
  threads = std::max(threads, 32);
  if (vec) norm_kernel<T, kFused, true><<<static_cast<unsigned>(a.rows), threads, 0, stream>>>(a);
  else norm_kernel<T, kFused, false><<<static_cast<unsigned>(a.rows), threads, 0, stream>>>(a);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    throw Error(ErrorKind::Runtime, std::string(kFused ? "fused_add_rms_norm" : "rms_norm") +
                                        ": CUDA launch failed: " + cudaGetErrorString(e));
}

template <bool kFused>
void dispatch(const NormArgs& a, Stream stream) {
  if (a.rows > 0x7fffffff)
    throw Error(ErrorKind::Value, "rms_norm: more than 2^31-1 rows in one call on CUDA");
  auto s = static_cast<cudaStream_t>(stream);
  DeviceGuard guard(a.device.index);
  switch (a.dtype) {
    case DType::BFloat16: return launch<__nv_bfloat16, kFused>(a, s);
    case DType::Float16: return launch<__half, kFused>(a, s);
    default: return launch<float, kFused>(a, s);
  }
}

template <typename T>
__global__ void __launch_bounds__(1024) norm_backward_kernel(NormBackwardArgs a) {
  __shared__ float scratch_ss[32], scratch_dot[32];
  const int64_t H = a.hidden;
  float* gw = a.grad_w_partial + static_cast<int64_t>(blockIdx.x) * H;
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) gw[i] = 0.f;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * a.rows_per_partial;
  const int64_t begin = first < a.rows ? first : a.rows;
  const int64_t end = begin + a.rows_per_partial < a.rows ? begin + a.rows_per_partial : a.rows;
  const T* w = static_cast<const T*>(a.weight);
  for (int64_t row = begin; row < end; ++row) {
    const T* x = static_cast<const T*>(a.x) + row * a.x_stride;
    const T* g = static_cast<const T*>(a.grad_out) + row * a.grad_out_stride;
    T* gx = static_cast<T*>(a.grad_x) + row * a.grad_x_stride;
    float ss = 0.f, dot = 0.f;
    for (int64_t i = threadIdx.x; i < H; i += blockDim.x) {
      const float xv = to_f(x[i]);
      ss += xv * xv;
      dot += to_f(g[i]) * to_f(w[i]) * xv;
    }
    const float r = rsqrtf(block_sum(ss, scratch_ss) / static_cast<float>(H) + a.eps);
    const float c = r * r * r * (block_sum(dot, scratch_dot) / static_cast<float>(H));
    for (int64_t i = threadIdx.x; i < H; i += blockDim.x) {
      const float xv = to_f(x[i]), gv = to_f(g[i]);
      gx[i] = from_f<T>(gv * to_f(w[i]) * r - c * xv);
      gw[i] += gv * (xv * r);
    }
    __syncthreads();  // the next row's sums reuse the scratch that this row's threads read
  }
}

template <typename T>
void launch_backward(const NormBackwardArgs& a, cudaStream_t stream) {
  int threads = static_cast<int>(std::min<int64_t>(1024, (a.hidden + 31) / 32 * 32));
  threads = std::max(threads, 32);
  norm_backward_kernel<T><<<static_cast<unsigned>(a.partials), threads, 0, stream>>>(a);
  check_launch("rms_norm_backward");
}

}  // namespace

void rms_norm_backward(const NormBackwardArgs& a, Stream stream) {
  NvtxRange nvtx("longcat::rms_norm_backward");
  if (a.partials > 0x7fffffff)
    throw Error(ErrorKind::Value, "rms_norm_backward: more than 2^31-1 partial sums in one call on CUDA");
  auto s = static_cast<cudaStream_t>(stream);
  DeviceGuard guard(a.device.index);
  switch (a.dtype) {
    case DType::BFloat16: return launch_backward<__nv_bfloat16>(a, s);
    case DType::Float16: return launch_backward<__half>(a, s);
    default: return launch_backward<float>(a, s);
  }
}

void rms_norm(const NormArgs& a, Stream stream) {
  NvtxRange nvtx("longcat::rms_norm");
  dispatch<false>(a, stream);
}
void fused_add_rms_norm(const NormArgs& a, Stream stream) {
  NvtxRange nvtx("longcat::fused_add_rms_norm");
  dispatch<true>(a, stream);
}

}  // namespace longcat::cuda
