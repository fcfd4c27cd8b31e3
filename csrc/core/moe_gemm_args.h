// Grouped expert SwiGLU GEMM arguments after validation, shared by the CPU and CUDA backends
// (internal). Semantics in csrc/include/longcat/moe_gemm.h.
#pragma once

#include <cstdint>

#include "longcat/common.h"

namespace longcat {

struct MoeGemmArgs {
  void* out;              // [R, H]
  const void* x;          // [R, H]
  const int32_t* offsets; // [E + 1]
  const void* w13;        // [E, 2F, H]
  const void* w2;         // [E, H, F]
  void* workspace;
  int64_t workspace_bytes;
  int64_t rows, hidden, inter, experts;
  int64_t threads;        // CPU: threads (= scratch slots in the workspace), fixed for the whole call
  DType dtype;
  Device device;
};

// CPU blocking, the same for every ISA copy so that the workspace size does not depend on it:
// a tile is kMC rows x kNC packed columns, the K loop runs in kKC steps. Per thread the
// workspace holds the packed A block (kMC x kKC fp32), the packed B block (kKC x kNC fp32) and
// the fp32 C tile (kMC x kNC). kMC is a multiple of every ISA's micro-tile rows (4, 6, 8),
// kNC of every micro-tile width (2, 16, 32), kKC is even (bf16 pairs for vdpbf16ps).
namespace cpu_moe {
constexpr int64_t kMC = 96, kNC = 128, kKC = 256;
constexpr int64_t kAlign = 64;
constexpr int64_t align_up(int64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }
constexpr int64_t kPackABytes = kMC * kKC * 4 + kAlign,  // + slack: see pack_a_f32
                   kPackBBytes = kKC * kNC * 4, kCTileBytes = kMC * kNC * 4;
constexpr int64_t kThreadScratchBytes = align_up(kPackABytes) + align_up(kPackBBytes) + align_up(kCTileBytes);
// Workspace layout: [h: R*F elements of x's dtype][tile table: (E+1) int64][packed rows]
// [scratch per thread].
inline int64_t h_bytes(int64_t rows, int64_t inter, int64_t esize) { return align_up(rows * inter * esize); }
inline int64_t table_bytes(int64_t experts) { return align_up((experts + 1) * 8); }
// Packed rows (bf16 only; used by the AVX512-BF16 copy): a GEMM's A rows packed once as
// vdpbf16ps pair words, block by block of kMC rows, instead of once per column tile. Each
// expert's rows start 16 rows apart from the previous expert's end (its last block is padded
// to whole 16-row vectors), so the packing of K columns takes (R + 16 E) * ceil(K / 2) words.
// Capped: above the cap (long prefills) the tiles pack their rows themselves.
constexpr int64_t kPackedRowsCapBytes = int64_t{64} << 20;
inline int64_t packed_rows_bytes(int64_t rows, int64_t experts, int64_t k) {
  return (rows + 16 * experts) * ((k + 1) / 2) * 4;
}
inline int64_t packed_region_bytes(int64_t rows, int64_t hidden, int64_t inter, int64_t experts, int64_t esize) {
  if (esize != 2) return 0;
  const int64_t need = packed_rows_bytes(rows, experts, hidden > inter ? hidden : inter);
  return align_up(need < kPackedRowsCapBytes ? need : kPackedRowsCapBytes);
}
}  // namespace cpu_moe

}  // namespace longcat
