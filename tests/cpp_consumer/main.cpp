// Uses longcat's C++ API with no framework: RMSNorm over a 3 x 8 float32 CPU buffer, then a
// deliberate argument error. Output, one item per line (tests/test_cpp_consumer.py parses it):
//   version=<LONGCAT_VERSION>
//   cuda=<on|off>
//   y <row> <col> <value>       24 lines, the RMSNorm result
//   error=<message>             the longcat::Error raised for a weight of the wrong size
//   kvq_tickets=<t1,t2,...>     KvCopyQueue: the tickets of a 5-page transfer in chunks of 2
//   kvq <layer> <page> <sum>    every destination page's sum after the queue ran (2 layers)
//   kvq_error=<message>         the longcat::Error submit raises for a repeated destination
#include <longcat/longcat.h>

#include <cstdint>
#include <cstdio>
#include <string>
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

longcat::TensorView cpu_i32(int32_t* data, int64_t n) {
  longcat::TensorView t;
  t.data = data;
  t.dtype = longcat::DType::Int32;
  t.ndim = 1;
  t.shape[0] = n;
  t.strides[0] = 1;
  t.device = {longcat::DeviceType::CPU, 0};
  return t;
}

// KvCopyQueue: pages of two layers' pools (6 source pages, 8 destination pages of 2 rows),
// moved in chunks by the queue's worker. Source element e of page p in layer l holds
// l * 10000 + p * 100 + e % 97, destinations start at -1 (tests/test_cpp_consumer.py checks the
// sums).
int kv_copy_queue_demo() {
  constexpr int kLayers = 2, kSrcPages = 6, kDstPages = 8, kPageSize = 2, kDim = 576;
  constexpr int64_t kPage = int64_t{kPageSize} * kDim;
  std::vector<std::vector<float>> src(kLayers, std::vector<float>(kSrcPages * kPage)),
      dst(kLayers, std::vector<float>(kDstPages * kPage, -1.f));
  std::vector<longcat::TensorView> src_pools, dst_pools;
  for (int l = 0; l < kLayers; ++l) {
    for (int p = 0; p < kSrcPages; ++p)
      for (int64_t e = 0; e < kPage; ++e) src[l][p * kPage + e] = static_cast<float>(l * 10000 + p * 100 + e % 97);
    src_pools.push_back(cpu_f32(src[l].data(), {kSrcPages, kPageSize, 1, kDim}));
    dst_pools.push_back(cpu_f32(dst[l].data(), {kDstPages, kPageSize, 1, kDim}));
  }
  std::vector<int32_t> s = {5, 0, 3, 3, 1}, d = {7, 2, 0, 4, 1};
  longcat::KvCopyQueue queue(src_pools, dst_pools);
  std::vector<int64_t> tickets;
  try {
    tickets = queue.submit(cpu_i32(s.data(), 5), cpu_i32(d.data(), 5), 2);
    for (int64_t t : tickets) queue.wait(t);
  } catch (const longcat::Error& e) {
    std::printf("unexpected error=%s\n", e.what());
    return 1;
  }
  std::string list;
  for (int64_t t : tickets) list += (list.empty() ? "" : ",") + std::to_string(t);
  std::printf("kvq_tickets=%s\n", list.c_str());
  for (int l = 0; l < kLayers; ++l)
    for (int p = 0; p < kDstPages; ++p) {
      double sum = 0;
      for (int64_t e = 0; e < kPage; ++e) sum += dst[l][p * kPage + e];
      std::printf("kvq %d %d %.1f\n", l, p, sum);
    }
  std::vector<int32_t> rs = {0, 1}, rd = {6, 6};
  try {
    queue.submit(cpu_i32(rs.data(), 2), cpu_i32(rd.data(), 2), 1);
    std::printf("kvq_error=<none raised>\n");
    return 1;
  } catch (const longcat::Error& e) {
    std::printf("kvq_error=%s\n", e.what());
    if (e.kind() != longcat::ErrorKind::Value) return 1;
  }
  queue.close();
  return 0;
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
  return kv_copy_queue_demo();
}
