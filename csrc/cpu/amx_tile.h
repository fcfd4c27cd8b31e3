// AMX-BF16 tile operations (internal), in two implementations with one interface:
//   - the hardware instructions (a copy compiled with -mamx-tile -mamx-bf16), or
//   - with LONGCAT_AMX_EMULATED, a scalar emulation that follows the Intel SDM pseudocode of
//     LDTILECFG, TILELOADD, TILESTORED, TILEZERO, TILERELEASE and TDPBF16PS, so that the code
//     written against these operations runs and is tested on CPUs without AMX.
//
// Tiles are named by template arguments (the instructions encode the tile register in the
// opcode); only the combinations the kernels use are instantiated on hardware. Included by the
// per-ISA kernel copies only: it lives in their namespace (LONGCAT_ISA_NS), so that the two
// implementations of the same names never meet at link time.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "longcat/common.h"

#if !defined(LONGCAT_AMX_EMULATED)
#include <immintrin.h>
#endif

namespace longcat::cpu::LONGCAT_ISA_NS::amx {

constexpr int kTiles = 8, kMaxRows = 16, kMaxColsb = 64;

// The 64-byte LDTILECFG memory operand, palette 1: rows and bytes per row of each tile.
struct alignas(64) TileConfig {
  uint8_t palette_id = 1;
  uint8_t start_row = 0;
  uint8_t reserved0[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};
static_assert(sizeof(TileConfig) == 64, "LDTILECFG reads 64 bytes");

// Every tile rows x colsb (the kernels use 16 x 64: the largest tiles, 1 KB each).
inline TileConfig uniform_config(int rows, int colsb) {
  TileConfig c;
  for (int t = 0; t < kTiles; ++t) {
    c.rows[t] = static_cast<uint8_t>(rows);
    c.colsb[t] = static_cast<uint16_t>(colsb);
  }
  return c;
}

#if defined(LONGCAT_AMX_EMULATED)

// ---- emulation ---------------------------------------------------------------------------

struct TileState {
  TileConfig cfg{};
  bool configured = false;
  alignas(64) uint8_t data[kTiles][kMaxRows][kMaxColsb] = {};
};

// Tile state is per thread, like the hardware's (XSAVE state of each thread).
inline TileState& state() {
  thread_local TileState s;
  return s;
}

// Where the hardware raises #GP or #UD, the emulation fails loudly instead.
[[noreturn]] inline void fault(const char* what) {
  fail(ErrorKind::Runtime, std::string("AMX emulation: ") + what);
}

inline void check_tile(int t, const char* op) {
  TileState& s = state();
  if (!s.configured) fault((std::string(op) + " before LDTILECFG (#UD)").c_str());
  if (s.cfg.rows[t] == 0 || s.cfg.colsb[t] == 0) fault((std::string(op) + " on an unconfigured tile (#UD)").c_str());
}

// LDTILECFG: palette 1 only, reserved bytes zero, rows <= 16 and colsb <= 64 (#GP otherwise);
// all tiles are zeroed.
inline void configure(const TileConfig& c) {
  if (c.palette_id != 1) fault("LDTILECFG: palette_id must be 1 (#GP)");
  for (uint8_t b : c.reserved0)
    if (b) fault("LDTILECFG: reserved bytes must be zero (#GP)");
  for (int t = 0; t < kTiles; ++t) {
    if (c.rows[t] > kMaxRows || c.colsb[t] > kMaxColsb) fault("LDTILECFG: rows > 16 or colsb > 64 (#GP)");
    if ((c.rows[t] == 0) != (c.colsb[t] == 0)) fault("LDTILECFG: a tile with rows but no columns (#GP)");
  }
  for (int t = kTiles; t < 16; ++t)
    if (c.rows[t] || c.colsb[t]) fault("LDTILECFG: palette 1 has 8 tiles (#GP)");
  TileState& s = state();
  s.cfg = c;
  s.cfg.start_row = 0;
  s.configured = true;
  std::memset(s.data, 0, sizeof(s.data));
}

// TILERELEASE: back to the init state (no configuration, tiles zero).
inline void release() {
  TileState& s = state();
  s.cfg = TileConfig{};
  s.configured = false;
  std::memset(s.data, 0, sizeof(s.data));
}

// TILEZERO.
template <int T>
inline void zero() {
  check_tile(T, "TILEZERO");
  std::memset(state().data[T], 0, sizeof(state().data[T]));
}

// TILELOADD: rows [0, rows) take colsb bytes each from base + row * stride; the bytes past colsb
// and the rows past `rows` are zeroed.
template <int T>
inline void load(const void* base, int64_t stride) {
  check_tile(T, "TILELOADD");
  TileState& s = state();
  const int rows = s.cfg.rows[T], colsb = s.cfg.colsb[T];
  std::memset(s.data[T], 0, sizeof(s.data[T]));
  for (int r = 0; r < rows; ++r) std::memcpy(s.data[T][r], static_cast<const char*>(base) + r * stride, colsb);
}

// TILESTORED: rows [0, rows) write colsb bytes each to base + row * stride.
template <int T>
inline void store(void* base, int64_t stride) {
  check_tile(T, "TILESTORED");
  TileState& s = state();
  const int rows = s.cfg.rows[T], colsb = s.cfg.colsb[T];
  for (int r = 0; r < rows; ++r) std::memcpy(static_cast<char*>(base) + r * stride, s.data[T][r], colsb);
}

// TDPBF16PS's arithmetic: inputs that are denormal are read as (signed) zero, outputs that
// would be denormal are flushed to zero, fp32 FMA rounding to nearest even (the C library's
// fma in the default rounding mode).
inline float daz(float v) { return std::fpclassify(v) == FP_SUBNORMAL ? std::copysign(0.0f, v) : v; }
inline float bf16_at(const uint8_t* row, int i) {
  uint16_t h;
  std::memcpy(&h, row + 2 * i, 2);
  const uint32_t bits = uint32_t{h} << 16;  // make_fp32: the bf16 bits in the upper half
  float f;
  std::memcpy(&f, &bits, 4);
  return daz(f);
}
inline float fma_daz_ftz(float a, float b, float c) { return daz(std::fma(daz(a), daz(b), daz(c))); }
inline float add_daz_ftz(float a, float b) { return daz(daz(a) + daz(b)); }

// TDPBF16PS C, A, B: C (m x n fp32) += A (m x k bf16 pairs) . B (k x n bf16 pairs), the even
// and odd elements of the pairs accumulated separately over k, then summed and added to C.
template <int C, int A, int B>
inline void dpbf16ps() {
  check_tile(C, "TDPBF16PS");
  check_tile(A, "TDPBF16PS");
  check_tile(B, "TDPBF16PS");
  TileState& s = state();
  const TileConfig& g = s.cfg;
  // The shape checks of the SDM (#UD): C rows = A rows, A's k = B rows, C's n = B's n.
  if (g.colsb[C] % 4 || g.colsb[A] % 4 || g.colsb[B] % 4 || g.rows[C] != g.rows[A] ||
      g.colsb[A] / 4 != g.rows[B] || g.colsb[C] != g.colsb[B])
    fault("TDPBF16PS: tile shapes do not match (#UD)");
  const int m_rows = g.rows[C], n_elems = g.colsb[C] / 4, k_elems = g.colsb[A] / 4;
  for (int m = 0; m < m_rows; ++m) {
    float temp[2 * kMaxColsb / 4] = {};
    for (int k = 0; k < k_elems; ++k)
      for (int n = 0; n < n_elems; ++n) {
        temp[2 * n] = fma_daz_ftz(bf16_at(s.data[A][m], 2 * k), bf16_at(s.data[B][k], 2 * n), temp[2 * n]);
        temp[2 * n + 1] =
            fma_daz_ftz(bf16_at(s.data[A][m], 2 * k + 1), bf16_at(s.data[B][k], 2 * n + 1), temp[2 * n + 1]);
      }
    for (int n = 0; n < n_elems; ++n) {
      float acc;
      std::memcpy(&acc, s.data[C][m] + 4 * n, 4);
      acc = add_daz_ftz(acc, add_daz_ftz(temp[2 * n], temp[2 * n + 1]));
      std::memcpy(s.data[C][m] + 4 * n, &acc, 4);
    }
    std::memset(s.data[C][m] + 4 * n_elems, 0, kMaxColsb - 4 * n_elems);  // write_row_and_zero
  }
  for (int m = m_rows; m < kMaxRows; ++m) std::memset(s.data[C][m], 0, kMaxColsb);  // zero_upper_rows
}

#else

// ---- hardware ------------------------------------------------------------------------------

inline void configure(const TileConfig& c) { _tile_loadconfig(&c); }
inline void release() { _tile_release(); }

template <int T> void zero();
template <int T> void load(const void* base, int64_t stride);
template <int T> void store(void* base, int64_t stride);
template <int C, int A, int B> void dpbf16ps();

// The instructions take the tile number as an immediate: one specialisation per tile.
#define LONGCAT_AMX_TILE(N)                                                                          \
  template <> inline void zero<N>() { _tile_zero(N); }                                              \
  template <> inline void load<N>(const void* base, int64_t stride) { _tile_loadd(N, base, stride); } \
  template <> inline void store<N>(void* base, int64_t stride) { _tile_stored(N, base, stride); }
LONGCAT_AMX_TILE(0)
LONGCAT_AMX_TILE(1)
LONGCAT_AMX_TILE(2)
LONGCAT_AMX_TILE(3)
LONGCAT_AMX_TILE(4)
LONGCAT_AMX_TILE(5)
LONGCAT_AMX_TILE(6)
LONGCAT_AMX_TILE(7)
#undef LONGCAT_AMX_TILE

// The 2 x 2 blocking of the kernels: C tiles 0-3, A tiles 4-5, B tiles 6-7.
template <> inline void dpbf16ps<0, 4, 6>() { _tile_dpbf16ps(0, 4, 6); }
template <> inline void dpbf16ps<1, 4, 7>() { _tile_dpbf16ps(1, 4, 7); }
template <> inline void dpbf16ps<2, 5, 6>() { _tile_dpbf16ps(2, 5, 6); }
template <> inline void dpbf16ps<3, 5, 7>() { _tile_dpbf16ps(3, 5, 7); }

#endif

}  // namespace longcat::cpu::LONGCAT_ISA_NS::amx
