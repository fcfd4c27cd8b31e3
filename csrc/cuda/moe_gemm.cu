// Grouped expert SwiGLU GEMM on CUDA (sm_90a); semantics in csrc/include/longcat/moe_gemm.h.
//
//   1. build_group_args (one thread per expert): reads offsets on the device and writes, for
//      both GEMMs, each group's problem size (M_e, N, K), A / B / D pointers and strides into
//      the workspace. No host synchronisation: CUTLASS gets device-side problem shapes only
//      (no host copy), so its persistent group scheduler launches one CTA per SM and walks the
//      groups' tiles on the device; empty groups (M_e = 0) have no tiles.
//   2. CUTLASS 4.2 ptr-array grouped GEMM: gu[R, 2F] = x_perm @ w13[e].T per group
//      (bf16 in, fp32 accumulation, bf16 out; tile 128x128x64, cluster 1x1x1,
//      KernelPtrArrayTmaWarpSpecializedCooperative, no C operand).
//   3. swiglu_kernel: h = bf16(bf16(silu(g)) * u), 8 columns per thread (16-byte accesses).
//   4. The same GEMM instantiation again: out[R, H] = h @ w2[e].T per group.
// Both GEMMs are the same "TN" problem (A row-major M x K, B given as N x K with K contiguous,
// D row-major), so one CUTLASS instantiation serves both.
//
// Without CUTLASS headers at build time (LONGCAT_HAVE_CUTLASS undefined) the op raises a
// RuntimeError on CUDA tensors saying so; the SwiGLU kernel is still compiled.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "core/moe_gemm_args.h"
#include "cuda/launch.cuh"

#if defined(LONGCAT_HAVE_CUTLASS)
#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/operations.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/dispatch_policy.hpp"
#include "cutlass/gemm/group_array_problem_shape.hpp"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/kernel_hardware_info.h"
#endif

namespace longcat::cuda {
namespace {

constexpr const char* kOp = "moe_grouped_swiglu";

[[noreturn]] void runtime_error(const std::string& msg) {
  throw Error(ErrorKind::Runtime, std::string(kOp) + ": " + msg);
}


constexpr int64_t kAlign = 256;
constexpr int64_t align_up(int64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// h[m, f] = bf16(bf16(silu(gu[m, f])) * gu[m, F + f]); F % 8 == 0, rows 16-byte aligned.
__global__ void __launch_bounds__(256) swiglu_kernel(const __nv_bfloat16* __restrict__ gu,
                                                     __nv_bfloat16* __restrict__ h, int64_t rows, int64_t F) {
  const int64_t per_row = F / 8;
  const int64_t n = rows * per_row;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t m = i / per_row, f = (i % per_row) * 8;
    const uint4 gv = *reinterpret_cast<const uint4*>(gu + m * 2 * F + f);
    const uint4 uv = *reinterpret_cast<const uint4*>(gu + m * 2 * F + F + f);
    const __nv_bfloat16* g8 = reinterpret_cast<const __nv_bfloat16*>(&gv);
    const __nv_bfloat16* u8 = reinterpret_cast<const __nv_bfloat16*>(&uv);
    uint4 hv;
    __nv_bfloat16* h8 = reinterpret_cast<__nv_bfloat16*>(&hv);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const float g = __bfloat162float(g8[j]);
      const float s = __bfloat162float(__float2bfloat16_rn(g / (1.0f + expf(-g))));
      h8[j] = __float2bfloat16_rn(s * __bfloat162float(u8[j]));
    }
    *reinterpret_cast<uint4*>(h + m * F + f) = hv;
  }
}

#if defined(LONGCAT_HAVE_CUTLASS)
using namespace cute;

using ElementAB = cutlass::bfloat16_t;
using ElementD = cutlass::bfloat16_t;
using ElementAcc = float;
using LayoutA = cutlass::layout::RowMajor;     // A [M, K], K contiguous
using LayoutB = cutlass::layout::ColumnMajor;  // B as K x N column-major = [N, K], K contiguous
using LayoutD = cutlass::layout::RowMajor;     // D [M, N]
constexpr int kAlignElems = 8;                 // 16 bytes of bf16
using TileShape = Shape<_128, _128, _64>;
using ClusterShape = Shape<_1, _1, _1>;
using KernelSchedule = cutlass::gemm::KernelPtrArrayTmaWarpSpecializedCooperative;
using EpilogueSchedule = cutlass::epilogue::PtrArrayTmaWarpSpecializedCooperative;
using ProblemShape = cutlass::gemm::GroupProblemShape<Shape<int, int, int>>;  // (M, N, K) per group

using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
    cutlass::epilogue::collective::EpilogueTileAuto, ElementAcc, ElementAcc,
    void, LayoutD*, kAlignElems,  // no C operand: D = acc
    ElementD, LayoutD*, kAlignElems, EpilogueSchedule,
    cutlass::epilogue::fusion::LinearCombination<ElementD, ElementAcc>>::CollectiveOp;

using CollectiveMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, ElementAB, LayoutA*, kAlignElems, ElementAB,
    LayoutB*, kAlignElems, ElementAcc, TileShape, ClusterShape,
    cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
        sizeof(typename CollectiveEpilogue::SharedStorage))>,
    KernelSchedule>::CollectiveOp;

using GemmKernel = cutlass::gemm::kernel::GemmUniversal<ProblemShape, CollectiveMainloop, CollectiveEpilogue>;
using Gemm = cutlass::gemm::device::GemmUniversalAdapter<GemmKernel>;
using StrideA = typename GemmKernel::InternalStrideA;
using StrideB = typename GemmKernel::InternalStrideB;
using StrideD = typename GemmKernel::InternalStrideD;
using Shape3 = typename ProblemShape::UnderlyingProblemShape;
using StrideRow = cute::Stride<int64_t, cute::Int<1>, cute::Int<0>>;  // (leading dim, 1, no batch)
static_assert(std::is_same_v<StrideA, StrideRow> && std::is_same_v<StrideB, StrideRow> &&
                  std::is_same_v<StrideD, StrideRow>,
              "build_group_args writes (ld, 1, 0) strides");

// One GEMM's per-group argument arrays, in the workspace.
struct GroupArrays {
  Shape3* shape;
  const ElementAB** a;
  const ElementAB** b;
  ElementD** d;
  StrideA* sa;
  StrideB* sb;
  StrideD* sd;
};

int64_t group_arrays_bytes(int64_t E) {
  return align_up(E * sizeof(Shape3)) + 3 * align_up(E * sizeof(void*)) + align_up(E * sizeof(StrideA)) +
         align_up(E * sizeof(StrideB)) + align_up(E * sizeof(StrideD));
}

GroupArrays carve_group_arrays(char*& p, int64_t E) {
  GroupArrays g;
  auto take = [&](int64_t bytes) {
    char* q = p;
    p += align_up(bytes);
    return q;
  };
  g.shape = reinterpret_cast<Shape3*>(take(E * sizeof(Shape3)));
  g.a = reinterpret_cast<const ElementAB**>(take(E * sizeof(void*)));
  g.b = reinterpret_cast<const ElementAB**>(take(E * sizeof(void*)));
  g.d = reinterpret_cast<ElementD**>(take(E * sizeof(void*)));
  g.sa = reinterpret_cast<StrideA*>(take(E * sizeof(StrideA)));
  g.sb = reinterpret_cast<StrideB*>(take(E * sizeof(StrideB)));
  g.sd = reinterpret_cast<StrideD*>(take(E * sizeof(StrideD)));
  return g;
}

__device__ __forceinline__ StrideRow row_stride(int64_t ld) {
  StrideRow s{};
  cute::get<0>(s) = ld;
  return s;
}

// Group e: rows [lo, hi) with lo, hi clamped into [0, R] and hi >= lo, so that bad offsets can
// never send a GEMM outside the buffers.
__global__ void build_group_args(const int32_t* __restrict__ offsets, int E, int R, int H, int F,
                                 const ElementAB* x, const ElementAB* w13, const ElementAB* w2,
                                 ElementD* gu, ElementD* h, ElementD* out, GroupArrays g1, GroupArrays g2) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= E) return;
  const int lo = min(max(offsets[e], 0), R);
  const int hi = min(max(offsets[e + 1], lo), R);
  const int M = hi - lo;
  // gate/up: gu[lo:hi, :] = x[lo:hi, :] @ w13[e].T      (M, 2F, H)
  g1.shape[e] = Shape3(M, 2 * F, H);
  g1.a[e] = x + static_cast<int64_t>(lo) * H;
  g1.b[e] = w13 + static_cast<int64_t>(e) * 2 * F * H;
  g1.d[e] = gu + static_cast<int64_t>(lo) * 2 * F;
  g1.sa[e] = row_stride(H);
  g1.sb[e] = row_stride(H);
  g1.sd[e] = row_stride(2 * static_cast<int64_t>(F));
  // down: out[lo:hi, :] = h[lo:hi, :] @ w2[e].T         (M, H, F)
  g2.shape[e] = Shape3(M, H, F);
  g2.a[e] = h + static_cast<int64_t>(lo) * F;
  g2.b[e] = w2 + static_cast<int64_t>(e) * H * F;
  g2.d[e] = out + static_cast<int64_t>(lo) * H;
  g2.sa[e] = row_stride(F);
  g2.sb[e] = row_stride(F);
  g2.sd[e] = row_stride(H);
}

typename Gemm::Arguments gemm_arguments(const GroupArrays& g, int E, int device, int sm_count) {
  cutlass::KernelHardwareInfo hw;
  hw.device_id = device;
  hw.sm_count = sm_count;
  typename Gemm::Arguments args;
  decltype(args.epilogue.thread) fusion{};
  fusion.alpha = 1.0f;
  fusion.beta = 0.0f;
  fusion.alpha_ptr = nullptr;
  fusion.beta_ptr = nullptr;
  fusion.alpha_ptr_array = nullptr;
  fusion.beta_ptr_array = nullptr;
  fusion.dAlpha = {cute::_0{}, cute::_0{}, 0};
  fusion.dBeta = {cute::_0{}, cute::_0{}, 0};
  args = typename Gemm::Arguments{
      cutlass::gemm::GemmUniversalMode::kGrouped,
      {E, g.shape, nullptr},  // problem shapes on the device only
      {g.a, g.sa, g.b, g.sb},
      {fusion, nullptr, g.sd, g.d, g.sd},
      hw};
  return args;
}

int sm_count_of(int device) {
  int n = 0;
  check_cuda(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
  return n;
}

struct Layout {
  int64_t gu, h, arrays1, arrays2, cutlass1, cutlass2, total;
};

Layout workspace_layout(int64_t R, int64_t H, int64_t F, int64_t E, int device) {
  const int sm = sm_count_of(device);
  GroupArrays none{};
  const int64_t cw = static_cast<int64_t>(Gemm::get_workspace_size(gemm_arguments(none, static_cast<int>(E), device, sm)));
  Layout l{};
  int64_t at = 0;
  l.gu = at;
  at += align_up(R * 2 * F * 2);
  l.h = at;
  at += align_up(R * F * 2);
  l.arrays1 = at;
  at += group_arrays_bytes(E);
  l.arrays2 = at;
  at += group_arrays_bytes(E);
  l.cutlass1 = at;
  at += align_up(cw);
  l.cutlass2 = at;
  at += align_up(cw);
  l.total = at + kAlign;  // slack to align the base pointer
  return l;
}

void run_gemm(const GroupArrays& g, int E, int device, int sm, void* workspace, cudaStream_t stream,
              const char* which) {
  Gemm gemm;
  auto args = gemm_arguments(g, E, device, sm);
  cutlass::Status st = gemm.can_implement(args);
  if (st != cutlass::Status::kSuccess)
    runtime_error(std::string("CUTLASS cannot run the ") + which + " GEMM: " + cutlassGetStatusString(st));
  st = gemm.initialize(args, workspace, stream);
  if (st != cutlass::Status::kSuccess)
    runtime_error(std::string("CUTLASS initialize failed for the ") + which + " GEMM: " + cutlassGetStatusString(st));
  st = gemm.run(stream);
  if (st != cutlass::Status::kSuccess)
    runtime_error(std::string("CUTLASS run failed for the ") + which + " GEMM: " + cutlassGetStatusString(st));
  check_cuda(cudaGetLastError(), which);
}
#endif  // LONGCAT_HAVE_CUTLASS

}  // namespace

int64_t moe_grouped_swiglu_workspace_size(int64_t rows, int64_t hidden, int64_t inter, int64_t experts,
                                          Device device) {
#if defined(LONGCAT_HAVE_CUTLASS)
  DeviceGuard guard(device.index);
  return workspace_layout(rows, hidden, inter, experts, device.index).total;
#else
  return 0;  // the op itself raises: no CUTLASS in this build
#endif
}

void moe_grouped_swiglu(const MoeGemmArgs& a, Stream stream) {
#if defined(LONGCAT_HAVE_CUTLASS)
  if (a.rows > INT32_MAX || a.hidden > INT32_MAX / 2 || a.inter > INT32_MAX / 2 || a.experts > INT32_MAX)
    throw Error(ErrorKind::Value, std::string(kOp) + ": sizes beyond 32-bit GEMM extents on CUDA");
  DeviceGuard guard(a.device.index);
  auto s = static_cast<cudaStream_t>(stream);
  const int E = static_cast<int>(a.experts), R = static_cast<int>(a.rows);
  const int H = static_cast<int>(a.hidden), F = static_cast<int>(a.inter);
  const Layout l = workspace_layout(a.rows, a.hidden, a.inter, a.experts, a.device.index);
  char* base = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(a.workspace) + kAlign - 1) / kAlign * kAlign);
  auto* gu = reinterpret_cast<ElementD*>(base + l.gu);
  auto* h = reinterpret_cast<ElementD*>(base + l.h);
  char* p1 = base + l.arrays1;
  char* p2 = base + l.arrays2;
  GroupArrays g1 = carve_group_arrays(p1, E), g2 = carve_group_arrays(p2, E);
  const int sm = sm_count_of(a.device.index);
  if (F == 0) {  // empty inner dimension: out = 0 (CUTLASS is not asked for K = 0)
    check_cuda(cudaMemsetAsync(a.out, 0, a.rows * a.hidden * 2, s), "cudaMemsetAsync");
    return;
  }

  build_group_args<<<(E + 127) / 128, 128, 0, s>>>(
      a.offsets, E, R, H, F, static_cast<const ElementAB*>(a.x), static_cast<const ElementAB*>(a.w13),
      static_cast<const ElementAB*>(a.w2), gu, h, static_cast<ElementD*>(a.out), g1, g2);
  check_cuda(cudaGetLastError(), "build_group_args launch");
  run_gemm(g1, E, a.device.index, sm, base + l.cutlass1, s, "gate/up");
  {
    const int64_t n = a.rows * (a.inter / 8);
    const int blocks = static_cast<int>(std::min<int64_t>((n + 255) / 256, int64_t{sm} * 16));
    swiglu_kernel<<<blocks, 256, 0, s>>>(reinterpret_cast<const __nv_bfloat16*>(gu),
                                         reinterpret_cast<__nv_bfloat16*>(h), a.rows, a.inter);
    check_cuda(cudaGetLastError(), "swiglu_kernel launch");
  }
  run_gemm(g2, E, a.device.index, sm, base + l.cutlass2, s, "down");
#else
  (void)a;
  (void)stream;
  throw Error(ErrorKind::Runtime, std::string(kOp) +
                                      ": this build of longcat has no CUTLASS, which the CUDA grouped GEMM needs "
                                      "(pip install nvidia-cutlass, or set CUTLASS_DIR, and rebuild)");
#endif
}

}  // namespace longcat::cuda
