// longcat public C++ API: what the library was built with and what it runs on.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "longcat/common.h"

namespace longcat {

// CPU instruction-set levels, lowest to highest. Each CPU kernel is compiled once per level
// (see cmake/LongcatISA.cmake) and the highest level <= the active one runs.
enum class CpuIsa : int { Scalar = 0, AVX2 = 1, AVX512 = 2, AVX512_BF16 = 3, AMX = 4 };

LONGCAT_API const char* cpu_isa_name(CpuIsa isa);   // "scalar", "avx2", "avx512", "avx512bf16", "amx"
LONGCAT_API CpuIsa parse_cpu_isa(const std::string& name);  // throws Error(Value) for unknown names
LONGCAT_API CpuIsa cpu_isa_detected();  // the best level this CPU and OS support
// The level kernels use: the detected one, or lower if forced by the environment variable
// LONGCAT_CPU_ISA (read once) or by set_cpu_isa().
LONGCAT_API CpuIsa cpu_isa_active();
// Forces a level for testing/benchmarking each path. Throws Error(Value) if the CPU lacks it.
LONGCAT_API void set_cpu_isa(CpuIsa isa);

// Threads used by CPU kernels (the caller's thread included). Default: LONGCAT_NUM_THREADS, or
// the CPUs this process may run on.
LONGCAT_API int num_threads();
// n in [1, 1024], else Error(Value). The new threads start here: if the OS refuses them (thread
// or address-space limits) Error(Runtime) is thrown and the previous count and pool stay.
LONGCAT_API void set_num_threads(int n);
// A cap on the threads of kernels called from the calling thread only (0: none, the default;
// else n in [1, 1024], else Error(Value)). A background copy thread sets 1 so that it owns one
// core while the other threads compute, instead of pulling the shared pool's workers onto
// their cores (engine/kv_transfer.py).
LONGCAT_API void set_thread_limit(int n);
LONGCAT_API int thread_limit();  // the calling thread's cap, 0 if none
// The CPU's measured arithmetic peak in GFLOP/s with all kernel threads, for the active ISA copy
// and one instruction mix: "fma" (fp32 FMA at the copy's vector width) or "bf16dot"
// (vdpbf16ps; needs avx512bf16). The compute roof of the benchmarks' rooflines.
LONGCAT_API double cpu_peak_gflops(const std::string& mix);

// Build configuration as key/value pairs: version, cuda, cuda_archs, cutlass, nccl, ...
LONGCAT_API std::vector<std::pair<std::string, std::string>> build_info();
LONGCAT_API bool built_with_cuda();
// CUDA devices the runtime sees: >= 0, or -1 when built without CUDA. `error` receives the
// runtime's message when it reports none (e.g. no driver).
LONGCAT_API int cuda_device_count(std::string* error = nullptr);

}  // namespace longcat
