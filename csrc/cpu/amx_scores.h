// Attention scores on AMX tiles (internal), for the AMX copies of the MLA / SSA kernels
// (mla_prefill_kernels.inc, mla_decode_kernels.inc under LONGCAT_AMX):
//
//   S^T[n, m] = scale * sum_d K[n, d] * Q[m, d]     n < nk keys (<= 64), m < ncols queries
//
// as TDPBF16PS on 16 x 16 fp32 tiles: the key rows (bf16, 16 keys x 32 values) are the A operand
// read as they lie in memory, Q^T packed as bf16 pair words, qp[dp * ldq + m] =
// q[m][2dp] | q[m][2dp + 1] << 16, is the B operand in its VNNI layout (16 pairs x 16 queries),
// so the products are exact and the sums fp32, as the vdpbf16ps copy's. Register blocking 2 x 2
// (C tiles 0-3, key tiles 4-5, query tiles 6-7, the combinations amx_tile.h instantiates).
// Operand tiles that would run past the keys or past D are copied into zero-padded buffers
// (never read a row that is not a visible key: unused cache pages may hold anything).
// Written against amx_tile.h, so it is compiled on the hardware instructions and on their
// scalar emulation alike.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "cpu/amx_tile.h"
#include "longcat/common.h"

namespace longcat::cpu::LONGCAT_ISA_NS::amx {

constexpr int64_t kScoreBlock = 16;  // keys or queries per tile
constexpr int64_t kScoreK = 32;      // values of d per tile (64 bytes of bf16)

// Zero-padded copies of the operand tiles that cannot be loaded in place.
struct ScorePads {
  alignas(64) bf16 keys[2][kScoreBlock * kScoreK];
  alignas(64) uint32_t queries[2][kScoreK / 2 * kScoreBlock];
};

// Key tile T for keys [n, n + 16) (those < nk exist) and d in [d0, d0 + 32): in place when the
// 16 rows lie ldk apart and the 32 values exist, else through pad.
template <int T>
inline void load_keys(const bf16* const* krows, int64_t n, int64_t nk, int64_t ldk, int64_t D, int64_t d0,
                      bf16* pad) {
  const int64_t rows = std::min<int64_t>(kScoreBlock, nk - n), dn = std::min<int64_t>(kScoreK, D - d0);
  bool in_place = rows == kScoreBlock && dn == kScoreK;
  for (int64_t r = 1; r < rows && in_place; ++r) in_place = krows[n + r] == krows[n] + r * ldk;
  if (in_place) {
    load<T>(krows[n] + d0, ldk * int64_t{sizeof(bf16)});
    return;
  }
  std::memset(pad, 0, kScoreBlock * kScoreK * sizeof(bf16));
  for (int64_t r = 0; r < rows; ++r) std::memcpy(pad + r * kScoreK, krows[n + r] + d0, dn * sizeof(bf16));
  load<T>(pad, kScoreK * int64_t{sizeof(bf16)});
}

// Query tile T: pairs [p0, p0 + 16) of queries [m, m + 16) (ldq >= m + 16 columns), through pad
// when fewer than 16 pairs are left.
template <int T>
inline void load_queries(const uint32_t* qp, int64_t ldq, int64_t m, int64_t Dp, int64_t p0, uint32_t* pad) {
  const int64_t pn = std::min<int64_t>(kScoreK / 2, Dp - p0);
  if (pn == kScoreK / 2) {
    load<T>(qp + p0 * ldq + m, ldq * 4);
    return;
  }
  std::memset(pad, 0, kScoreK / 2 * kScoreBlock * 4);
  for (int64_t p = 0; p < pn; ++p) std::memcpy(pad + p * kScoreBlock, qp + (p0 + p) * ldq + m, kScoreBlock * 4);
  load<T>(pad, kScoreBlock * 4);
}

// S^T rows [0, round_up(nk, 16)) x columns [0, ncols) at st (row stride lds >= ncols; ncols a
// multiple of 16, <= ldq; st must hold round_up(nk, 16) rows: rows past nk come out as 0 . q).
// D even; krows[n] is key n's row of D bf16 values, ldk the row distance of consecutive keys
// when they are contiguous (the in-place fast path).
inline void scores(const bf16* const* krows, int64_t nk, int64_t ldk, const uint32_t* qp, int64_t ldq,
                   int64_t ncols, int64_t D, float scale, float* st, int64_t lds, ScorePads& pads) {
  const int64_t nkb = (nk + kScoreBlock - 1) / kScoreBlock, nqb = ncols / kScoreBlock, Dp = D / 2;
  configure(uniform_config(16, 64));
  for (int64_t kb = 0; kb < nkb; kb += 2) {
    const bool has_k1 = kb + 1 < nkb;
    const int64_t n0 = kb * kScoreBlock, n1 = has_k1 ? n0 + kScoreBlock : n0;  // a repeat is not stored
    for (int64_t qb = 0; qb < nqb; qb += 2) {
      const bool has_q1 = qb + 1 < nqb;
      const int64_t m0 = qb * kScoreBlock, m1 = has_q1 ? m0 + kScoreBlock : m0;
      zero<0>(), zero<1>(), zero<2>(), zero<3>();
      for (int64_t d0 = 0; d0 < D; d0 += kScoreK) {
        load_keys<4>(krows, n0, nk, ldk, D, d0, pads.keys[0]);
        load_keys<5>(krows, n1, nk, ldk, D, d0, pads.keys[1]);
        load_queries<6>(qp, ldq, m0, Dp, d0 / 2, pads.queries[0]);
        load_queries<7>(qp, ldq, m1, Dp, d0 / 2, pads.queries[1]);
        dpbf16ps<0, 4, 6>();
        dpbf16ps<1, 4, 7>();
        dpbf16ps<2, 5, 6>();
        dpbf16ps<3, 5, 7>();
      }
      store<0>(st + n0 * lds + m0, lds * 4);
      if (has_q1) store<1>(st + n0 * lds + m1, lds * 4);
      if (has_k1) store<2>(st + n1 * lds + m0, lds * 4);
      if (has_k1 && has_q1) store<3>(st + n1 * lds + m1, lds * 4);
    }
  }
  release();
  // The scale (softmax scale * log2 e) on the fp32 sums, as the vdpbf16ps copy: Q is never
  // rounded after scaling.
  for (int64_t n = 0; n < nk; ++n)
    for (int64_t m = 0; m < ncols; ++m) st[n * lds + m] *= scale;
}

}  // namespace longcat::cpu::LONGCAT_ISA_NS::amx
