// longcat public C++ API: the pieces every op uses.
//
//   TensorView  a non-owning view of a tensor: data pointer, dtype, shape, strides (in elements),
//               device. It is what crosses the API: callers own and allocate all memory.
//   Error       the one exception type the library throws; its kind tells bindings which
//               Python exception to raise (ValueError / TypeError / RuntimeError).
//   Stream      a cudaStream_t for CUDA tensors (nullptr = the default stream); ignored on CPU.
//               Kept as void* so these headers need no CUDA header.
//
// Every op checks its arguments before touching memory; messages name the op, the argument,
// what was expected and what came, e.g. "rms_norm: argument 'weight' must have size 4096 in
// dimension 0 (...), got 4095" (the checks themselves are internal: csrc/core/checks.h).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#if defined(_WIN32)
#define LONGCAT_API __declspec(dllexport)
#else
#define LONGCAT_API __attribute__((visibility("default")))
#endif

namespace longcat {

using Stream = void*;

// Float64 is never accepted by a kernel; it exists so that a float64 argument is reported by name.
enum class DType : uint8_t { Float32, Float16, BFloat16, Int32, Int64, UInt8, Bool, Float64 };
enum class DeviceType : uint8_t { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
};

constexpr int kMaxDims = 8;

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::Float32;
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t strides[kMaxDims] = {};  // in elements, not bytes
  Device device{};

  int64_t size(int d) const { return shape[d < 0 ? d + ndim : d]; }
  int64_t stride(int d) const { return strides[d < 0 ? d + ndim : d]; }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
  bool is_contiguous() const;  // C order; size-1 dims may have any stride; empty tensors are
  template <typename T> T* ptr() const { return static_cast<T*>(data); }
};

LONGCAT_API int64_t dtype_size(DType t);
LONGCAT_API const char* dtype_name(DType t);  // "float32", "bfloat16", ... (torch's names)
LONGCAT_API std::string device_name(Device d);   // "cpu", "cuda:0"
LONGCAT_API std::string shape_str(const TensorView& t);  // "[2, 4096]"

enum class ErrorKind : uint8_t { Value, Type, Runtime };

class LONGCAT_API Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& msg) : std::runtime_error(msg), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

// Throws Error(kind, msg): what every argument check of the library ends in.
[[noreturn]] LONGCAT_API void fail(ErrorKind kind, const std::string& msg);

}  // namespace longcat
