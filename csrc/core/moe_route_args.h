// MoE kernel arguments after validation, shared by the CPU and CUDA backends (internal).
// Semantics: csrc/include/longcat/moe_route.h.
#pragma once

#include <cstdint>

#include "longcat/common.h"
#include "longcat/moe_route.h"

namespace longcat {

struct MoeRouteArgs {
  int32_t* topk_ids;        // [T, k]
  float* topk_weights;      // [T, k]
  const void* hidden;       // [T, H], row stride hidden_stride
  const float* weight;      // [E, H] contiguous
  const float* bias;        // [E] or nullptr
  int64_t tokens, hidden_size, hidden_stride, experts, top_k;
  float scale;
  MoeScore score;
  bool renormalize;
  DType dtype;              // hidden's
  Device device;
};

struct MoeLayoutArgs {
  int32_t* counts;          // [n_routed]
  int32_t* offsets;         // [n_routed + 1]
  const int32_t* topk_ids;  // [T, k]
  int64_t entries;          // T * k
  int64_t n_routed, align;
  Device device;
};

struct MoeDispatchArgs {
  void* x_perm;             // [R, H] contiguous
  int32_t* row_token;       // [R]
  int32_t* slot_row;        // [T, k]
  const void* x;            // [T, H], row stride x_stride
  const int32_t* topk_ids;  // [T, k]
  const int32_t* counts;    // [n_routed]
  const int32_t* offsets;   // [n_routed + 1]
  int64_t tokens, top_k, hidden, x_stride, rows, n_routed;
  DType dtype;
  Device device;
};

struct MoeCombineArgs {
  void* y;                  // [T, H] contiguous
  const void* expert_out;   // [R, H], row stride expert_out_stride
  const int32_t* slot_row;  // [T, k]
  const int32_t* topk_ids;  // [T, k]
  const float* topk_weights;  // [T, k]
  const void* x;            // [T, H], row stride x_stride
  int64_t tokens, top_k, hidden, rows, expert_out_stride, x_stride, n_routed;
  DType dtype;
  Device device;
};

}  // namespace longcat
