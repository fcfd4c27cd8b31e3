// Bindings: grouped expert SwiGLU GEMM (csrc/include/longcat/moe_gemm.h).
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include "longcat/moe_gemm.h"
#include "python/convert.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace longcat::python {

namespace {
DType parse_dtype(const std::string& name) {
  if (name == "float32") return DType::Float32;
  if (name == "bfloat16") return DType::BFloat16;
  if (name == "float16") return DType::Float16;
  fail(ErrorKind::Type, "moe_grouped_swiglu_workspace_size: argument 'dtype' must be float32, bfloat16 or "
                        "float16, got " + name);
}
}  // namespace

void register_moe_gemm(nb::module_& m) {
  m.def(
      "moe_grouped_swiglu_workspace_size",
      [](int64_t rows, int64_t hidden, int64_t intermediate, int64_t n_routed, const std::string& dtype,
         const std::string& device_type, int device_index) {
        Device d{device_type == "cuda" ? DeviceType::CUDA : DeviceType::CPU, device_index};
        if (device_type != "cuda" && device_type != "cpu")
          fail(ErrorKind::Value, "moe_grouped_swiglu_workspace_size: argument 'device' must be cpu or cuda, got " + device_type);
        return longcat::moe_grouped_swiglu_workspace_size(rows, hidden, intermediate, n_routed, parse_dtype(dtype), d);
      },
      "rows"_a, "hidden"_a, "intermediate"_a, "n_routed"_a, "dtype"_a, "device_type"_a = "cpu",
      "device_index"_a = 0,
      "Bytes of uint8 workspace moe_grouped_swiglu needs (CPU: depends on num_threads()).");
  m.def(
      "moe_grouped_swiglu",
      [](Array out, Array x_perm, Array offsets, Array w13, Array w2, Array workspace, uintptr_t stream) {
        const char* op = "moe_grouped_swiglu";
        TensorView o = to_view(out, op, "out"), x = to_view(x_perm, op, "x_perm"),
                   off = to_view(offsets, op, "offsets"), a = to_view(w13, op, "w13"),
                   b = to_view(w2, op, "w2"), ws = to_view(workspace, op, "workspace");
        nb::gil_scoped_release release;
        longcat::moe_grouped_swiglu(o, x, off, a, b, ws, reinterpret_cast<Stream>(stream));
      },
      "out"_a, "x_perm"_a, "offsets"_a, "w13"_a, "w2"_a, "workspace"_a, "stream"_a = 0,
      "out[rows of expert e] = SwiGLU expert MLP e (see longcat/moe_gemm.h). Writes into out.");
  m.def(
      "_moe_grouped_swiglu_amx_emulated",
      [](Array out, Array x_perm, Array offsets, Array w13, Array w2, Array workspace) {
        const char* op = "moe_grouped_swiglu_amx_emulated";
        TensorView o = to_view(out, op, "out"), x = to_view(x_perm, op, "x_perm"),
                   off = to_view(offsets, op, "offsets"), a = to_view(w13, op, "w13"),
                   b = to_view(w2, op, "w2"), ws = to_view(workspace, op, "workspace");
        nb::gil_scoped_release release;
        longcat::moe_grouped_swiglu_amx_emulated(o, x, off, a, b, ws);
      },
      "out"_a, "x_perm"_a, "offsets"_a, "w13"_a, "w2"_a, "workspace"_a,
      "For tests: moe_grouped_swiglu on CPU run by the AMX copy's code with emulated tile instructions.");
}

}  // namespace longcat::python
