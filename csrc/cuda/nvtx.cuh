// NVTX ranges around each CUDA entry point, for Nsight Systems / Nsight Compute (internal).
//
// Compiled in from the CUDA toolkit's header-only NVTX3 (nothing to link but libdl, which
// NVTX uses to find the profiler's injection library), and off unless the environment
// variable LONGCAT_NVTX is set to something other than "" or "0" when the library loads:
// then each `NvtxRange` costs one predictable branch on a constant.
//   LONGCAT_NVTX=1 nsys profile -t cuda,nvtx python my_script.py
// shows one "longcat::<op>" range (the name of the torch op) around that op's kernels.
#pragma once

#include <nvtx3/nvToolsExt.h>

#include <cstdlib>
#include <cstring>

namespace longcat::cuda {

inline bool nvtx_requested() {
  const char* v = std::getenv("LONGCAT_NVTX");
  return v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
}

// Read once, when the library is loaded.
inline const bool kNvtxEnabled = nvtx_requested();

// Push a range named `name` (a string literal) for the scope, when LONGCAT_NVTX is on.
struct NvtxRange {
  explicit NvtxRange(const char* name) {
    if (kNvtxEnabled) nvtxRangePushA(name);
  }
  ~NvtxRange() {
    if (kNvtxEnabled) nvtxRangePop();
  }
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};

}  // namespace longcat::cuda
