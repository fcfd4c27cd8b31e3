// Measured arithmetic peak of this CPU for the benchmarks' compute roofs (peak_kernels.inc).
#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "cpu/isa_dispatch.h"
#include "core/parallel.h"
#include "longcat/runtime.h"

namespace longcat {
namespace cpu {
LONGCAT_DECLARE_ISA_FN(void, peak_loop, int, int64_t, float*, double*)
}  // namespace cpu

double cpu_peak_gflops(const std::string& mix) {
  int kind = -1;
  if (mix == "fma") kind = 0;
  else if (mix == "bf16dot") kind = 1;
  else fail(ErrorKind::Value, "cpu_peak_gflops: argument 'mix' must be 'fma' or 'bf16dot', got '" + mix + "'");
  if (kind == 1 && cpu_isa_active() < CpuIsa::AVX512_BF16)
    fail(ErrorKind::Value, std::string("cpu_peak_gflops: mix 'bf16dot' (vdpbf16ps) needs the avx512bf16 ISA level, "
                                       "active: '") + cpu_isa_name(cpu_isa_active()) + "'");
  // Every kernel thread runs the loop at once; the best of 20 rounds of ~5 ms (at 3 GHz): the
  // best round is the one least disturbed by other processes.
  const int threads = num_threads();
  std::vector<float> sink(static_cast<size_t>(threads));
  std::vector<double> flops(static_cast<size_t>(threads));
  const int64_t iters = int64_t{1} << 20;
  double best = 0;
  for (int round = 0; round < 20; ++round) {
    const auto t0 = std::chrono::steady_clock::now();
    cpu::parallel_for(threads, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) LONGCAT_ISA_CALL(peak_loop, kind, iters, &sink[i], &flops[i]);
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double total = 0;
    for (double f : flops) total += f;
    best = std::max(best, total / s / 1e9);
  }
  return best;
}

}  // namespace longcat
