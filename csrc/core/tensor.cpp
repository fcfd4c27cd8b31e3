// TensorView helpers and the argument checks behind every op's error messages.
#include <sstream>

#include "core/checks.h"

namespace longcat {

bool TensorView::is_contiguous() const {
  if (numel() == 0) return true;  // no element to address: any strides (torch gives [0, 0] odd ones)
  int64_t expected = 1;
  for (int i = ndim - 1; i >= 0; --i) {
    if (shape[i] != 1 && strides[i] != expected) return false;
    expected *= shape[i];
  }
  return true;
}

int64_t dtype_size(DType t) {
  switch (t) {
    case DType::Float32: case DType::Int32: return 4;
    case DType::Float16: case DType::BFloat16: return 2;
    case DType::Int64: return 8;
    case DType::UInt8: case DType::Bool: return 1;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::Float32: return "float32";
    case DType::Float16: return "float16";
    case DType::BFloat16: return "bfloat16";
    case DType::Int32: return "int32";
    case DType::Int64: return "int64";
    case DType::UInt8: return "uint8";
    case DType::Bool: return "bool";
  }
  return "?";
}

std::string device_name(Device d) {
  return d.type == DeviceType::CPU ? std::string("cpu") : "cuda:" + std::to_string(d.index);
}

std::string shape_str(const TensorView& t) {
  std::ostringstream s;
  s << '[';
  for (int i = 0; i < t.ndim; ++i) s << (i ? ", " : "") << t.shape[i];
  s << ']';
  return s.str();
}

void fail(ErrorKind kind, const std::string& msg) { throw Error(kind, msg); }

std::string arg_prefix(const char* op, const char* arg) {
  return std::string(op) + ": argument '" + arg + "' ";
}

void check_dtype(const char* op, const char* arg, const TensorView& t,
                 std::initializer_list<DType> allowed) {
  for (DType d : allowed)
    if (t.dtype == d) return;
  std::string names;
  size_t i = 0;
  for (DType d : allowed) {
    names += dtype_name(d);
    ++i;
    if (i + 1 < allowed.size()) names += ", ";
    else if (i + 1 == allowed.size()) names += " or ";
  }
  fail(ErrorKind::Type, arg_prefix(op, arg) + "must have dtype " + names + " on " +
                            device_name(t.device) + ", got " + dtype_name(t.dtype));
}

void check_same_dtype(const char* op, const char* arg, const TensorView& t, const char* ref_arg,
                      const TensorView& ref) {
  if (t.dtype != ref.dtype)
    fail(ErrorKind::Type, arg_prefix(op, arg) + "must have the dtype of '" + ref_arg + "' (" +
                              dtype_name(ref.dtype) + "), got " + dtype_name(t.dtype));
}

void check_ndim(const char* op, const char* arg, const TensorView& t, int ndim) {
  if (t.ndim != ndim)
    fail(ErrorKind::Value, arg_prefix(op, arg) + "must have " + std::to_string(ndim) +
                               " dimensions, got " + std::to_string(t.ndim) + " (shape " +
                               shape_str(t) + ")");
}

void check_min_ndim(const char* op, const char* arg, const TensorView& t, int ndim) {
  if (t.ndim < ndim)
    fail(ErrorKind::Value, arg_prefix(op, arg) + "must have at least " + std::to_string(ndim) +
                               " dimension(s), got " + std::to_string(t.ndim));
}

void check_size(const char* op, const char* arg, const TensorView& t, int dim, int64_t expected,
                const char* what) {
  int64_t got = t.size(dim);
  if (got != expected)
    fail(ErrorKind::Value, arg_prefix(op, arg) + "must have size " + std::to_string(expected) +
                               " in dimension " + std::to_string(dim) + " (" + what + "), got " +
                               std::to_string(got) + " (shape " + shape_str(t) + ")");
}

void check_same_shape(const char* op, const char* arg, const TensorView& t, const char* ref_arg,
                      const TensorView& ref) {
  bool same = t.ndim == ref.ndim;
  for (int i = 0; same && i < t.ndim; ++i) same = t.shape[i] == ref.shape[i];
  if (!same)
    fail(ErrorKind::Value, arg_prefix(op, arg) + "must have the shape of '" + ref_arg + "' " +
                               shape_str(ref) + ", got " + shape_str(t));
}

void check_contiguous(const char* op, const char* arg, const TensorView& t) {
  if (!t.is_contiguous())
    fail(ErrorKind::Value, arg_prefix(op, arg) + "must be contiguous, got shape " + shape_str(t) +
                               " with non-contiguous strides (call .contiguous())");
}

void check_last_dim_contiguous(const char* op, const char* arg, const TensorView& t) {
  if (t.ndim > 0 && t.shape[t.ndim - 1] > 1 && t.strides[t.ndim - 1] != 1)
    fail(ErrorKind::Value, arg_prefix(op, arg) + "must have a contiguous last dimension (stride 1), got stride " +
                               std::to_string(t.strides[t.ndim - 1]));
}

void check_same_device(const char* op, const char* arg, const TensorView& t, const char* ref_arg,
                       const TensorView& ref) {
  if (t.device != ref.device)
    fail(ErrorKind::Value, arg_prefix(op, arg) + "must be on the device of '" + ref_arg + "' (" +
                               device_name(ref.device) + "), got " + device_name(t.device));
}

void check_nonnull(const char* op, const char* arg, const TensorView& t) {
  if (t.data == nullptr && t.numel() > 0)
    fail(ErrorKind::Value, arg_prefix(op, arg) + "has a null data pointer but " +
                               std::to_string(t.numel()) + " elements");
}

void check_cuda_built(const char* op, const char* arg, const TensorView& t) {
#if !defined(LONGCAT_WITH_CUDA_RUNTIME)
  if (t.device.type == DeviceType::CUDA)
    fail(ErrorKind::Runtime, arg_prefix(op, arg) + "is on " + device_name(t.device) +
                                 " but this build of longcat has no CUDA kernels (rebuild with LONGCAT_CUDA=ON)");
#else
  (void)op;
  (void)arg;
  (void)t;
#endif
}

void check_float_dtype(const char* op, const char* arg, const TensorView& t) {
  if (t.device.type == DeviceType::CPU) check_dtype(op, arg, t, {DType::BFloat16, DType::Float32});
  else check_dtype(op, arg, t, {DType::BFloat16, DType::Float16, DType::Float32});
}

void check_aux(const char* op, const char* arg, const TensorView& t, DType dtype,
               std::initializer_list<int64_t> shape, const char* what, const char* ref_arg,
               const TensorView& ref) {
  check_dtype(op, arg, t, {dtype});
  check_ndim(op, arg, t, static_cast<int>(shape.size()));
  int d = 0;
  for (int64_t s : shape) check_size(op, arg, t, d++, s, what);
  check_contiguous(op, arg, t);
  check_same_device(op, arg, t, ref_arg, ref);
}

int64_t row_stride(const char* op, const char* arg, const TensorView& t) {
  check_last_dim_contiguous(op, arg, t);
  if (t.ndim <= 1) return t.ndim == 1 ? t.shape[0] : 1;
  // Walk the leading dims from the innermost outwards: each must step by the size of the dims
  // inside it, so that row i starts at i * stride.
  int64_t stride = -1, span = 1;
  for (int i = t.ndim - 2; i >= 0; --i) {
    if (t.shape[i] == 1) continue;
    if (stride < 0) stride = t.strides[i];
    else if (t.strides[i] != stride * span)
      fail(ErrorKind::Value, arg_prefix(op, arg) + "must have leading dimensions that flatten to one row "
                                 "stride (call .contiguous()), got shape " + shape_str(t));
    span *= t.shape[i];
  }
  if (stride < 0) stride = t.shape[t.ndim - 1];
  if (stride < t.shape[t.ndim - 1] && t.numel() > t.shape[t.ndim - 1])
    fail(ErrorKind::Value, arg_prefix(op, arg) + "has overlapping rows (row stride " +
                               std::to_string(stride) + " < row length " +
                               std::to_string(t.shape[t.ndim - 1]) + ")");
  return stride;
}

}  // namespace longcat
