// RMSNorm kernel arguments after validation, shared by the CPU and CUDA backends (internal).
#pragma once

#include <cstdint>

#include "longcat/common.h"

namespace longcat {

struct NormArgs {
  void* out;
  void* residual_out;     // fused_add_rms_norm only; nullptr for rms_norm
  const void* x;
  const void* residual;   // fused_add_rms_norm only
  const void* weight;
  int64_t rows, hidden;
  int64_t out_stride, residual_out_stride, x_stride, residual_stride;  // row strides, elements
  float eps;
  DType dtype;
  Device device;
};

struct NormBackwardArgs {
  void* grad_x;
  float* grad_w_partial;  // [partials, hidden], contiguous
  const void* grad_out;
  const void* x;
  const void* weight;
  int64_t rows, hidden, partials, rows_per_partial;
  int64_t grad_x_stride, grad_out_stride, x_stride;  // row strides, elements
  float eps;
  DType dtype;
  Device device;
};

}  // namespace longcat
