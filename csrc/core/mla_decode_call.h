// A checked mla_decode call, split from its launch (internal). mla_decode_layer prepares its
// attention call before it appends to the cache, so a bad plan or page id is refused while the
// cache is still untouched; mla_decode prepares and launches at once.
#pragma once

#include <cstdint>
#include <vector>

#include "core/mla_args.h"
#include "cpu/isa_dispatch.h"
#include "longcat/mla.h"

namespace longcat {

struct MlaDecodeCall {
  MlaDecodeArgs args{};
  // CPU: the index inputs as they were checked; the kernel reads these copies, never the
  // caller's tensors (which another thread may change after the check).
  std::vector<int32_t> lens, table, plan;
};

// Every check of mla_decode (longcat/mla.h), on the CPU also of the index values (page ids,
// lengths, the plan). Throws Error naming `op` and the argument; reads no key, writes nothing.
MlaDecodeCall mla_decode_prepare(const char* op, const TensorView& out, const TensorView& lse,
                                 const TensorView& q, const TensorView& kv_cache,
                                 const TensorView& block_table, const TensorView& cache_seqlens,
                                 int64_t head_dim_v, double softmax_scale, bool causal,
                                 const TensorView& metadata, const TensorView& workspace, int64_t num_workers,
                                 const SsaWindow* window);

// Runs a prepared call: the keys are read now (after whatever the caller wrote to the cache
// since mla_decode_prepare), the index values are the checked copies.
void mla_decode_launch(const MlaDecodeCall& call, Stream stream, CpuCopy copy);

}  // namespace longcat
