// Argument checks behind every op's error messages (internal; the one copy the API files use).
// Each throws longcat::Error naming the op, the argument, what was expected and what came, e.g.
// "rms_norm: argument 'weight' must have size 4096 in dimension 0 (...), got 4095".
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "longcat/common.h"

namespace longcat {

// "op: argument 'arg' ", the start of every message about one argument.
std::string arg_prefix(const char* op, const char* arg);

// Every TensorView an op receives passes this first: sizes >= 0, a data pointer when it has
// elements, no negative stride on a dim that has more than one element (e.g. a flipped numpy
// view), element count and byte span that fit int64. What each kernel needs beyond that (contiguity, one row stride) is checked after.
void check_view(const char* op, const char* arg, const TensorView& t);
struct NamedView {
  const char* name;
  const TensorView* view;
};
void check_views(const char* op, std::initializer_list<NamedView> views);

// torch's has_internal_overlap / assert_no_partial_overlap for outputs: `out` may not share a
// byte with `in`, except (allow_same) as exactly the same view (in-place use).
void check_no_overlap(const char* op, const char* out_arg, const TensorView& out, const char* in_arg,
                      const TensorView& in, bool allow_same = false);

// A host copy of a small CPU index tensor (int32; contiguous, or 2-d rows with a unit last
// stride), so that what an op validated is what its kernel reads even if the caller's memory
// changes meanwhile (another thread, the GIL released). Empty for CUDA tensors.
std::vector<int32_t> snapshot_int32(const TensorView& t);

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
// No two elements of t share memory (an output written by many threads): with the dims of more
// than one element ordered by stride, each stride exceeds the span of the smaller dims.
void check_no_internal_overlap(const char* op, const char* arg, const TensorView& t);
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
