// MLA prefill CUDA kernel (sm_90a): varlen flash attention, bottom-right causal, optional SSA
// window. Semantics in csrc/include/longcat/mla.h.
//
// One CTA of 4 warps per (head, sequence) walks that sequence's tiles of 64 queries, last first
// (grid-stride, so a max_seqlen_q that is too small costs time, never rows). Each warp owns 16
// query rows: S = Q K^T in registers (mma.sync m16n8k16, fp32 accumulation), online softmax in
// the exp2 domain with quad shuffles, P converted in registers into the A operand of P V, O in
// registers (FlashAttention-2 structure). K and V tiles are double-buffered in shared memory
// with cp.async.
// Only key tiles some row of the query tile can see are visited: [0, sink) and the local window
// of the tile's rows (causal: up to the last row's position); rows mask per element only on the
// tiles that straddle their range. Head dims are compile-time maxima padded with zeros:
// 192/128 (LongCat MLA), 64/64, and 128/128, 256/256 for other multiples of 8.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "core/mla_args.h"
#include "cuda/mla_common.cuh"
#include "cuda/dtype.cuh"

namespace longcat::cuda {
namespace {

using namespace attn;

constexpr int kRows = 64, kWarps = 4, kThreads = kWarps * 32;

template <typename T, int kDQ, int kDV, int kN>
struct PrefillSmem {
  static constexpr int kLdQ = kDQ + 8, kLdV = kDV + 8;  // +16 bytes: conflict-free ldmatrix rows
  T q[kRows][kLdQ];
  T k[2][kN][kLdQ];
  T v[2][kN][kLdV];
};

template <typename T, int kDQ, int kDV, int kN>
__global__ void __launch_bounds__(kThreads, 1) prefill_kernel(const __grid_constant__ MlaPrefillArgs a, bool vec) {
  static_assert(kDQ % 16 == 0 && kDV % 16 == 0 && kN % 16 == 0, "tile shapes");
  using Smem = PrefillSmem<T, kDQ, kDV, kN>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  auto& sm = *reinterpret_cast<Smem*>(smem_raw);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, c4 = lane % 4;
  const int64_t h = blockIdx.y, b = blockIdx.z, kh = h / (a.h / a.h_k);
  const int64_t q_start = a.cu_seqlens_q[b], k_start = a.cu_seqlens_k[b];
  const int64_t len_q = a.cu_seqlens_q[b + 1] - q_start, len_k = a.cu_seqlens_k[b + 1] - k_start;
  const T* q = static_cast<const T*>(a.q) + q_start * a.q_stride_t + h * a.q_stride_h;
  const T* k = static_cast<const T*>(a.k) + k_start * a.k_stride_t + kh * a.k_stride_h;
  const T* v = static_cast<const T*>(a.v) + k_start * a.v_stride_t + kh * a.v_stride_h;
  const float scale_log2 = a.scale * kLog2e;
  // Absolute position of query i (bottom-right aligned; non-causal: the window sits at the end).
  auto pos = [&](int64_t i) { return a.causal ? i + len_k - len_q : len_k - 1; };

  // rows x cols of T from src (row stride ld) into dst, 16-byte pieces; rows >= nrows and
  // columns >= ncols are zero-filled.
  auto load = [&](T* dst, int ld_dst, const T* src, int64_t ld_src, int64_t nrows, int rows, int cols,
                  int64_t ncols) {
    const int pieces = cols / 8;
    for (int c = tid; c < rows * pieces; c += kThreads) {
      const int r = c / pieces, d = (c % pieces) * 8;
      const bool ok = r < nrows && d < ncols;
      T* o = dst + r * ld_dst + d;
      if (vec) {
        cp_async16(o, ok ? src + r * ld_src + d : src, ok);
      } else {
#pragma unroll
        for (int x = 0; x < 8; ++x) o[x] = ok ? src[r * ld_src + d + x] : from_f<T>(0.f);
      }
    }
  };

  // Last query tiles first: under causal masking they see the most keys, so the short ones
  // fill the tail of the schedule.
  const int64_t n_qtiles = (len_q + kRows - 1) / kRows;
  for (int64_t it = blockIdx.x; it < n_qtiles; it += gridDim.x) {
    const int64_t q0 = (n_qtiles - 1 - it) * kRows;
    const int64_t nq = min(static_cast<int64_t>(kRows), len_q - q0);
    // Key tiles some row of this query tile sees: [0, sink_hi) and [local_lo, end_hi).
    const KeyRanges first = visible_keys(a.window, pos(q0)), last = visible_keys(a.window, pos(q0 + nq - 1));
    const int64_t end_hi = min(last.end, len_k);
    const int64_t n_a = (last.sink_end + kN - 1) / kN;                      // sink tiles
    const int64_t b_lo = max(first.local_begin / kN, n_a);                  // local tiles
    const int64_t n_b = max(static_cast<int64_t>(0), (end_hi + kN - 1) / kN - b_lo);
    const int ntiles = static_cast<int>(end_hi > 0 ? n_a + n_b : 0);
    auto tile_key0 = [&](int t) { return (t < n_a ? t : b_lo + (t - n_a)) * kN; };

    // This thread's two rows (g, g + 8 of the warp's 16) and their visible ranges.
    int64_t se[2], lb[2], en[2];
#pragma unroll
    for (int x = 0; x < 2; ++x) {
      const int64_t i = q0 + warp * 16 + g + x * 8;
      KeyRanges r{0, 0, 0};
      if (i - q0 < nq) r = visible_keys(a.window, pos(i));
      se[x] = r.sink_end;
      lb[x] = r.local_begin;
      en[x] = min(r.end, len_k);
    }

    load(&sm.q[0][0], Smem::kLdQ, q + q0 * a.q_stride_t, a.q_stride_t, nq, kRows, kDQ, a.d_qk);
    auto load_kv = [&](int t, int buf) {
      const int64_t j0 = tile_key0(t);
      load(&sm.k[buf][0][0], Smem::kLdQ, k + j0 * a.k_stride_t, a.k_stride_t, len_k - j0, kN, kDQ, a.d_qk);
      load(&sm.v[buf][0][0], Smem::kLdV, v + j0 * a.v_stride_t, a.v_stride_t, len_k - j0, kN, kDV, a.dv);
    };
    if (ntiles > 0) load_kv(0, 0);
    cp_async_commit();

    float o[kDV / 8][4];
#pragma unroll
    for (int j = 0; j < kDV / 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
    int nan[2] = {0, 0};  // a visible score of the row was NaN (NaN query or key): out and lse NaN

    for (int t = 0; t < ntiles; ++t) {
      const int buf = t & 1;
      cp_async_wait<0>();
      __syncthreads();  // tile t landed for everyone; tile t-1's buffer is free
      if (t + 1 < ntiles) load_kv(t + 1, buf ^ 1);
      cp_async_commit();

      float s[kN / 8][4];
#pragma unroll
      for (int j = 0; j < kN / 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
      const T* qa = &sm.q[warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8][(lane >> 4) * 8];
      const T* kb = &sm.k[buf][(lane & 7) + (lane >> 4) * 8][((lane >> 3) & 1) * 8];
#pragma unroll
      for (int ks = 0; ks < kDQ / 16; ++ks) {
        uint32_t af[4];
        ldmatrix_x4(af, qa + ks * 16);
#pragma unroll
        for (int np = 0; np < kN / 16; ++np) {
          uint32_t bf[4];
          ldmatrix_x4(bf, kb + np * 16 * Smem::kLdQ + ks * 16);
          Mma<T>::run(s[2 * np], af, bf[0], bf[1]);
          Mma<T>::run(s[2 * np + 1], af, bf[2], bf[3]);
        }
      }

      // Mask (only rows whose range does not cover the whole tile), then online softmax.
      const int64_t j0 = tile_key0(t);
#pragma unroll
      for (int x = 0; x < 2; ++x) {
        const bool full = j0 + kN <= en[x] && (j0 + kN <= se[x] || j0 >= lb[x]);
        float mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < kN / 8; ++j) {
#pragma unroll
          for (int y = 0; y < 2; ++y) {
            float& e = s[j][2 * x + y];
            e *= scale_log2;
            if (!full) {
              const int64_t key = j0 + j * 8 + 2 * c4 + y;
              const bool vis = key < en[x] && (key < se[x] || key >= lb[x]);
              if (!vis) e = -INFINITY;
            }
            nan[x] |= isnan(e);  // fmaxf / exp2f below would drop it
            mx = fmaxf(mx, e);
          }
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(m[x], mx);
        const float m_use = m_new == -INFINITY ? 0.f : m_new;  // nothing visible yet: p = 0
        const float alpha = exp2f(m[x] - m_use);
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < kN / 8; ++j) {
#pragma unroll
          for (int y = 0; y < 2; ++y) {
            float& e = s[j][2 * x + y];
            e = exp2f(e - m_use);
            sum += e;
          }
        }
        l[x] = l[x] * alpha + sum;  // per-thread partial; the quad is summed at the end
        m[x] = m_new;
#pragma unroll
        for (int j = 0; j < kDV / 8; ++j) {
          o[j][2 * x] *= alpha;
          o[j][2 * x + 1] *= alpha;
        }
      }

      // O += P V: the score fragments of keys 16kk..16kk+15 are the A fragment of step kk.
      const T* vb = &sm.v[buf][(lane & 7) + ((lane >> 3) & 1) * 8][(lane >> 4) * 8];
#pragma unroll
      for (int kk = 0; kk < kN / 16; ++kk) {
        const uint32_t pa[4] = {pack2<T>(s[2 * kk][0], s[2 * kk][1]), pack2<T>(s[2 * kk][2], s[2 * kk][3]),
                                pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
        for (int jj = 0; jj < kDV / 16; ++jj) {
          uint32_t bf[4];
          ldmatrix_x4_trans(bf, vb + kk * 16 * Smem::kLdV + jj * 16);
          Mma<T>::run(o[2 * jj], pa, bf[0], bf[1]);
          Mma<T>::run(o[2 * jj + 1], pa, bf[2], bf[3]);
        }
      }
    }
    cp_async_wait<0>();
    __syncthreads();  // every warp is done with Q, K and V before the next query tile loads

#pragma unroll
    for (int x = 0; x < 2; ++x) {
      float lt = l[x];
      lt += __shfl_xor_sync(0xffffffffu, lt, 1);
      lt += __shfl_xor_sync(0xffffffffu, lt, 2);
      int any_nan = nan[x] | __shfl_xor_sync(0xffffffffu, nan[x], 1);  // the row's 4 lanes
      any_nan |= __shfl_xor_sync(0xffffffffu, any_nan, 2);
      const bool row_nan = any_nan != 0;
      const int64_t i = q0 + warp * 16 + g + x * 8;
      if (i - q0 >= nq) continue;
      const int64_t tq = q_start + i;
      const float qnan = __int_as_float(0x7fc00000);
      const float inv = row_nan ? qnan : lt > 0.f ? 1.f / lt : 0.f;  // no visible key: out 0
      T* dst = static_cast<T*>(a.out) + (tq * a.h + h) * a.dv;
#pragma unroll
      for (int j = 0; j < kDV / 8; ++j) {
        const int d = j * 8 + 2 * c4;
        if (d < a.dv) *reinterpret_cast<uint32_t*>(dst + d) = pack2<T>(o[j][2 * x] * inv, o[j][2 * x + 1] * inv);
      }
      if (c4 == 0) a.lse[h * a.total_q + tq] = row_nan ? qnan : lt > 0.f ? (m[x] + log2f(lt)) * kLn2 : INFINITY;
    }
  }
}

bool aligned_rows(const void* p, int64_t s1, int64_t s2) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0 && s1 % 8 == 0 && s2 % 8 == 0;
}

template <typename T, int kDQ, int kDV, int kN>
void launch(const MlaPrefillArgs& a, cudaStream_t s) {
  const size_t smem = sizeof(PrefillSmem<T, kDQ, kDV, kN>);
  auto kernel = prefill_kernel<T, kDQ, kDV, kN>;
  check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
             "mla_prefill: cudaFuncSetAttribute");
  // Enough query tiles per sequence for the longest one (rows beyond are covered by the
  // grid-stride loop anyway), at least one.
  int64_t tiles = (a.max_seqlen_q + kRows - 1) / kRows;
  tiles = std::min<int64_t>(std::max<int64_t>(tiles, 1), 0x7fffffff);
  const bool vec = aligned_rows(a.q, a.q_stride_t, a.q_stride_h) && aligned_rows(a.k, a.k_stride_t, a.k_stride_h) &&
                   aligned_rows(a.v, a.v_stride_t, a.v_stride_h);
  dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(a.h), static_cast<unsigned>(a.batch));
  kernel<<<grid, kThreads, smem, s>>>(a, vec);
  check_launch("mla_prefill");
}

template <typename T>
void dispatch(const MlaPrefillArgs& a, cudaStream_t s) {
  if (a.d_qk <= 64 && a.dv <= 64) return launch<T, 64, 64, 64>(a, s);
  if (a.d_qk <= 128 && a.dv <= 128) return launch<T, 128, 128, 64>(a, s);
  if (a.d_qk <= 192 && a.dv <= 128) return launch<T, 192, 128, 64>(a, s);
  return launch<T, 256, 256, 32>(a, s);
}

}  // namespace

void mla_prefill(const MlaPrefillArgs& a, Stream stream) {
  if (a.d_qk > 256 || a.dv > 256 || a.d_qk % 8 != 0 || a.dv % 8 != 0)
    throw Error(ErrorKind::Value, "mla_prefill: the CUDA kernel supports head dims that are multiples of 8 up to 256, "
                                  "got d_qk " + std::to_string(a.d_qk) + " and d_v " + std::to_string(a.dv));
  if (a.dtype != DType::BFloat16 && a.dtype != DType::Float16)
    throw Error(ErrorKind::Type, "mla_prefill: CUDA tensors must be bfloat16 or float16");
  if (a.h_k < 1 || a.h % a.h_k != 0)
    throw Error(ErrorKind::Value, "mla_prefill: q heads (" + std::to_string(a.h) + ") must be a multiple of k heads (" +
                                      std::to_string(a.h_k) + ")");
  if (a.batch == 0 || a.total_q == 0 || a.h == 0) return;
  if (a.h > 65535 || a.batch > 65535)
    throw Error(ErrorKind::Value, "mla_prefill: at most 65535 heads and 65535 sequences per CUDA launch, got " +
                                      std::to_string(a.h) + " and " + std::to_string(a.batch));
  DeviceGuard guard(a.device.index);
  auto s = static_cast<cudaStream_t>(stream);
  if (a.dtype == DType::BFloat16) dispatch<__nv_bfloat16>(a, s);
  else dispatch<__half>(a, s);
}

}  // namespace longcat::cuda
