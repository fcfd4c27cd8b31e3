// Host-side launch helpers shared by the CUDA files (internal): the launch-error check and the
// device guard that runs kernels on the tensors' device.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "longcat/common.h"

namespace longcat::cuda {

inline void check_launch(const char* op) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    throw Error(ErrorKind::Runtime, std::string(op) + ": CUDA launch failed: " + cudaGetErrorString(e));
}

// Launch on the tensors' device, whatever the caller's current device, and restore it.
struct DeviceGuard {
  int prev = 0;
  explicit DeviceGuard(int dev) {
    cudaGetDevice(&prev);
    if (prev != dev) cudaSetDevice(dev);
  }
  ~DeviceGuard() { cudaSetDevice(prev); }
};

}  // namespace longcat::cuda
