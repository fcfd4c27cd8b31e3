// Host-side launch helpers shared by the CUDA files (internal): the launch-error check and the
// device guard that runs kernels on the tensors' device.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "longcat/common.h"

namespace longcat::cuda {

// A CUDA runtime call's result: Error(Runtime) naming the call when it failed.
inline void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(ErrorKind::Runtime, std::string(what) + " failed: " + cudaGetErrorString(e));
}

inline void check_launch(const char* op) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    throw Error(ErrorKind::Runtime, std::string(op) + ": CUDA launch failed: " + cudaGetErrorString(e));
}

// Launch on the tensors' device, whatever the caller's current device, and restore it. A device
// that cannot be selected is an Error(Runtime) here, before anything is launched on the wrong one.
struct DeviceGuard {
  int prev = 0;
  bool switched = false;
  explicit DeviceGuard(int dev) {
    check_cuda(cudaGetDevice(&prev), "cudaGetDevice");
    if (prev != dev) {
      check_cuda(cudaSetDevice(dev), "cudaSetDevice");
      switched = true;
    }
  }
  // Restoring cannot throw from a destructor; a failure is cleared so that it does not surface
  // as the error of an unrelated later call.
  ~DeviceGuard() {
    if (switched && cudaSetDevice(prev) != cudaSuccess) (void)cudaGetLastError();
  }
};

}  // namespace longcat::cuda
