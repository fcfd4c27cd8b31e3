// TensorView helpers and the argument checks behind every op's error messages.
#include <algorithm>
#include <cstring>
#include <sstream>
#include <utility>
#include <vector>

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
    case DType::Int64: case DType::Float64: return 8;
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
    case DType::Float64: return "float64";
  }
  return "?";
}

std::string device_name(Device d) {
  return d.type == DeviceType::CPU ? std::string("cpu") : "cuda:" + std::to_string(d.index);
}

namespace {
std::string list_str(const int64_t* v, int n) {
  std::ostringstream s;
  s << '[';
  for (int i = 0; i < n; ++i) s << (i ? ", " : "") << v[i];
  s << ']';
  return s.str();
}
}  // namespace

std::string shape_str(const TensorView& t) { return list_str(t.shape, t.ndim); }

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

void check_no_internal_overlap(const char* op, const char* arg, const TensorView& t) {
  if (t.numel() == 0) return;
  // Dims of more than one element, by stride: each must step past all the smaller ones span.
  std::vector<std::pair<int64_t, int64_t>> dims;  // (stride, size)
  for (int d = 0; d < t.ndim; ++d)
    if (t.shape[d] > 1) dims.emplace_back(t.strides[d], t.shape[d]);
  std::sort(dims.begin(), dims.end());
  int64_t span = 0;  // the last element offset the smaller dims reach
  for (auto [stride, size] : dims) {
    if (stride <= span)
      fail(ErrorKind::Value, arg_prefix(op, arg) + "has elements that share memory (shape " + shape_str(t) +
                                 ", strides " + list_str(t.strides, t.ndim) + "); pass an output whose elements are distinct");
    span += (size - 1) * stride;
  }
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

void check_view(const char* op, const char* arg, const TensorView& t) {
  if (t.ndim < 0 || t.ndim > kMaxDims)
    fail(ErrorKind::Value, arg_prefix(op, arg) + "has " + std::to_string(t.ndim) + " dimensions; at most " +
                               std::to_string(kMaxDims) + " are supported");
  // The last element's offset and the element count in 128 bits: a view whose byte span does
  // not fit int64 cannot describe memory a kernel may address.
  __int128 span = 0, count = 1;
  constexpr __int128 kLimit = static_cast<__int128>(INT64_MAX) / 16;
  for (int i = 0; i < t.ndim; ++i) {
    if (t.shape[i] < 0)
      fail(ErrorKind::Value, arg_prefix(op, arg) + "has a negative size in dimension " + std::to_string(i) +
                                 " (shape " + shape_str(t) + ")");
    count *= t.shape[i];
    if (count > kLimit)
      fail(ErrorKind::Value, arg_prefix(op, arg) + "has more elements than the library can address (shape " +
                                 shape_str(t) + ")");
  }
  if (count == 0) return;
  // A view with elements but no memory (e.g. a buffer at address 0) is refused before any read.
  check_nonnull(op, arg, t);
  for (int i = 0; i < t.ndim; ++i) {
    if (t.shape[i] <= 1) continue;  // a stride no element uses
    if (t.strides[i] < 0)
      fail(ErrorKind::Value, arg_prefix(op, arg) + "has a negative stride " + std::to_string(t.strides[i]) +
                                 " in dimension " + std::to_string(i) + " (e.g. a flipped numpy view); "
                                 "pass a copy with non-negative strides");
    span += static_cast<__int128>(t.shape[i] - 1) * t.strides[i];
    if (span > kLimit)
      fail(ErrorKind::Value, arg_prefix(op, arg) + "has strides whose span overflows (stride " +
                                 std::to_string(t.strides[i]) + " in dimension " + std::to_string(i) +
                                 ", shape " + shape_str(t) + ")");
  }
}

void check_views(const char* op, std::initializer_list<NamedView> views) {
  for (const NamedView& v : views) check_view(op, v.name, *v.view);
}

namespace {
// The bytes [begin, end) a view may touch (empty for no element); strides are >= 0 (check_view).
std::pair<uintptr_t, uintptr_t> byte_range(const TensorView& t) {
  if (t.numel() == 0 || t.data == nullptr) return {0, 0};
  int64_t last = 0;
  for (int i = 0; i < t.ndim; ++i)
    if (t.shape[i] > 1) last += (t.shape[i] - 1) * t.strides[i];
  const uintptr_t begin = reinterpret_cast<uintptr_t>(t.data);
  return {begin, begin + static_cast<uintptr_t>((last + 1) * dtype_size(t.dtype))};
}

bool same_view(const TensorView& a, const TensorView& b) {
  if (a.data != b.data || a.dtype != b.dtype || a.ndim != b.ndim) return false;
  for (int i = 0; i < a.ndim; ++i)
    if (a.shape[i] != b.shape[i] || (a.shape[i] > 1 && a.strides[i] != b.strides[i])) return false;
  return true;
}
}  // namespace

void check_no_overlap(const char* op, const char* out_arg, const TensorView& out, const char* in_arg,
                      const TensorView& in, bool allow_same) {
  if (out.device != in.device) return;
  if (allow_same && same_view(out, in)) return;
  const auto [a0, a1] = byte_range(out);
  const auto [b0, b1] = byte_range(in);
  if (a0 < a1 && b0 < b1 && a0 < b1 && b0 < a1)
    fail(ErrorKind::Value, arg_prefix(op, out_arg) + "overlaps '" + in_arg + "' in memory" +
                               (allow_same ? std::string(" without being the same view (in place is allowed "
                                                         "only as exactly '") + in_arg + "')"
                                           : std::string("; pass a separate output")));
}

std::vector<int32_t> snapshot_int32(const TensorView& t) {
  std::vector<int32_t> copy;
  if (t.device.type != DeviceType::CPU || t.numel() == 0) return copy;
  copy.resize(static_cast<size_t>(t.numel()));
  if (t.is_contiguous()) {
    std::memcpy(copy.data(), t.data, copy.size() * sizeof(int32_t));
  } else {  // rows of a 2-d table with a unit last stride (block_table)
    const int64_t cols = t.shape[t.ndim - 1], rows = t.numel() / cols;
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(copy.data() + r * cols, t.ptr<int32_t>() + r * t.strides[0], cols * sizeof(int32_t));
  }
  return copy;
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
