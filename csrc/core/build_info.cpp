// What this build contains (generated build_config.h) and what the CUDA runtime sees.
#include "longcat/build_config.h"
#include "longcat/runtime.h"

#if defined(LONGCAT_WITH_CUDA_RUNTIME)
#include <cuda_runtime_api.h>
#endif

namespace longcat {

bool built_with_cuda() { return std::string(LONGCAT_WITH_CUDA_STR) == "ON"; }

std::vector<std::pair<std::string, std::string>> build_info() {
  const bool cuda = built_with_cuda();
  return {
      {"version", LONGCAT_VERSION},
      {"cuda", cuda ? "on" : "off"},
      {"cuda_archs", cuda ? LONGCAT_CUDA_ARCHS : ""},
      {"cuda_compiler", cuda ? LONGCAT_CUDA_COMPILER_VERSION : ""},
      {"cutlass", cuda ? LONGCAT_CUTLASS_VERSION : "not needed (CPU-only build)"},
      {"nccl", cuda ? LONGCAT_NCCL_VERSION : "not needed (CPU-only build)"},
      {"cxx_compiler", LONGCAT_CXX_COMPILER},
      {"build_type", LONGCAT_BUILD_TYPE},
      {"cpu_isa_levels_built", LONGCAT_ISA_LEVELS_BUILT},
  };
}

int cuda_device_count(std::string* error) {
#if defined(LONGCAT_WITH_CUDA_RUNTIME)
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    if (error) *error = cudaGetErrorString(e);
    return 0;
  }
  return n;
#else
  if (error) *error = "built without CUDA";
  return -1;
#endif
}

}  // namespace longcat
