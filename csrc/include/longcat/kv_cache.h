// longcat public C++ API: the paged latent KV cache of MLA (writes and reads) and the interleaved
// RoPE applied to the rope part of the keys. Cache layout and dims: longcat/mla.h.
#pragma once

#include <cstdint>

#include <vector>

#include "longcat/common.h"
#include "longcat/mla.h"

namespace longcat {

// ---- RoPE ----------------------------------------------------------------------------------
// Interleaved (DeepSeek / LongCat-Flash) rotary embedding on the last dim D (even) of x:
//   theta_i = float(positions[t]) * inv_freq[i],  i in [0, D/2)                 (fp32)
//   a = x[2i], b = x[2i+1];  a' = a cos - b sin;  b' = b cos + a sin   (fp32, one rounding)
//   half_output = true  (transformers' apply_rotary_pos_emb_interleave): out[i] = a', out[i + D/2] = b'
//   half_output = false (rotation in place of the pairs):               out[2i] = a', out[2i+1] = b'
// inv_freq [D/2] float32 contiguous: base^(-2i/D) for plain RoPE (LongCat-Flash: base 1e7), or
// any scaled variant (YaRN, ...) computed by the caller, so results match the caller's tables
// bit for bit. x [T, D] or [T, M, D] (last dim contiguous, float32 / bfloat16, float16 on
// CUDA); out: x's shape and dtype, contiguous, may be x itself (in place) when x is contiguous;
// positions [T] int32 or int64 (>= 0).
LONGCAT_API void rope_interleaved(const TensorView& out, const TensorView& x,
                                  const TensorView& positions, const TensorView& inv_freq,
                                  bool half_output = true, Stream stream = nullptr);

// ---- Cache writes and reads ----------------------------------------------------------------
// mla_append_kv: for each new token t, kv_cache[page, row, 0, :512] = latent[t],
//   kv_cache[page, row, 0, 512:] = rope_k[t] (already rotated), where page =
//   block_table[seq_ids[t], positions[t] / page_size] and row = positions[t] % page_size.
//   latent [T, 512] and rope_k [T, 64] in kv_cache's dtype, last dim contiguous; seq_ids [T] and
//   positions [T] int32. A position whose page index is >= max_pages, a page id outside
//   [0, num_pages) or a seq id outside [0, batch) throws Error(Value) on CPU (dropped on CUDA).
LONGCAT_API void mla_append_kv(const TensorView& kv_cache, const TensorView& latent,
                               const TensorView& rope_k, const TensorView& block_table,
                               const TensorView& seq_ids, const TensorView& positions,
                               Stream stream = nullptr);

// mla_gather: out[cu_seqlens[b] + p] = kv_cache[token p of sequence b], p < cache_seqlens[b];
//   out [cu_seqlens[batch], 576] kv_cache's dtype contiguous; cu_seqlens [batch + 1] int32 the
//   prefix sum of cache_seqlens (checked on CPU).
LONGCAT_API void mla_gather(const TensorView& out, const TensorView& kv_cache,
                            const TensorView& block_table, const TensorView& cache_seqlens,
                            const TensorView& cu_seqlens, Stream stream = nullptr);

// ---- Block copies between pools (swapping, disaggregation) ----------------------------------
// How kv_copy_blocks moves pages. Auto picks per call (below); the others force one CUDA path,
// so that benchmarks can compare them. Host -> host copies always run on the CPU threads.
enum class KvCopyMethod : int32_t {
  Auto = 0,
  CpuThreads = 1,      // host <-> host: the CPU thread pool, non-temporal stores from 256 KiB a call
  Kernel = 2,          // CUDA: one SM-driven copy kernel over all pages (pinned host memory via UVA)
  MemcpyBatch = 3,     // CUDA: one cudaMemcpyBatchAsync over the runs of pages (CUDA >= 12.8)
  MemcpyPerBlock = 4,  // CUDA: one cudaMemcpyAsync per run of consecutive pages (vLLM swap_blocks)
};

// kv_copy_blocks: dst_pool[dst_ids[i]] = src_pool[src_ids[i]] for every i, whole pages.
//   src_pool [src_pages, page_size, 1, 576] and dst_pool [dst_pages, page_size, 1, 576]:
//   contiguous, the same dtype (float32, bfloat16 or float16, on any device) and page_size, page
//   counts free (a small device pool and a large host pool). Each pool is on the CPU or on a
//   CUDA device; a host pool paired with a CUDA pool must be pinned (page-locked) memory, two
//   CUDA pools must share a device.
//   src_ids, dst_ids [n] int32, contiguous, on the CPU (they are read on the host to validate,
//   coalesce and plan). Every id is in range of its pool, no destination repeats; a source may
//   repeat; when both pools are the same memory, no page is both a source and a destination
//   (the copies run in parallel, so that would be a race), and pools that share memory
//   partially are refused. Everything is checked before the first byte moves: an error leaves
//   dst_pool untouched. Pages not named are never read or written.
//   Runs on `stream` when a pool is on CUDA (asynchronous: the caller synchronises), else on the
//   calling thread with the CPU pool. Returns the method used. KvCopyQueue
//   (longcat/kv_copy_queue.h) runs these copies on a background thread, chunk by chunk.
//   CUDA choice (Auto): device <-> device uses the kernel (HBM-bound, one launch for any n);
//   host <-> device uses DMA (copy engines leave the SMs to the model's kernels, and vLLM's
//   measurements show DMA ahead end to end): one batched call where the runtime has it and the
//   stream is not the legacy default stream (which cudaMemcpyBatchAsync refuses), else
//   per-run cudaMemcpyAsync, except for many short runs (>= 64 runs averaging under 64 KiB),
//   where per-call overhead (~2-4 us each) dominates and the kernel wins.
LONGCAT_API KvCopyMethod kv_copy_blocks(const TensorView& src_pool, const TensorView& dst_pool,
                                        const TensorView& src_ids, const TensorView& dst_ids,
                                        Stream stream = nullptr, KvCopyMethod method = KvCopyMethod::Auto);

// kv_copy_blocks_layers: kv_copy_blocks(src_pools[l], dst_pools[l], src_ids, dst_ids) for every
// layer l in one call (one GIL release for a chunk of every layer). The same number (>= 1) of
// pools on each side, each pair valid for kv_copy_blocks (page counts may differ per layer: the
// ids are bounded by the smallest pool of each side), every pool of a side on one device. Every
// layer and id is checked before the first layer moves.
LONGCAT_API void kv_copy_blocks_layers(const std::vector<TensorView>& src_pools,
                                       const std::vector<TensorView>& dst_pools, const TensorView& src_ids,
                                       const TensorView& dst_ids, Stream stream = nullptr,
                                       KvCopyMethod method = KvCopyMethod::Auto);

}  // namespace longcat
