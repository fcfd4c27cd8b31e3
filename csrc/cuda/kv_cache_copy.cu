// kv_copy_blocks on CUDA (sm_90a): whole pages between a device pool and a pinned host pool, or
// between two device pools. Semantics and the Auto choice: longcat/kv_cache.h; the ids were
// validated on the host (api/kv_cache.cpp) and arrive as runs of consecutive pages.
//
// Three ways to move the pages:
//   Kernel          one launch; each CTA copies a slice of one page with 16-byte loads and
//                   stores; host pages are read or written through their UVA device address
//                   (pinned memory is mapped). Page ids travel as kernel parameters, 1024 pairs
//                   per launch, so nothing is allocated on the device. Best for device <-> device
//                   and for many small scattered host pages, but it occupies SMs.
//   MemcpyBatch     one cudaMemcpyBatchAsync call with one entry per run (CUDA >= 12.8; not on the
//                   legacy default stream): the copy engines, one driver call.
//   MemcpyPerBlock  one cudaMemcpyAsync per run (what vLLM's swap_blocks does): the copy engines,
//                   2-4 us of driver time per call.
#include <cuda_runtime.h>

#include <algorithm>
#include <string>
#include <vector>

#include "core/kv_cache_args.h"
#include "cuda/launch.cuh"
#include "cuda/nvtx.cuh"

namespace longcat::cuda {
namespace {

constexpr int kPairsPerLaunch = 1024;  // 8 KB of ids as a parameter (the limit is 32 KB since CUDA 12.1)
constexpr int kThreads = 256;
constexpr int kVecsPerThread = 4;      // 16-byte vectors per thread per CTA slice

struct PagePairs {
  int32_t src[kPairsPerLaunch];
  int32_t dst[kPairsPerLaunch];
};

// blockIdx.y: the page pair; blockIdx.x: a slice of kThreads * kVecsPerThread vectors of the page.
template <typename V>
__global__ void __launch_bounds__(kThreads) copy_pages_kernel(char* __restrict__ dst, const char* __restrict__ src,
                                                              int64_t page_vecs, const __grid_constant__ PagePairs pairs) {
  const V* s = reinterpret_cast<const V*>(src) + pairs.src[blockIdx.y] * page_vecs;
  V* d = reinterpret_cast<V*>(dst) + pairs.dst[blockIdx.y] * page_vecs;
  const int64_t base = static_cast<int64_t>(blockIdx.x) * kThreads * kVecsPerThread + threadIdx.x;
  V v[kVecsPerThread];
#pragma unroll
  for (int k = 0; k < kVecsPerThread; ++k) {  // all loads first: several reads in flight per thread
    const int64_t i = base + k * kThreads;
    if (i < page_vecs) v[k] = s[i];
  }
#pragma unroll
  for (int k = 0; k < kVecsPerThread; ++k) {
    const int64_t i = base + k * kThreads;
    if (i < page_vecs) d[i] = v[k];
  }
}

// The address a kernel uses for a pool: itself on the device, the mapped address of pinned host
// memory. Pageable host memory cannot be reached asynchronously: an Error(Value) naming the pool.
char* device_address(const void* ptr, const Device& dev, const char* arg) {
  if (dev.type == DeviceType::CUDA) return const_cast<char*>(static_cast<const char*>(ptr));
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, ptr) != cudaSuccess) (void)cudaGetLastError();
  if (attr.type != cudaMemoryTypeHost || attr.devicePointer == nullptr)
    throw Error(ErrorKind::Value, std::string("kv_copy_blocks: argument '") + arg +
                                      "' is host memory that is not pinned; a host pool paired with a CUDA "
                                      "pool must be page-locked (torch: .pin_memory() or pin_memory=True)");
  return static_cast<char*>(attr.devicePointer);
}

void copy_kernel(const KvCopyPlan& p, char* dst, const char* src, cudaStream_t stream) {
  const bool vec16 = reinterpret_cast<uintptr_t>(dst) % 16 == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0 &&
                     p.page_bytes % 16 == 0;
  const int64_t vec_bytes = vec16 ? 16 : 2;  // pages hold 576 * page_size 2- or 4-byte elements
  const int64_t page_vecs = p.page_bytes / vec_bytes;
  const unsigned slices = static_cast<unsigned>((page_vecs + kThreads * kVecsPerThread - 1) / (kThreads * kVecsPerThread));
  for (int64_t i0 = 0; i0 < p.pages; i0 += kPairsPerLaunch) {
    const int n = static_cast<int>(std::min<int64_t>(kPairsPerLaunch, p.pages - i0));
    PagePairs pairs;
    for (int i = 0; i < n; ++i) {
      pairs.src[i] = p.src_ids[i0 + i];
      pairs.dst[i] = p.dst_ids[i0 + i];
    }
    const dim3 grid(slices, static_cast<unsigned>(n));
    if (vec16)
      copy_pages_kernel<int4><<<grid, kThreads, 0, stream>>>(dst, src, page_vecs, pairs);
    else
      copy_pages_kernel<uint16_t><<<grid, kThreads, 0, stream>>>(dst, src, page_vecs, pairs);
    check_launch("kv_copy_blocks");
  }
}

void copy_per_run(const KvCopyPlan& p, cudaStream_t stream) {
  for (int64_t r = 0; r < p.runs; ++r)
    check_cuda(cudaMemcpyAsync(static_cast<char*>(p.dst) + p.run_dst[r] * p.page_bytes,
                               static_cast<const char*>(p.src) + p.run_src[r] * p.page_bytes,
                               p.run_pages[r] * p.page_bytes, cudaMemcpyDefault, stream),
               "kv_copy_blocks: cudaMemcpyAsync");
}

constexpr bool kHaveBatch = CUDART_VERSION >= 12080;

void copy_batch(const KvCopyPlan& p, cudaStream_t stream) {
#if CUDART_VERSION >= 12080
  std::vector<void*> dsts(p.runs);
  std::vector<const void*> srcs(p.runs);
  std::vector<size_t> sizes(p.runs);
  for (int64_t r = 0; r < p.runs; ++r) {
    dsts[r] = static_cast<char*>(p.dst) + p.run_dst[r] * p.page_bytes;
    srcs[r] = static_cast<const char*>(p.src) + p.run_src[r] * p.page_bytes;
    sizes[r] = static_cast<size_t>(p.run_pages[r] * p.page_bytes);
  }
  cudaMemcpyAttributes attr{};
  attr.srcAccessOrder = cudaMemcpySrcAccessOrderStream;  // the source may be written by earlier work on the stream
  attr.flags = cudaMemcpyFlagPreferOverlapWithCompute;
  size_t attr_idx = 0;
#if CUDART_VERSION >= 13000
  check_cuda(cudaMemcpyBatchAsync(dsts.data(), srcs.data(), sizes.data(), p.runs, &attr, &attr_idx, 1, stream),
             "kv_copy_blocks: cudaMemcpyBatchAsync");
#else
  size_t fail_idx = 0;
  check_cuda(cudaMemcpyBatchAsync(dsts.data(), const_cast<void**>(srcs.data()), sizes.data(), p.runs, &attr,
                                  &attr_idx, 1, &fail_idx, stream),
             "kv_copy_blocks: cudaMemcpyBatchAsync");
#endif
#else
  (void)p;
  (void)stream;
#endif
}

}  // namespace

KvCopyMethod kv_copy_blocks(const KvCopyPlan& p, KvCopyMethod method, Stream stream_arg) {
  NvtxRange nvtx("longcat::kv_copy_blocks");
  const Device dev = p.src_device.type == DeviceType::CUDA ? p.src_device : p.dst_device;
  DeviceGuard guard(dev.index);
  // Resolved before anything is queued, so a pageable host pool fails with nothing copied.
  char* dst = device_address(p.dst, p.dst_device, "dst_pool");
  const char* src = device_address(p.src, p.src_device, "src_pool");
  const auto stream = static_cast<cudaStream_t>(stream_arg);
  const bool host_side = p.src_device.type == DeviceType::CPU || p.dst_device.type == DeviceType::CPU;
  if (method == KvCopyMethod::MemcpyBatch && (!kHaveBatch || stream == nullptr))
    throw Error(ErrorKind::Value, std::string("kv_copy_blocks: argument 'method' MemcpyBatch needs ") +
                                      (kHaveBatch ? "a stream other than the legacy default stream (0)"
                                                  : "CUDA >= 12.8 at build time"));
  if (method == KvCopyMethod::Auto) {
    const bool many_small = p.runs >= 64 && p.pages * p.page_bytes < p.runs * (int64_t{64} << 10);
    if (!host_side || many_small)
      method = KvCopyMethod::Kernel;
    else if (kHaveBatch && stream != nullptr && p.runs > 1)
      method = KvCopyMethod::MemcpyBatch;
    else
      method = KvCopyMethod::MemcpyPerBlock;
  }
  if (p.pages == 0) return method;
  NvtxRange range("kv_copy_blocks");
  switch (method) {
    case KvCopyMethod::Kernel: copy_kernel(p, dst, src, stream); break;
    case KvCopyMethod::MemcpyBatch: copy_batch(p, stream); break;
    default: copy_per_run(p, stream); break;
  }
  return method;
}

}  // namespace longcat::cuda
