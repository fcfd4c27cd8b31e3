// Grouped expert SwiGLU GEMM: argument checks, workspace size, and the choice of backend.
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "core/checks.h"
#include "core/moe_gemm_args.h"
#include "cpu/isa_dispatch.h"
#include "longcat/moe_gemm.h"
#include "longcat/runtime.h"

namespace longcat {
namespace cpu {
LONGCAT_DECLARE_AMX_FN(void, moe_grouped_swiglu, const MoeGemmArgs&)
}  // namespace cpu
#if defined(LONGCAT_WITH_CUDA_RUNTIME)
namespace cuda {
int64_t moe_grouped_swiglu_workspace_size(int64_t rows, int64_t hidden, int64_t inter, int64_t experts,
                                          Device device);
void moe_grouped_swiglu(const MoeGemmArgs& a, Stream stream);
}  // namespace cuda
#endif

namespace {

constexpr const char* kOp = "moe_grouped_swiglu";

[[noreturn]] void value_error(const std::string& msg) { fail(ErrorKind::Value, std::string(kOp) + ": " + msg); }

void check_sizes(int64_t rows, int64_t hidden, int64_t inter, int64_t experts) {
  if (rows < 0 || hidden < 0 || inter < 0 || experts < 1)
    value_error("sizes must be rows >= 0, hidden >= 0, intermediate >= 0, n_routed >= 1; got rows=" +
                std::to_string(rows) + ", hidden=" + std::to_string(hidden) + ", intermediate=" +
                std::to_string(inter) + ", n_routed=" + std::to_string(experts));
}

int64_t cpu_workspace_bytes(int64_t rows, int64_t hidden, int64_t inter, int64_t experts, DType dtype,
                            int64_t threads) {
  using namespace cpu_moe;
  const int64_t esize = dtype_size(dtype);
  return h_bytes(rows, inter, esize) + table_bytes(experts) + packed_region_bytes(rows, hidden, inter, experts, esize) +
         threads * kThreadScratchBytes;
}

// TMA reads and writes 16-byte aligned boxes: a view at an odd element offset would fault on
// the device, so it is refused here.
void check_tma_aligned(const char* arg, const TensorView& t) {
  if (reinterpret_cast<uintptr_t>(t.data) % 16 != 0)
    value_error("argument '" + std::string(arg) + "' must start at a 16-byte aligned address on CUDA (TMA), got " +
                "an offset of " + std::to_string(reinterpret_cast<uintptr_t>(t.data) % 16) +
                " bytes (a view at an odd element offset? pass a copy)");
}

}  // namespace

int64_t moe_grouped_swiglu_workspace_size(int64_t rows, int64_t hidden, int64_t inter, int64_t experts,
                                          DType dtype, Device device) {
  check_sizes(rows, hidden, inter, experts);
  if (device.type == DeviceType::CUDA) {
#if defined(LONGCAT_WITH_CUDA_RUNTIME)
    return cuda::moe_grouped_swiglu_workspace_size(rows, hidden, inter, experts, device);
#else
    fail(ErrorKind::Runtime, std::string(kOp) + ": this build of longcat has no CUDA kernels (rebuild with LONGCAT_CUDA=ON)");
#endif
  }
  if (rows > (int64_t{1} << 31) || hidden > (int64_t{1} << 24) || inter > (int64_t{1} << 24) ||
      experts > (int64_t{1} << 20))
    value_error("sizes out of range: rows <= 2^31, hidden and intermediate <= 2^24, n_routed <= 2^20; got rows=" +
                std::to_string(rows) + ", hidden=" + std::to_string(hidden) + ", intermediate=" +
                std::to_string(inter) + ", n_routed=" + std::to_string(experts));
  return cpu_workspace_bytes(rows, hidden, inter, experts, dtype, num_threads());
}

namespace {

void run(const TensorView& out, const TensorView& x, const TensorView& offsets, const TensorView& w13,
         const TensorView& w2, const TensorView& workspace, Stream stream, CpuCopy copy) {
  const char* op = kOp;
  check_views(op, {{"x_perm", &x}, {"offsets", &offsets}, {"w13", &w13}, {"w2", &w2}, {"out", &out},
                   {"workspace", &workspace}});
  check_ndim(op, "x_perm", x, 2);
  const bool cuda = x.device.type == DeviceType::CUDA;
  if (cuda) check_dtype(op, "x_perm", x, {DType::BFloat16});
  else check_dtype(op, "x_perm", x, {DType::BFloat16, DType::Float32});
  check_contiguous(op, "x_perm", x);
  const int64_t R = x.size(0), H = x.size(1);

  check_ndim(op, "w13", w13, 3);
  check_same_dtype(op, "w13", w13, "x_perm", x);
  check_same_device(op, "w13", w13, "x_perm", x);
  check_size(op, "w13", w13, 2, H, "the hidden size x_perm.shape[1]");
  const int64_t E = w13.size(0);
  if (w13.size(1) % 2 != 0)
    value_error("argument 'w13' must have an even size in dimension 1 (2 * intermediate: gate rows, "
                "then up rows), got " + std::to_string(w13.size(1)) + " (shape " + shape_str(w13) + ")");
  const int64_t F = w13.size(1) / 2;
  check_contiguous(op, "w13", w13);

  check_ndim(op, "w2", w2, 3);
  check_same_dtype(op, "w2", w2, "x_perm", x);
  check_same_device(op, "w2", w2, "x_perm", x);
  check_size(op, "w2", w2, 0, E, "n_routed = w13.shape[0]");
  check_size(op, "w2", w2, 1, H, "the hidden size x_perm.shape[1]");
  check_size(op, "w2", w2, 2, F, "the intermediate size w13.shape[1] / 2");
  check_contiguous(op, "w2", w2);

  check_ndim(op, "offsets", offsets, 1);
  check_dtype(op, "offsets", offsets, {DType::Int32});
  check_same_device(op, "offsets", offsets, "x_perm", x);
  check_size(op, "offsets", offsets, 0, E + 1, "n_routed + 1 = w13.shape[0] + 1");
  check_contiguous(op, "offsets", offsets);

  check_ndim(op, "out", out, 2);
  check_same_shape(op, "out", out, "x_perm", x);
  check_same_dtype(op, "out", out, "x_perm", x);
  check_same_device(op, "out", out, "x_perm", x);
  check_contiguous(op, "out", out);

  check_ndim(op, "workspace", workspace, 1);
  check_dtype(op, "workspace", workspace, {DType::UInt8});
  check_same_device(op, "workspace", workspace, "x_perm", x);
  check_contiguous(op, "workspace", workspace);
  if (cuda) {
    if (H % 8 != 0 || F % 8 != 0)
      value_error("on CUDA the hidden size (" + std::to_string(H) + ") and the intermediate size (" +
                  std::to_string(F) + ") must be multiples of 8 (16-byte TMA rows)");
    check_cuda_built(op, "x_perm", x);
    for (auto [name, t] : {NamedView{"x_perm", &x}, NamedView{"w13", &w13}, NamedView{"w2", &w2}, NamedView{"out", &out},
                           NamedView{"workspace", &workspace}})
      check_tma_aligned(name, *t);
  }
  for (auto [oname, o] : {NamedView{"out", &out}, NamedView{"workspace", &workspace}})
    for (auto [iname, in] : {NamedView{"x_perm", &x}, NamedView{"offsets", &offsets}, NamedView{"w13", &w13},
                             NamedView{"w2", &w2}})
      check_no_overlap(op, oname, *o, iname, *in);
  check_no_overlap(op, "workspace", workspace, "out", out);
  // CPU: the thread count is fixed here for the whole call, as many as the workspace has scratch
  // slots for (at most num_threads()), so set_num_threads() from another thread meanwhile cannot
  // make the kernel index past it.
  int64_t threads = 1;
  if (!cuda) {
    const int64_t fixed = cpu_workspace_bytes(R, H, F, E, x.dtype, 0);
    threads = std::min<int64_t>(num_threads(), (workspace.size(0) - fixed) / cpu_moe::kThreadScratchBytes);
  }
  // The contract is moe_grouped_swiglu_workspace_size (reported); less, down to one thread's
  // scratch, still runs, on fewer threads (a workspace sized before set_num_threads raised it).
  const int64_t need = cuda ? moe_grouped_swiglu_workspace_size(R, H, F, E, x.dtype, x.device)
                            : cpu_workspace_bytes(R, H, F, E, x.dtype, std::max<int64_t>(threads, 1));
  if (workspace.size(0) < need)
    value_error("argument 'workspace' must have at least " +
                std::to_string(cuda ? need : cpu_workspace_bytes(R, H, F, E, x.dtype, num_threads())) +
                " bytes (moe_grouped_swiglu_workspace_size for rows=" + std::to_string(R) + ", hidden=" +
                std::to_string(H) + ", intermediate=" + std::to_string(F) + ", n_routed=" + std::to_string(E) +
                "), got " + std::to_string(workspace.size(0)));
  if (R > INT32_MAX) value_error("more than 2^31-1 rows in one call");

  MoeGemmArgs a{};
  a.out = out.data;
  a.x = x.data;
  a.offsets = offsets.ptr<const int32_t>();
  a.w13 = w13.data;
  a.w2 = w2.data;
  a.workspace = workspace.data;
  a.workspace_bytes = workspace.size(0);
  a.rows = R;
  a.hidden = H;
  a.inter = F;
  a.experts = E;
  a.threads = threads;
  a.dtype = x.dtype;
  a.device = x.device;

#if defined(LONGCAT_WITH_CUDA_RUNTIME)
  if (cuda) {
    if (R == 0 || H == 0) return;
    return cuda::moe_grouped_swiglu(a, stream);
  }
#endif
  // CPU: the offsets are host memory; a snapshot is checked before any row is touched, and the
  // kernel reads the snapshot.
  const std::vector<int32_t> offsets_copy = snapshot_int32(offsets);
  a.offsets = offsets_copy.data();
  const int32_t* off = a.offsets;
  if (off[0] != 0)
    value_error("argument 'offsets' must start at 0, got offsets[0] = " + std::to_string(off[0]));
  for (int64_t e = 0; e < E; ++e)
    if (off[e + 1] < off[e])
      value_error("argument 'offsets' must be non-decreasing, got offsets[" + std::to_string(e + 1) + "] = " +
                  std::to_string(off[e + 1]) + " < offsets[" + std::to_string(e) + "] = " + std::to_string(off[e]));
  if (off[E] != R)
    value_error("argument 'offsets' must end at the number of rows x_perm.shape[0] = " + std::to_string(R) +
                ", got offsets[" + std::to_string(E) + "] = " + std::to_string(off[E]));
  if (R == 0 || H == 0) return;
  if (F == 0) {  // an empty intermediate dimension: every output is an empty sum
    std::memset(a.out, 0, static_cast<size_t>(R * H * dtype_size(a.dtype)));
    return;
  }
  LONGCAT_ISA_CALL_COPY(copy, moe_grouped_swiglu, a);
}

}  // namespace

void moe_grouped_swiglu(const TensorView& out, const TensorView& x, const TensorView& offsets,
                        const TensorView& w13, const TensorView& w2, const TensorView& workspace,
                        Stream stream) {
  run(out, x, offsets, w13, w2, workspace, stream, CpuCopy::Best);
}

void moe_grouped_swiglu_amx_emulated(const TensorView& out, const TensorView& x, const TensorView& offsets,
                                     const TensorView& w13, const TensorView& w2, const TensorView& workspace) {
  if (x.device.type != DeviceType::CPU)
    fail(ErrorKind::Value, "moe_grouped_swiglu_amx_emulated: argument 'x_perm' must be a CPU tensor (the emulated "
                           "AMX copy is CPU code)");
  run(out, x, offsets, w13, w2, workspace, nullptr, CpuCopy::AmxEmulated);
}

}  // namespace longcat
