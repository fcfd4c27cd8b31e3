// Argument checks behind every op's error messages (internal; the one copy the API files use).
// Each throws longcat::Error naming the op, the argument, what was expected and what came, e.g.
// "rms_norm: argument 'weight' must have size 4096 in dimension 0 (...), got 4095".
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>

#include "longcat/common.h"

namespace longcat {

// "op: argument 'arg' ", the start of every message about one argument.
std::string arg_prefix(const char* op, const char* arg);

void check_dtype(const char* op, const char* arg, const TensorView& t, std::initializer_list<DType> allowed);
void check_same_dtype(const char* op, const char* arg, const TensorView& t, const char* ref_arg,
                      const TensorView& ref);
void check_ndim(const char* op, const char* arg, const TensorView& t, int ndim);
void check_min_ndim(const char* op, const char* arg, const TensorView& t, int ndim);
void check_size(const char* op, const char* arg, const TensorView& t, int dim, int64_t expected,
                const char* what);
void check_same_shape(const char* op, const char* arg, const TensorView& t, const char* ref_arg,
                      const TensorView& ref);
void check_contiguous(const char* op, const char* arg, const TensorView& t);
void check_last_dim_contiguous(const char* op, const char* arg, const TensorView& t);
void check_same_device(const char* op, const char* arg, const TensorView& t, const char* ref_arg,
                       const TensorView& ref);
void check_nonnull(const char* op, const char* arg, const TensorView& t);
// A CUDA tensor given to a build without CUDA kernels -> Error(Runtime) naming the argument.
void check_cuda_built(const char* op, const char* arg, const TensorView& t);

// The floating dtypes activations may have: float32 / bfloat16 on CPU, float16 too on CUDA.
void check_float_dtype(const char* op, const char* arg, const TensorView& t);

// An index or auxiliary tensor: exactly `dtype` and `shape`, contiguous, on ref's device.
void check_aux(const char* op, const char* arg, const TensorView& t, DType dtype,
               std::initializer_list<int64_t> shape, const char* what, const char* ref_arg,
               const TensorView& ref);

// For ops over rows of the last dimension: the leading dimensions of `t` must collapse into a
// single row stride (true for contiguous tensors and for column slices like x[:, :512]).
// Returns that stride in elements; throws naming `arg` otherwise.
int64_t row_stride(const char* op, const char* arg, const TensorView& t);

}  // namespace longcat
