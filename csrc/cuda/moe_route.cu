// MoE CUDA kernels (sm_90a): router, dispatch layout, dispatch, combine. Semantics in
// csrc/include/longcat/moe_route.h.
//
// Router: one block of 8 warps per kTok tokens. Phase 1: each warp takes experts round-robin
// and computes the kTok fp32 dot products of that expert's weight row with the tokens' rows
// (W read once per block, coalesced float4; the tokens' rows stay in L1), logits to shared
// memory. Phase 2: one warp per token: softmax / sigmoid over E with warp reductions, then k
// rounds of a warp argmax over the biased scores (ties: lower id), chosen experts marked in a
// shared byte map.
// Dispatch layout: a shared-memory histogram (global atomics for huge n_routed), then one block
// scans the padded counts into offsets. Dispatch: one block per expert walks the ids in
// flattened order and ranks its matches with warp ballots (stable in token order, no atomics),
// writing slot_row and row_token; then a row-copy kernel fills x_perm (zero padding rows).
// Combine: one block per token, 16-byte packs of the row, k weighted rows summed in fp32.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "cuda/dtype.cuh"
#include "cuda/launch.cuh"
#include "core/moe_route_args.h"

namespace longcat::cuda {
namespace {


// 4 consecutive elements as fp32 (p 4-element aligned: 16 bytes for float, 8 for 16-bit types).
__device__ __forceinline__ float4 load4(const float* p) { return __ldg(reinterpret_cast<const float4*>(p)); }
__device__ __forceinline__ float2 to_f2(uint32_t u, __nv_bfloat16) {
  return make_float2(__uint_as_float(u << 16), __uint_as_float(u & 0xffff0000u));
}
__device__ __forceinline__ float2 to_f2(uint32_t u, __half) {
  return __half22float2(*reinterpret_cast<const __half2*>(&u));
}
template <typename T>
__device__ __forceinline__ float4 load4(const T* p) {
  const uint2 u = __ldg(reinterpret_cast<const uint2*>(p));
  const float2 a = to_f2(u.x, T{}), b = to_f2(u.y, T{});
  return make_float4(a.x, a.y, b.x, b.y);
}

constexpr int kRouteThreads = 256;
constexpr int kRouteWarps = kRouteThreads / 32;

// ---- router ------------------------------------------------------------------------------------

template <typename T, int kTok, bool kVec>
__global__ void __launch_bounds__(kRouteThreads) route_kernel(MoeRouteArgs a) {
  extern __shared__ float smem[];
  const int64_t E = a.experts, H = a.hidden_size;
  float* logits = smem;                                            // [kTok][E]
  unsigned char* chosen = reinterpret_cast<unsigned char*>(smem + kTok * E);  // [kTok][E]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * kTok;
  const int ntok = static_cast<int>(min(static_cast<int64_t>(kTok), a.tokens - t0));
  const T* hidden = static_cast<const T*>(a.hidden);
  const T* xr[kTok];
#pragma unroll
  for (int i = 0; i < kTok; ++i) xr[i] = hidden + (t0 + min(i, ntok - 1)) * a.hidden_stride;

  for (int64_t e = warp; e < E; e += kRouteWarps) {
    const float* w = a.weight + e * H;
    float acc[kTok];
#pragma unroll
    for (int i = 0; i < kTok; ++i) acc[i] = 0.f;
    if constexpr (kVec) {
#pragma unroll 2  // (a full unroll of the kTok = 1 copy spills a few registers)
      for (int64_t h = lane * 4; h < H; h += 32 * 4) {
        const float4 wv = load4(w + h);
#pragma unroll
        for (int i = 0; i < kTok; ++i) {
          const float4 xv = load4(xr[i] + h);
          acc[i] = fmaf(xv.x, wv.x, acc[i]);
          acc[i] = fmaf(xv.y, wv.y, acc[i]);
          acc[i] = fmaf(xv.z, wv.z, acc[i]);
          acc[i] = fmaf(xv.w, wv.w, acc[i]);
        }
      }
    } else {
      for (int64_t h = lane; h < H; h += 32) {
        const float wv = __ldg(w + h);
#pragma unroll
        for (int i = 0; i < kTok; ++i) acc[i] = fmaf(to_f(xr[i][h]), wv, acc[i]);
      }
    }
#pragma unroll
    for (int i = 0; i < kTok; ++i) {
      float v = acc[i];
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (lane == 0) logits[i * E + e] = v;
    }
  }
  __syncthreads();
  if (warp >= ntok) return;

  // Phase 2: warp `warp` owns token t0 + warp.
  float* z = logits + warp * E;
  unsigned char* used = chosen + warp * E;
  if (a.score == MoeScore::Softmax) {
    float m = -INFINITY;
    for (int64_t e = lane; e < E; e += 32) m = fmaxf(m, z[e]);
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    float sum = 0.f;
    for (int64_t e = lane; e < E; e += 32) {
      const float v = expf(z[e] - m);
      z[e] = v;
      sum += v;
    }
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    for (int64_t e = lane; e < E; e += 32) z[e] = z[e] / sum;
  } else {
    for (int64_t e = lane; e < E; e += 32) z[e] = 1.0f / (1.0f + expf(-z[e]));
  }
  for (int64_t e = lane; e < E; e += 32) used[e] = 0;
  __syncwarp();
  const int64_t t = t0 + warp, k = a.top_k;
  int32_t* ids = a.topk_ids + t * k;
  float* wout = a.topk_weights + t * k;
  float total = 0.f;
  for (int64_t j = 0; j < k; ++j) {
    float bv = 0.f;
    int be = -1;
    for (int64_t e = lane; e < E; e += 32) {
      if (used[e]) continue;
      const float v = a.bias ? z[e] + a.bias[e] : z[e];
      if (be < 0 || v > bv) {  // ids rise within a lane: equal values keep the lower id
        bv = v;
        be = static_cast<int>(e);
      }
    }
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      const int oe = __shfl_xor_sync(0xffffffffu, be, o);
      if (oe >= 0 && (be < 0 || ov > bv || (ov == bv && oe < be))) {
        bv = ov;
        be = oe;
      }
    }
    // All lanes agree on (bv, be) up to NaN ordering; take lane 0's.
    be = __shfl_sync(0xffffffffu, be, 0);
    if (lane == 0) {
      used[be] = 1;
      ids[j] = be;
      wout[j] = z[be];
    }
    total += z[be];
    __syncwarp();
  }
  if (lane == 0) {
    const float den = total + 1e-20f;
    for (int64_t j = 0; j < k; ++j) {
      float w = wout[j];
      if (a.renormalize) w = w / den;
      wout[j] = w * a.scale;
    }
  }
}

template <typename T, int kTok>
void launch_route(const MoeRouteArgs& a, cudaStream_t s) {
  const size_t smem = static_cast<size_t>(kTok) * a.experts * (sizeof(float) + 1);
  const bool vec = a.hidden_size % 4 == 0 && reinterpret_cast<uintptr_t>(a.weight) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(a.hidden) % (4 * sizeof(T)) == 0 &&
                   a.hidden_stride % 4 == 0;
  auto kernel = vec ? route_kernel<T, kTok, true> : route_kernel<T, kTok, false>;
  if (smem > 48 * 1024) {
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem));
    if (e != cudaSuccess)
      throw Error(ErrorKind::Value, "moe_route: " + std::to_string(a.experts) +
                                        " experts need more shared memory than this GPU has");
  }
  const int64_t blocks = (a.tokens + kTok - 1) / kTok;
  kernel<<<static_cast<unsigned>(blocks), kRouteThreads, smem, s>>>(a);
  check_launch("moe_route");
}

template <typename T>
void route_dtype(const MoeRouteArgs& a, cudaStream_t s) {
  // Four tokens per block share each weight row; one when that would not fit shared memory.
  if (a.tokens >= 4 && 4 * a.experts * 5 <= 96 * 1024) launch_route<T, 4>(a, s);
  else launch_route<T, 1>(a, s);
}

// ---- dispatch layout ---------------------------------------------------------------------------

template <bool kShared>
__global__ void count_kernel(MoeLayoutArgs a) {
  extern __shared__ int hist[];
  if constexpr (kShared) {
    for (int64_t e = threadIdx.x; e < a.n_routed; e += blockDim.x) hist[e] = 0;
    __syncthreads();
  }
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < a.entries;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t id = a.topk_ids[i];
    if (id >= 0 && id < a.n_routed) {
      if constexpr (kShared) atomicAdd(&hist[id], 1);
      else atomicAdd(&a.counts[id], 1);
    }
  }
  if constexpr (kShared) {
    __syncthreads();
    for (int64_t e = threadIdx.x; e < a.n_routed; e += blockDim.x)
      if (hist[e]) atomicAdd(&a.counts[e], hist[e]);
  }
}

// Exclusive scan of a per-thread value over a block of 1024 threads.
__device__ int block_exclusive_scan(int v, int* warp_sums, int* total) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  int inc = v;
  for (int o = 1; o < 32; o <<= 1) {
    const int n = __shfl_up_sync(0xffffffffu, inc, o);
    if (lane >= o) inc += n;
  }
  if (lane == 31) warp_sums[warp] = inc;
  __syncthreads();
  if (warp == 0) {
    int s = lane < warps ? warp_sums[lane] : 0;
    for (int o = 1; o < 32; o <<= 1) {
      const int n = __shfl_up_sync(0xffffffffu, s, o);
      if (lane >= o) s += n;
    }
    if (lane < warps) warp_sums[lane] = s - (lane < warps ? warp_sums[lane] : 0);  // exclusive
    if (lane == warps - 1) *total = s;
  }
  __syncthreads();
  const int result = warp_sums[warp] + inc - v;
  __syncthreads();
  return result;
}

__global__ void __launch_bounds__(1024) offsets_kernel(MoeLayoutArgs a) {
  __shared__ int warp_sums[32];
  __shared__ int total;
  const int64_t n = a.n_routed, per = (n + blockDim.x - 1) / blockDim.x;
  const int64_t e0 = threadIdx.x * per, e1 = min(n, e0 + per);
  int local = 0;
  for (int64_t e = e0; e < e1; ++e) local += static_cast<int>((a.counts[e] + a.align - 1) / a.align * a.align);
  int run = block_exclusive_scan(local, warp_sums, &total);
  if (threadIdx.x == 0) a.offsets[0] = 0;
  for (int64_t e = e0; e < e1; ++e) {
    run += static_cast<int>((a.counts[e] + a.align - 1) / a.align * a.align);
    a.offsets[e + 1] = run;
  }
}

// ---- dispatch ----------------------------------------------------------------------------------

constexpr int kRankThreads = 512;

// Block e ranks the entries with id e in flattened order.
__global__ void __launch_bounds__(kRankThreads) rank_kernel(MoeDispatchArgs a) {
  __shared__ int warp_sums[32];
  __shared__ int total;
  const int e = blockIdx.x;
  const int64_t n = a.tokens * a.top_k;
  const int64_t seg = a.offsets[e], seg_real_end = seg + a.counts[e], seg_end = a.offsets[e + 1];
  int64_t base = 0;
  for (int64_t start = 0; start < n; start += blockDim.x) {
    const int64_t i = start + threadIdx.x;
    const int match = (i < n && a.topk_ids[i] == e) ? 1 : 0;
    const int rank = block_exclusive_scan(match, warp_sums, &total);
    if (match) {
      const int64_t r = seg + base + rank;
      if (r < seg_real_end && r < a.rows) {
        a.slot_row[i] = static_cast<int32_t>(r);
        a.row_token[r] = static_cast<int32_t>(i / a.top_k);
      } else {
        a.slot_row[i] = -1;  // counts do not match the ids: drop rather than write out of bounds
      }
    }
    base += total;
  }
  for (int64_t r = seg_real_end + threadIdx.x; r < seg_end && r < a.rows; r += blockDim.x)
    if (r >= seg) a.row_token[r] = -1;
}

__global__ void unrouted_kernel(MoeDispatchArgs a) {
  const int64_t n = a.tokens * a.top_k;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t id = a.topk_ids[i];
    if (id < 0 || id >= a.n_routed) a.slot_row[i] = -1;
  }
}

template <bool kVec>
__global__ void __launch_bounds__(256) copy_rows_kernel(MoeDispatchArgs a, int64_t esize) {
  const int64_t r = blockIdx.x;
  const int32_t t = a.row_token[r];
  const int64_t bytes = a.hidden * esize;
  char* dst = static_cast<char*>(a.x_perm) + r * bytes;
  const char* src = t >= 0 && t < a.tokens ? static_cast<const char*>(a.x) + t * a.x_stride * esize : nullptr;
  if constexpr (kVec) {
    for (int64_t p = threadIdx.x; p < bytes / 16; p += blockDim.x)
      reinterpret_cast<uint4*>(dst)[p] = src ? __ldg(reinterpret_cast<const uint4*>(src) + p) : make_uint4(0, 0, 0, 0);
  } else {
    for (int64_t p = threadIdx.x; p < bytes / 2; p += blockDim.x)  // every dtype is a multiple of 2 bytes
      reinterpret_cast<uint16_t*>(dst)[p] = src ? reinterpret_cast<const uint16_t*>(src)[p] : 0;
  }
}

// ---- combine -----------------------------------------------------------------------------------

template <typename T>
struct alignas(16) Pack {
  static constexpr int N = 16 / sizeof(T);
  T v[N];
};

template <typename T, bool kVec>
__global__ void __launch_bounds__(256) combine_kernel(MoeCombineArgs a) {
  const int64_t t = blockIdx.x, k = a.top_k, H = a.hidden;
  const int32_t* ids = a.topk_ids + t * k;
  const int32_t* slots = a.slot_row + t * k;
  const float* w = a.topk_weights + t * k;
  const T* eo = static_cast<const T*>(a.expert_out);
  const T* xrow = static_cast<const T*>(a.x) + t * a.x_stride;
  T* y = static_cast<T*>(a.y) + t * H;
  auto source = [&](int64_t j) -> const T* {
    const int32_t id = ids[j];
    if (id < 0) return nullptr;
    if (id >= a.n_routed) return xrow;
    const int32_t s = slots[j];
    return s >= 0 && s < a.rows ? eo + s * a.expert_out_stride : nullptr;
  };
  if constexpr (kVec) {
    using P = Pack<T>;
    for (int64_t p = threadIdx.x; p < H / P::N; p += blockDim.x) {
      float acc[P::N];
#pragma unroll
      for (int q = 0; q < P::N; ++q) acc[q] = 0.f;
      for (int64_t j = 0; j < k; ++j) {
        const T* src = source(j);
        if (!src) continue;
        const float wj = w[j];
        P v;
        *reinterpret_cast<uint4*>(&v) = __ldg(reinterpret_cast<const uint4*>(src) + p);
#pragma unroll
        for (int q = 0; q < P::N; ++q) acc[q] = fmaf(wj, to_f(v.v[q]), acc[q]);
      }
      P out;
#pragma unroll
      for (int q = 0; q < P::N; ++q) out.v[q] = from_f<T>(acc[q]);
      reinterpret_cast<P*>(y)[p] = out;
    }
  } else {
    for (int64_t h = threadIdx.x; h < H; h += blockDim.x) {
      float acc = 0.f;
      for (int64_t j = 0; j < k; ++j) {
        const T* src = source(j);
        if (src) acc = fmaf(w[j], to_f(src[h]), acc);
      }
      y[h] = from_f<T>(acc);
    }
  }
}

bool aligned16(const void* p, int64_t stride_elems, int64_t esize) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0 && (stride_elems * esize) % 16 == 0;
}

template <typename T>
void launch_combine(const MoeCombineArgs& a, cudaStream_t s) {
  const int64_t N = 16 / sizeof(T);
  const bool vec = a.hidden % N == 0 && aligned16(a.y, a.hidden, sizeof(T)) &&
                   aligned16(a.x, a.x_stride, sizeof(T)) &&
                   aligned16(a.expert_out, a.expert_out_stride, sizeof(T));
  const int64_t work = vec ? a.hidden / N : a.hidden;
  const int threads = static_cast<int>(std::clamp<int64_t>((work + 31) / 32 * 32, 32, 256));
  if (vec) combine_kernel<T, true><<<static_cast<unsigned>(a.tokens), threads, 0, s>>>(a);
  else combine_kernel<T, false><<<static_cast<unsigned>(a.tokens), threads, 0, s>>>(a);
  check_launch("moe_combine");
}

}  // namespace

void moe_route(const MoeRouteArgs& a, Stream stream) {
  DeviceGuard guard(a.device.index);
  auto s = static_cast<cudaStream_t>(stream);
  switch (a.dtype) {
    case DType::BFloat16: return route_dtype<__nv_bfloat16>(a, s);
    case DType::Float16: return route_dtype<__half>(a, s);
    default: return route_dtype<float>(a, s);
  }
}

void moe_dispatch_layout(const MoeLayoutArgs& a, Stream stream) {
  DeviceGuard guard(a.device.index);
  auto s = static_cast<cudaStream_t>(stream);
  if (a.n_routed > 0) check_cuda(cudaMemsetAsync(a.counts, 0, a.n_routed * sizeof(int32_t), s), "moe_dispatch_layout: cudaMemsetAsync");
  if (a.entries > 0 && a.n_routed > 0) {
    const int blocks = static_cast<int>(std::min<int64_t>((a.entries + 255) / 256, 1024));
    if (a.n_routed <= 8192)
      count_kernel<true><<<blocks, 256, a.n_routed * sizeof(int), s>>>(a);
    else
      count_kernel<false><<<blocks, 256, 0, s>>>(a);
    check_launch("moe_dispatch_layout");
  }
  offsets_kernel<<<1, 1024, 0, s>>>(a);
  check_launch("moe_dispatch_layout");
}

void moe_dispatch(const MoeDispatchArgs& a, Stream stream) {
  DeviceGuard guard(a.device.index);
  auto s = static_cast<cudaStream_t>(stream);
  const int64_t n = a.tokens * a.top_k;
  if (n > 0) {
    unrouted_kernel<<<static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 1024)), 256, 0, s>>>(a);
    check_launch("moe_dispatch");
  }
  if (a.n_routed > 0) {
    rank_kernel<<<static_cast<unsigned>(a.n_routed), kRankThreads, 0, s>>>(a);
    check_launch("moe_dispatch");
  }
  if (a.rows > 0 && a.hidden > 0) {
    const int64_t esize = dtype_size(a.dtype), bytes = a.hidden * esize;
    const bool vec = bytes % 16 == 0 && aligned16(a.x, a.x_stride, esize) &&
                     reinterpret_cast<uintptr_t>(a.x_perm) % 16 == 0;
    const int threads = static_cast<int>(std::clamp<int64_t>((bytes / (vec ? 16 : 2) + 31) / 32 * 32, 32, 256));
    if (vec) copy_rows_kernel<true><<<static_cast<unsigned>(a.rows), threads, 0, s>>>(a, esize);
    else copy_rows_kernel<false><<<static_cast<unsigned>(a.rows), threads, 0, s>>>(a, esize);
    check_launch("moe_dispatch");
  }
}

void moe_combine(const MoeCombineArgs& a, Stream stream) {
  DeviceGuard guard(a.device.index);
  auto s = static_cast<cudaStream_t>(stream);
  switch (a.dtype) {
    case DType::BFloat16: return launch_combine<__nv_bfloat16>(a, s);
    case DType::Float16: return launch_combine<__half>(a, s);
    default: return launch_combine<float>(a, s);
  }
}

}  // namespace longcat::cuda
