#include "python/convert.h"

#include <string>

namespace longcat::python {

static DType to_dtype(nb::dlpack::dtype t, const char* op, const char* arg) {
  using code = nb::dlpack::dtype_code;
  if (t.lanes == 1) {
    const auto c = static_cast<code>(t.code);
    if (c == code::Float && t.bits == 32) return DType::Float32;
    if (c == code::Float && t.bits == 64) return DType::Float64;
    if (c == code::Float && t.bits == 16) return DType::Float16;
    if (c == code::Bfloat && t.bits == 16) return DType::BFloat16;
    if (c == code::Int && t.bits == 32) return DType::Int32;
    if (c == code::Int && t.bits == 64) return DType::Int64;
    if (c == code::UInt && t.bits == 8) return DType::UInt8;
    if (c == code::Bool) return DType::Bool;
  }
  fail(ErrorKind::Type, std::string(op) + ": argument '" + arg +
                            "' has a dtype longcat does not handle (DLPack code " +
                            std::to_string(t.code) + ", " + std::to_string(t.bits) + " bits)");
}

TensorView to_view(const Array& a, const char* op, const char* arg) {
  TensorView v;
  if (a.ndim() > static_cast<size_t>(kMaxDims))
    fail(ErrorKind::Value, std::string(op) + ": argument '" + arg + "' has " +
                               std::to_string(a.ndim()) + " dimensions; at most " +
                               std::to_string(kMaxDims) + " are supported");
  v.data = a.data();
  v.dtype = to_dtype(a.dtype(), op, arg);
  v.ndim = static_cast<int>(a.ndim());
  for (int i = 0; i < v.ndim; ++i) {
    v.shape[i] = static_cast<int64_t>(a.shape(i));
    v.strides[i] = static_cast<int64_t>(a.stride(i));
  }
  switch (a.device_type()) {
    case nb::device::cpu::value: v.device = {DeviceType::CPU, 0}; break;
    case nb::device::cuda::value: v.device = {DeviceType::CUDA, static_cast<int>(a.device_id())}; break;
    default:
      fail(ErrorKind::Value, std::string(op) + ": argument '" + arg +
                                 "' lives on a device longcat does not handle (DLPack device type " +
                                 std::to_string(a.device_type()) + "); expected cpu or cuda");
  }
  return v;
}

}  // namespace longcat::python
