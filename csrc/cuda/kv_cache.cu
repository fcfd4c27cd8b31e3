// Paged latent KV cache and RoPE CUDA kernels (sm_90a); semantics in
// csrc/include/longcat/mla.h.
//
// All three are one warp per row. RoPE rotates a row into a per-warp shared buffer before any
// write, so out may alias x (in place, including half_output where pair i moves to i and i+D/2).
// CUDA kernels cannot throw on bad ids found on the device: mla_append_kv drops a token whose
// seq id, page index or page id is out of range (the CPU backend raises), and mla_gather writes
// zeros for a row whose page is out of range or beyond cache_seqlens.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <string>

#include "core/kv_cache_args.h"
#include "cuda/mla_common.cuh"
#include "cuda/dtype.cuh"

namespace longcat::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kRowElems = static_cast<int>(kMlaDimQK);  // latent + rope values per cached token

// ---- RoPE ---------------------------------------------------------------------------------------

template <typename T>
__global__ void __launch_bounds__(kWarps * 32) rope_kernel(RopeArgs a) {
  extern __shared__ float rope_buf[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  if (row >= a.tokens * a.middle) return;
  const int64_t t = row / a.middle, m = row % a.middle, D = a.dim, half = D / 2;
  float* buf = rope_buf + warp * D;
  const T* x = static_cast<const T*>(a.x) + t * a.x_stride_t + m * a.x_stride_m;
  const float pos = a.positions_int64 ? static_cast<float>(static_cast<const int64_t*>(a.positions)[t])
                                      : static_cast<float>(static_cast<const int32_t*>(a.positions)[t]);
  for (int64_t i = lane; i < half; i += 32) {
    // theta in fp32 from the caller's table; accurate sincosf, as the angle reaches ~1e5 rad
    // where the fast intrinsics lose all precision.
    const float th = pos * a.inv_freq[i];
    float s, c;
    sincosf(th, &s, &c);
    const float xa = to_f(x[2 * i]), xb = to_f(x[2 * i + 1]);
    // Rounded products, then the sum (no fused multiply-add), as torch computes it.
    const float ra = __fsub_rn(__fmul_rn(xa, c), __fmul_rn(xb, s));
    const float rb = __fadd_rn(__fmul_rn(xb, c), __fmul_rn(xa, s));
    if (a.half_output) {
      buf[i] = ra;
      buf[i + half] = rb;
    } else {
      buf[2 * i] = ra;
      buf[2 * i + 1] = rb;
    }
  }
  __syncwarp();  // the whole row is read before any of it is overwritten (in place)
  T* out = static_cast<T*>(a.out) + row * D;
  for (int64_t d = lane; d < D; d += 32) out[d] = from_f<T>(buf[d]);
}

template <typename T>
void launch_rope(const RopeArgs& a, cudaStream_t s) {
  const int64_t rows = a.tokens * a.middle;
  const int64_t blocks = (rows + kWarps - 1) / kWarps;
  const size_t smem = static_cast<size_t>(kWarps) * a.dim * sizeof(float);
  if (smem > 48 * 1024)  // D > 3072: opt in to more dynamic shared memory
    check_cuda(cudaFuncSetAttribute(rope_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
               "rope_interleaved: cudaFuncSetAttribute");
  rope_kernel<T><<<static_cast<unsigned>(blocks), kWarps * 32, smem, s>>>(a);
}

// ---- Cache append / gather (pure copies: only the element size matters) -----------------------

template <typename E>
__global__ void __launch_bounds__(kWarps * 32) append_kernel(AppendKvArgs a) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  if (t >= a.tokens) return;
  const int64_t seq = a.seq_ids[t], pos = a.positions[t];
  if (seq < 0 || seq >= a.batch || pos < 0) return;
  const int64_t pi = pos / a.page_size;
  if (pi >= a.max_pages) return;
  const int64_t page = a.block_table[seq * a.block_table_stride + pi];
  if (page < 0 || page >= a.num_pages) return;
  E* dst = static_cast<E*>(a.kv_cache) + (page * a.page_size + pos % a.page_size) * kRowElems;
  const E* lat = static_cast<const E*>(a.latent) + t * a.latent_stride;
  const E* rope = static_cast<const E*>(a.rope_k) + t * a.rope_stride;
  for (int d = lane; d < kMlaDimV; d += 32) dst[d] = lat[d];
  for (int d = lane; d < kMlaDimRope; d += 32) dst[kMlaDimV + d] = rope[d];
}

__global__ void __launch_bounds__(kWarps * 32) gather_kernel(GatherKvArgs a, int elem_bytes) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  if (r >= a.total) return;
  // Sequence of row r: the last b with cu_seqlens[b] <= r (empty sequences share a start).
  int64_t lo = 0, hi = a.batch - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (a.cu_seqlens[mid] <= r) lo = mid;
    else hi = mid - 1;
  }
  const int64_t b = lo, p = r - a.cu_seqlens[b];
  const int64_t pi = p / a.page_size;
  int64_t page = -1;
  if (p >= 0 && p < a.cache_seqlens[b] && pi < a.max_pages) page = a.block_table[b * a.block_table_stride + pi];
  // A row is 576 elements of 2 or 4 bytes: 72 or 144 16-byte packs (torch allocations are
  // 16-byte aligned and rows are contiguous).
  const int packs = kRowElems * elem_bytes / 16;
  uint4* dst = reinterpret_cast<uint4*>(static_cast<char*>(a.out) + r * kRowElems * elem_bytes);
  if (page < 0 || page >= a.num_pages) {
    for (int i = lane; i < packs; i += 32) dst[i] = make_uint4(0, 0, 0, 0);
    return;
  }
  const uint4* src = reinterpret_cast<const uint4*>(static_cast<const char*>(a.kv_cache) +
                                                    (page * a.page_size + p % a.page_size) * kRowElems * elem_bytes);
  for (int i = lane; i < packs; i += 32) dst[i] = src[i];
}

int elem_bytes(DType t) { return t == DType::Float32 ? 4 : 2; }

}  // namespace

void rope_interleaved(const RopeArgs& a, Stream stream) {
  const int64_t rows = a.tokens * a.middle;
  if (rows == 0 || a.dim == 0) return;
  if ((rows + kWarps - 1) / kWarps > 0x7fffffff)
    throw Error(ErrorKind::Value, "rope_interleaved: more than 2^33 rows in one call on CUDA");
  const size_t smem = static_cast<size_t>(kWarps) * a.dim * sizeof(float);
  if (smem > 96 * 1024)
    throw Error(ErrorKind::Value, "rope_interleaved: x.shape[-1] must be at most 6144 on CUDA, got " +
                                      std::to_string(a.dim));
  DeviceGuard guard(a.device.index);
  auto s = static_cast<cudaStream_t>(stream);
  switch (a.dtype) {
    case DType::BFloat16: launch_rope<__nv_bfloat16>(a, s); break;
    case DType::Float16: launch_rope<__half>(a, s); break;
    default: launch_rope<float>(a, s); break;
  }
  check_launch("rope_interleaved");
}

void mla_append_kv(const AppendKvArgs& a, Stream stream) {
  if (a.tokens == 0) return;
  DeviceGuard guard(a.device.index);
  const int64_t blocks = (a.tokens + kWarps - 1) / kWarps;
  auto s = static_cast<cudaStream_t>(stream);
  if (elem_bytes(a.dtype) == 4) append_kernel<float><<<static_cast<unsigned>(blocks), kWarps * 32, 0, s>>>(a);
  else append_kernel<uint16_t><<<static_cast<unsigned>(blocks), kWarps * 32, 0, s>>>(a);
  check_launch("mla_append_kv");
}

void mla_gather(const GatherKvArgs& a, Stream stream) {
  if (a.total == 0) return;
  if (a.batch <= 0)
    throw Error(ErrorKind::Value, "mla_gather: cu_seqlens ends at " + std::to_string(a.total) +
                                      " with an empty batch");
  if (reinterpret_cast<uintptr_t>(a.out) % 16 != 0 || reinterpret_cast<uintptr_t>(a.kv_cache) % 16 != 0)
    throw Error(ErrorKind::Value, "mla_gather: out and kv_cache must be 16-byte aligned on CUDA");
  if ((a.total + kWarps - 1) / kWarps > 0x7fffffff)
    throw Error(ErrorKind::Value, "mla_gather: more than 2^33 rows in one call on CUDA");
  DeviceGuard guard(a.device.index);
  const int64_t blocks = (a.total + kWarps - 1) / kWarps;
  gather_kernel<<<static_cast<unsigned>(blocks), kWarps * 32, 0, static_cast<cudaStream_t>(stream)>>>(
      a, elem_bytes(a.dtype));
  check_launch("mla_gather");
}

}  // namespace longcat::cuda
