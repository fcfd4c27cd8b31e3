// MLA decode CUDA kernels (sm_90a): split-KV planner, split-KV flash decoding over the paged
// latent cache, and the combine over splits. Semantics in csrc/include/longcat/mla.h; the
// plan is the one of the host helpers in csrc/core/mla_args.h.
//
// Planner: one block; a block reduction of sum_b (keys_b + 64) gives the chunk (at least
// kDecodeMinChunkCuda keys), a block scan of the per-sequence split counts gives metadata[:, 0].
// num_workers is FlashMLA's num_sm_parts: SMs / (64-row tiles per sequence), chosen by the caller.
// Decode: one CTA (16 warps) per (split, tile of 64 query rows), where the rows of a sequence
// are its s_q * h_q (query, head) pairs flattened as i * h_q + h (all rows share the one latent
// KV head, so one K tile serves 64 of them). The CTA walks its split's visible keys in tiles of
// 32 cached tokens: cp.async brings a tile (576 values per token, from its page) into shared
// memory while the previous one is used, and the same tile serves QK^T (all 576 dims) and PV
// (V = the first 512 dims). Tensor cores: mma.sync m16n8k16 with fp32 accumulation. QK^T:
// warp (row slice, dim quarter) computes 16 rows x 32 keys over 144 dims, so Q and K each cross
// shared memory once per use; the four partial sums meet in the online softmax (shared memory,
// exp2 domain, 8 threads per row). PV: each warp owns all 64 rows x 32 output dims in registers,
// so V crosses shared memory once. Keys a row must not see (causal among the s_q new tokens,
// SSA window) are masked per row; a tile's slots past the split's end, or whose page index /
// page id is out of range, are zero-filled and never read, so pages beyond a sequence (NaN,
// garbage) cannot leak in. Bad ids cannot throw from a kernel: they are
// dropped (those keys count as invisible).
// Each split writes its normalised fp32 partial output and lse to the workspace; the combine
// kernel merges a sequence's splits (out 0, lse +inf when no key was visible).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include <climits>
#include <cmath>
#include <string>

#include "core/mla_args.h"
#include "cuda/mla_common.cuh"
#include "cuda/dtype.cuh"
#include "cuda/nvtx.cuh"

namespace longcat::cuda {
namespace {

using namespace attn;

// ---- planner ----------------------------------------------------------------------------------

constexpr int kPlanThreads = 256;

__device__ __forceinline__ int64_t seq_keys(const DecodeMetadataArgs& a, int64_t b) {
  return num_keys(decode_visible_keys(a.window, a.cache_seqlens[b], a.s_q, a.causal));
}

__global__ void __launch_bounds__(kPlanThreads) plan_kernel(DecodeMetadataArgs a) {
  using Reduce = cub::BlockReduce<long long, kPlanThreads>;
  using Scan = cub::BlockScan<long long, kPlanThreads>;
  __shared__ union {
    typename Reduce::TempStorage reduce;
    typename Scan::TempStorage scan;
  } tmp;
  __shared__ long long s_total, s_carry;
  long long cost = 0;
  for (int64_t b = threadIdx.x; b < a.batch; b += kPlanThreads) cost += seq_keys(a, b) + 64;
  const long long total = Reduce(tmp.reduce).Sum(cost);
  if (threadIdx.x == 0) {
    s_total = total;
    s_carry = 0;
  }
  __syncthreads();
  const int64_t chunk = decode_split_chunk(s_total, a.num_workers, kDecodeMinChunkCuda);
  for (int64_t b0 = 0; b0 < a.batch; b0 += kPlanThreads) {
    const int64_t b = b0 + threadIdx.x;
    const long long splits = b < a.batch ? decode_num_splits(seq_keys(a, b), chunk) : 0;
    long long excl, agg;
    Scan(tmp.scan).ExclusiveSum(splits, excl, agg);
    const long long carry = s_carry;
    if (b < a.batch) {
      a.metadata[2 * b] = static_cast<int32_t>(carry + excl);
      a.metadata[2 * b + 1] = static_cast<int32_t>(min(chunk, static_cast<int64_t>(INT_MAX / 64 * 64)));
    }
    __syncthreads();  // everyone read s_carry (and the scan storage is free) before the update
    if (threadIdx.x == 0) s_carry = carry + agg;
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    a.metadata[2 * a.batch] = static_cast<int32_t>(s_carry);
    a.metadata[2 * a.batch + 1] = 0;  // as the CPU planner
  }
}

// ---- split-KV decode --------------------------------------------------------------------------

constexpr int kDqk = static_cast<int>(kMlaDimQK), kDv = static_cast<int>(kMlaDimV);
constexpr int kRows = 64;        // query rows per CTA
constexpr int kKeys = 32;        // cached tokens per tile
constexpr int kWarps = 16, kThreads = kWarps * 32;
constexpr int kLd = kDqk + 8;    // padded row (1168 bytes): ldmatrix rows hit distinct banks
constexpr int kLdS = kKeys + 4;  // fp32 scores
constexpr int kLdP = kKeys + 8;  // probabilities in T
constexpr int kChunks = kDqk * 2 / 16;  // 16-byte pieces of a cached token

template <typename T>
struct DecodeSmem {
  T q[kRows][kLd];
  T k[2][kKeys][kLd];
  float s[4][kRows][kLdS];  // QK^T partial sums over four quarters of the 576 dims
  T p[kRows][kLdP];
  float m[kRows], l[kRows], alpha[kRows];
  int sink_end[kRows], local_begin[kRows], end[kRows];
  int nan[kRows];     // a visible score of the row was NaN (NaN query or key): out and lse NaN
  int key[2][kKeys];  // absolute key index of each tile slot, -1 = empty
};

template <typename T>
__global__ void __launch_bounds__(kThreads, 1) decode_kernel(const __grid_constant__ MlaDecodeArgs a, bool q_vec) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  auto& sm = *reinterpret_cast<DecodeSmem<T>*>(smem_raw);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, c4 = lane % 4;
  const int split = blockIdx.x;
  const int64_t M = a.s_q * a.h_q, row0 = static_cast<int64_t>(blockIdx.y) * kRows;

  // The split's sequence: the last b whose first split is <= split.
  const int total_splits = a.metadata[2 * a.batch];
  if (split >= total_splits) return;
  int64_t lo = 0, hi = a.batch - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (a.metadata[2 * mid] <= split) lo = mid;
    else hi = mid - 1;
  }
  const int64_t b = lo;
  const int64_t L = a.cache_seqlens[b];
  const KeyRanges U = decode_visible_keys(a.window, L, a.s_q, a.causal);
  const int64_t nk = num_keys(U);
  int64_t chunk = a.metadata[2 * b + 1];
  if (chunk <= 0) chunk = nk > 0 ? nk : 1;
  const int64_t v0 = (split - a.metadata[2 * b]) * chunk;
  const int64_t v1 = min(v0 + chunk, nk);
  const int ntiles = v1 > v0 ? static_cast<int>((v1 - v0 + kKeys - 1) / kKeys) : 0;

  // Per-row state and visible ranges (rows past M see nothing).
  if (tid < kRows) {
    sm.m[tid] = -INFINITY;
    sm.l[tid] = 0.f;
    sm.nan[tid] = 0;
    const int64_t R = row0 + tid;
    KeyRanges r{0, 0, 0};
    if (R < M) {
      const int64_t i = R / a.h_q;
      r = visible_keys(a.window, a.causal ? L - a.s_q + i : L - 1);
      if (r.end > L) r.end = L;
    }
    sm.sink_end[tid] = static_cast<int>(r.sink_end);
    sm.local_begin[tid] = static_cast<int>(r.local_begin);
    sm.end[tid] = static_cast<int>(r.end);
  }

  const T* q = static_cast<const T*>(a.q);
  const T* kv = static_cast<const T*>(a.kv_cache);
  const int32_t* table = a.block_table + b * a.block_table_stride;
  const int page_size = static_cast<int>(a.page_size);  // checked < 2^31 on the host
  auto q_row = [&](int64_t R) { return q + b * a.q_stride_b + (R / a.h_q) * a.q_stride_s + (R % a.h_q) * a.q_stride_h; };

  if (ntiles > 0) {
    if (q_vec) {
      for (int c = tid; c < kRows * kChunks; c += kThreads) {
        const int r = c / kChunks, part = c % kChunks;
        const int64_t R = row0 + r;
        cp_async16(&sm.q[r][part * 8], R < M ? q_row(R) + part * 8 : q, R < M);
      }
    } else {
      for (int c = tid; c < kRows * kDqk; c += kThreads) {
        const int r = c / kDqk, d = c % kDqk;
        const int64_t R = row0 + r;
        sm.q[r][d] = R < M ? q_row(R)[d] : from_f<T>(0.f);
      }
    }
  }

  // One tile of keys (visible indices v0 + t * kKeys ...) into buffer buf.
  auto load_tile = [&](int t, int buf) {
    const int64_t vt = v0 + static_cast<int64_t>(t) * kKeys;
    for (int c = tid; c < kKeys * kChunks; c += kThreads) {
      const int slot = c / kChunks, part = c % kChunks;
      const int64_t v = vt + slot;
      int j = -1;  // key positions are below 2^31 (cache_seqlens is int32)
      const T* src = kv;
      if (v < v1) {
        j = static_cast<int>(v < U.sink_end ? v : U.local_begin + (v - U.sink_end));
        const int pi = j / page_size;
        const int64_t page = pi < a.max_pages ? table[pi] : -1;
        if (page >= 0 && page < a.num_pages) src = kv + (page * a.page_size + j % page_size) * kDqk + part * 8;
        else j = -1;  // dropped: an id outside the table or the cache
      }
      cp_async16(&sm.k[buf][slot][part * 8], src, j >= 0);
      if (part == 0) sm.key[buf][slot] = j;
    }
  };

  if (ntiles > 0) load_tile(0, 0);
  cp_async_commit();

  const float scale_log2 = a.scale * kLog2e;
  const int mt = warp & 3, kq = warp >> 2;  // QK^T: 16 rows x all 32 keys x 144 of the dims
  const int dw = warp * 32;                 // PV: all 64 rows x 32 output dims
  float o[4][4][4];                         // [row slice][8-dim slice][C fragment]
#pragma unroll
  for (int x = 0; x < 4; ++x)
#pragma unroll
    for (int j = 0; j < 4; ++j) o[x][j][0] = o[x][j][1] = o[x][j][2] = o[x][j][3] = 0.f;

  for (int t = 0; t < ntiles; ++t) {
    const int buf = t & 1;
    cp_async_wait<0>();
    __syncthreads();  // tile t (and Q) landed for everyone; PV of tile t-1 is done with buf ^ 1
    if (t + 1 < ntiles) load_tile(t + 1, buf ^ 1);
    cp_async_commit();

    // Partial S = Q K^T over dims kq*144.. for rows mt*16.. and the tile's 32 keys: Q and K
    // each cross shared memory once per row slice / dim quarter.
    {
      float acc[4][4];
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
      const T* qa = &sm.q[mt * 16 + (lane & 7) + ((lane >> 3) & 1) * 8][kq * 144 + (lane >> 4) * 8];
      const T* kb = &sm.k[buf][(lane & 7) + (lane >> 4) * 8][kq * 144 + ((lane >> 3) & 1) * 8];
#pragma unroll
      for (int ks = 0; ks < 144 / 16; ++ks) {
        uint32_t af[4];
        ldmatrix_x4(af, qa + ks * 16);
#pragma unroll
        for (int np = 0; np < 2; ++np) {
          uint32_t bf[4];
          ldmatrix_x4(bf, kb + np * 16 * kLd + ks * 16);
          Mma<T>::run(acc[2 * np], af, bf[0], bf[1]);
          Mma<T>::run(acc[2 * np + 1], af, bf[2], bf[3]);
        }
      }
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int h = 0; h < 2; ++h)
          *reinterpret_cast<float2*>(&sm.s[kq][mt * 16 + g + h * 8][j * 8 + 2 * c4]) =
              make_float2(acc[j][2 * h], acc[j][2 * h + 1]);
    }
    __syncthreads();

    // Sum the partials, mask per row, online softmax: 8 threads per row, 4 keys each.
    {
      const int r = tid / 8, sub = tid % 8;
      float sv[4];
      {
        const float4 p0 = *reinterpret_cast<const float4*>(&sm.s[0][r][sub * 4]);
        const float4 p1 = *reinterpret_cast<const float4*>(&sm.s[1][r][sub * 4]);
        const float4 p2 = *reinterpret_cast<const float4*>(&sm.s[2][r][sub * 4]);
        const float4 p3 = *reinterpret_cast<const float4*>(&sm.s[3][r][sub * 4]);
        sv[0] = (p0.x + p1.x) + (p2.x + p3.x);
        sv[1] = (p0.y + p1.y) + (p2.y + p3.y);
        sv[2] = (p0.z + p1.z) + (p2.z + p3.z);
        sv[3] = (p0.w + p1.w) + (p2.w + p3.w);
      }
      const int se = sm.sink_end[r], lb = sm.local_begin[r], e = sm.end[r];
      float mx = -INFINITY;
#pragma unroll
      for (int x = 0; x < 4; ++x) {
        const int j = sm.key[buf][sub * 4 + x];
        const bool vis = j >= 0 && (j < se || (j >= lb && j < e));
        sv[x] = vis ? sv[x] * scale_log2 : -INFINITY;
        if (isnan(sv[x])) sm.nan[r] = 1;  // fmaxf / exp2f below would drop it
        mx = fmaxf(mx, sv[x]);
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 4));
      const float m_old = sm.m[r];
      const float m_new = fmaxf(m_old, mx);
      const float m_use = m_new == -INFINITY ? 0.f : m_new;  // no key yet: every p is exp2(-inf) = 0
      const float p0 = exp2f(sv[0] - m_use), p1 = exp2f(sv[1] - m_use), p2 = exp2f(sv[2] - m_use),
                  p3 = exp2f(sv[3] - m_use);
      float sum = (p0 + p1) + (p2 + p3);
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      sum += __shfl_xor_sync(0xffffffffu, sum, 4);
      *reinterpret_cast<uint2*>(&sm.p[r][sub * 4]) = make_uint2(pack2<T>(p0, p1), pack2<T>(p2, p3));
      const float alpha = exp2f(m_old - m_use);
      __syncwarp();  // all 8 threads read m[r] before it changes
      if (sub == 0) {
        sm.m[r] = m_new;
        sm.l[r] = sm.l[r] * alpha + sum;
        sm.alpha[r] = alpha;
      }
    }
    __syncthreads();

    // O = alpha * O + P V for all rows and dims dw..dw+31: V crosses shared memory once.
    {
#pragma unroll
      for (int x = 0; x < 4; ++x) {
        const float al0 = sm.alpha[x * 16 + g], al1 = sm.alpha[x * 16 + g + 8];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          o[x][j][0] *= al0;
          o[x][j][1] *= al0;
          o[x][j][2] *= al1;
          o[x][j][3] *= al1;
        }
      }
#pragma unroll
      for (int ks = 0; ks < kKeys / 16; ++ks) {
        uint32_t va[4], vb[4];  // B fragments of dims dw..dw+15 and dw+16..dw+31
        const T* vp = &sm.k[buf][ks * 16 + (lane & 7) + ((lane >> 3) & 1) * 8][dw + (lane >> 4) * 8];
        ldmatrix_x4_trans(va, vp);
        ldmatrix_x4_trans(vb, vp + 16);
#pragma unroll
        for (int x = 0; x < 4; ++x) {
          uint32_t pa[4];
          ldmatrix_x4(pa, &sm.p[x * 16 + (lane & 7) + ((lane >> 3) & 1) * 8][ks * 16 + (lane >> 4) * 8]);
          Mma<T>::run(o[x][0], pa, va[0], va[1]);
          Mma<T>::run(o[x][1], pa, va[2], va[3]);
          Mma<T>::run(o[x][2], pa, vb[0], vb[1]);
          Mma<T>::run(o[x][3], pa, vb[2], vb[3]);
        }
      }
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // row state final (also when the split had no tile)

  // Normalised partial output and lse of this split.
#pragma unroll
  for (int x = 0; x < 4; ++x) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = x * 16 + g + h * 8;
      const int64_t R = row0 + r;
      if (R >= M) continue;
      const float l = sm.l[r];
      const bool nan = sm.nan[r] != 0;
      const float inv = nan ? __int_as_float(0x7fc00000) : l > 0.f ? 1.f / l : 0.f;
      float* dst = a.workspace_out + (static_cast<int64_t>(split) * M + R) * kDv + dw + 2 * c4;
#pragma unroll
      for (int j = 0; j < 4; ++j)
        *reinterpret_cast<float2*>(dst + j * 8) = make_float2(o[x][j][2 * h] * inv, o[x][j][2 * h + 1] * inv);
      if (warp == 0 && c4 == 0)
        a.workspace_lse[static_cast<int64_t>(split) * M + R] =
            nan ? __int_as_float(0x7fc00000) : l > 0.f ? (sm.m[r] + log2f(l)) * kLn2 : -INFINITY;
    }
  }
}

// ---- combine ----------------------------------------------------------------------------------

constexpr int kCombineThreads = kDv / 4;

template <typename T>
__global__ void __launch_bounds__(kCombineThreads) combine_kernel(const __grid_constant__ MlaDecodeArgs a) {
  const int64_t M = a.s_q * a.h_q;
  const int64_t row = blockIdx.x, b = row / M, R = row % M;
  int64_t s0 = a.metadata[2 * b], s1 = a.metadata[2 * b + 2];
  // A plan with more splits than the workspace holds (made for more workers than the launch)
  // would lose keys: such rows come out NaN, never a silently wrong softmax. (Reading a device
  // plan costs the host a sync: Python's mla_decode reads and refuses a plan it did not make;
  // from the C++ API or inside a CUDA graph capture this is the guard. The CPU refuses it.)
  bool nan = s1 > a.max_splits || s0 < 0 || s0 > s1;
  s1 = min(s1, a.max_splits);
  s0 = s0 < 0 ? 0 : min(s0, s1);
  float mx = -INFINITY;
  for (int64_t s = s0; s < s1; ++s) {
    const float l = a.workspace_lse[s * M + R];
    nan |= isnan(l);  // a split saw a NaN score
    mx = fmaxf(mx, l);
  }
  const int d = threadIdx.x * 4;
  T* out = static_cast<T*>(a.out) + row * kDv + d;
  const int64_t i = R / a.h_q, h = R % a.h_q;
  float* lse = a.lse + (b * a.h_q + h) * a.s_q + i;
  if (nan) {
    const float qnan = __int_as_float(0x7fc00000);
#pragma unroll
    for (int x = 0; x < 4; ++x) out[x] = from_f<T>(qnan);
    if (threadIdx.x == 0) *lse = qnan;
    return;
  }
  if (mx == -INFINITY) {  // no visible key in any split
#pragma unroll
    for (int x = 0; x < 4; ++x) out[x] = from_f<T>(0.f);
    if (threadIdx.x == 0) *lse = INFINITY;
    return;
  }
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  float sum = 0.f;
  for (int64_t s = s0; s < s1; ++s) {
    const float w = expf(a.workspace_lse[s * M + R] - mx);
    sum += w;
    const float4 v = *reinterpret_cast<const float4*>(a.workspace_out + (s * M + R) * kDv + d);
    acc.x += w * v.x;
    acc.y += w * v.y;
    acc.z += w * v.z;
    acc.w += w * v.w;
  }
  const float inv = 1.f / sum;
  out[0] = from_f<T>(acc.x * inv);
  out[1] = from_f<T>(acc.y * inv);
  out[2] = from_f<T>(acc.z * inv);
  out[3] = from_f<T>(acc.w * inv);
  if (threadIdx.x == 0) *lse = mx + logf(sum);
}

bool q_vectorizable(const MlaDecodeArgs& a) {
  // cp.async needs every row start 16-byte aligned: the base and all strides in 8-element units.
  return reinterpret_cast<uintptr_t>(a.q) % 16 == 0 && a.q_stride_b % 8 == 0 && a.q_stride_s % 8 == 0 &&
         a.q_stride_h % 8 == 0;
}

template <typename T>
void launch_decode(const MlaDecodeArgs& a, cudaStream_t s) {
  const int64_t M = a.s_q * a.h_q;
  const size_t smem = sizeof(DecodeSmem<T>);
  check_cuda(cudaFuncSetAttribute(decode_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
             "mla_decode: cudaFuncSetAttribute");
  dim3 grid(static_cast<unsigned>(a.max_splits), static_cast<unsigned>((M + kRows - 1) / kRows));
  decode_kernel<T><<<grid, kThreads, smem, s>>>(a, q_vectorizable(a));
  check_launch("mla_decode");
  combine_kernel<T><<<static_cast<unsigned>(a.batch * M), kCombineThreads, 0, s>>>(a);
  check_launch("mla_decode (combine)");
}

}  // namespace

void mla_decode_metadata(const DecodeMetadataArgs& a, Stream stream) {
  NvtxRange nvtx("longcat::mla_decode_metadata");
  if (a.num_workers < 1)
    throw Error(ErrorKind::Value, "mla_decode_metadata: num_workers must be >= 1, got " + std::to_string(a.num_workers));
  DeviceGuard guard(a.device.index);
  plan_kernel<<<1, kPlanThreads, 0, static_cast<cudaStream_t>(stream)>>>(a);
  check_launch("mla_decode_metadata");
}

void mla_decode(const MlaDecodeArgs& a, Stream stream) {
  NvtxRange nvtx("longcat::mla_decode");
  if (a.d_qk != kDqk || a.dv != kDv)
    throw Error(ErrorKind::Value, "mla_decode: the CUDA kernel supports q.shape[-1] = 576 and head_dim_v = 512, got " +
                                      std::to_string(a.d_qk) + " and " + std::to_string(a.dv));
  if (a.dtype != DType::BFloat16 && a.dtype != DType::Float16)
    throw Error(ErrorKind::Type, "mla_decode: CUDA tensors must be bfloat16 or float16");
  if (a.page_size < 1 || a.page_size > 0x7fffffff)
    throw Error(ErrorKind::Value, "mla_decode: page_size must be in [1, 2^31), got " + std::to_string(a.page_size));
  if (reinterpret_cast<uintptr_t>(a.kv_cache) % 16 != 0 || reinterpret_cast<uintptr_t>(a.workspace_out) % 16 != 0)
    throw Error(ErrorKind::Value, "mla_decode: kv_cache and workspace must be 16-byte aligned on CUDA");
  const int64_t M = a.s_q * a.h_q;
  if (a.batch == 0 || M == 0) return;
  if (a.max_splits > 0x7fffffff || (M + kRows - 1) / kRows > 65535 || a.batch * M > 0x7fffffff)
    throw Error(ErrorKind::Value, "mla_decode: too many splits, query rows or sequences for one CUDA launch (batch " +
                                      std::to_string(a.batch) + ", s_q * h_q " + std::to_string(M) + ")");
  DeviceGuard guard(a.device.index);
  auto s = static_cast<cudaStream_t>(stream);
  if (a.dtype == DType::BFloat16) launch_decode<__nv_bfloat16>(a, s);
  else launch_decode<__half>(a, s);
}

}  // namespace longcat::cuda
