// Uses longcat's C++ API with no framework: RMSNorm over a 3 x 8 float32 CPU buffer, then a
// deliberate argument error. Output, one item per line (tests/test_cpp_consumer.py parses it):
//   version=<LONGCAT_VERSION>
//   cuda=<on|off>
//   y <row> <col> <value>       24 lines, the RMSNorm result
//   error=<message>             the longcat::Error raised for a weight of the wrong size
#include <longcat/longcat.h>

#include <cstdio>
#include <vector>

namespace {

longcat::TensorView cpu_f32(float* data, std::initializer_list<int64_t> shape) {
  longcat::TensorView t;
  t.data = data;
  t.dtype = longcat::DType::Float32;
  t.ndim = static_cast<int>(shape.size());
  int i = 0;
  for (int64_t s : shape) t.shape[i++] = s;
  int64_t stride = 1;  // C order, in elements
  for (int d = t.ndim - 1; d >= 0; --d) {
    t.strides[d] = stride;
    stride *= t.shape[d];
  }
  t.device = {longcat::DeviceType::CPU, 0};
  return t;
}

}  // namespace

int main() {
  constexpr int kRows = 3, kCols = 8;
  std::vector<float> x(kRows * kCols), w(kCols), y(kRows * kCols, 0.f);
  for (int r = 0; r < kRows; ++r)
    for (int c = 0; c < kCols; ++c) x[r * kCols + c] = 0.25f * static_cast<float>(r * kCols + c) - 2.5f;
  for (int c = 0; c < kCols; ++c) w[c] = 0.5f + 0.125f * static_cast<float>(c);

  std::printf("version=%s\n", LONGCAT_VERSION);
  std::printf("cuda=%s\n", longcat::built_with_cuda() ? "on" : "off");

  try {
    longcat::rms_norm(cpu_f32(y.data(), {kRows, kCols}), cpu_f32(x.data(), {kRows, kCols}),
                      cpu_f32(w.data(), {kCols}), 1e-6);
  } catch (const longcat::Error& e) {
    std::printf("unexpected error=%s\n", e.what());
    return 1;
  }
  for (int r = 0; r < kRows; ++r)
    for (int c = 0; c < kCols; ++c) std::printf("y %d %d %.9g\n", r, c, y[r * kCols + c]);

  // A weight of 7 elements for a hidden size of 8: the library throws longcat::Error (kind Value).
  try {
    longcat::rms_norm(cpu_f32(y.data(), {kRows, kCols}), cpu_f32(x.data(), {kRows, kCols}),
                      cpu_f32(w.data(), {kCols - 1}), 1e-6);
    std::printf("error=<none raised>\n");
    return 1;
  } catch (const longcat::Error& e) {
    std::printf("error=%s\n", e.what());
    if (e.kind() != longcat::ErrorKind::Value) return 1;
  }
  return 0;
}
