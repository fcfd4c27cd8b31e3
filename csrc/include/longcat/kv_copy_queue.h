// longcat public C++ API: KvCopyQueue, a background thread that moves pages between host pools
// chunk by chunk, so that a caller computes on chunk i while chunk i+1 moves (the report's
// chunk-level overlap of KV transfers with compute). Python's ChunkedCopier runs on it.
//
// One queue copies src_pools[l] -> dst_pools[l] for every layer l, each pool pair as
// kv_copy_blocks (longcat/kv_cache.h). submit() checks a whole transfer against kv_copy_blocks'
// rules (the same checks, run once for the transfer: ids in range of every layer's pool, no
// destination twice, and within each chunk no page both read and written in one pool) and
// queues it in chunks of chunk_pages pages, every layer of a chunk in turn; a refused transfer
// queues nothing. Tickets number the chunks 1, 2, ... in submission order and one worker runs
// them in that order, so chunk t is done once every chunk before it is. The worker starts with
// the first chunk and never calls back into the caller (no interpreter lock to hand over).
//
// The worker's copies run on copy_threads kernel threads (set_thread_limit on the worker;
// 0: the whole pool). One thread is what a copy that overlaps compute wants: a copy spread over
// the pool puts its workers on the cores the compute uses, and two sets of threads time-sharing
// the same cores hide nothing.
//
// Host pools only: on CUDA a copy stream with events does the same job (engine/kv_transfer.py).
// The pools are not owned: their memory must outlive the queue (or its close()).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "longcat/common.h"
#include "longcat/kv_cache.h"

namespace longcat {

class LONGCAT_API KvCopyQueue {
 public:
  // src_pools and dst_pools: the same number (>= 1) of CPU pools, each pair valid for
  // kv_copy_blocks (checked here); method Auto or CpuThreads; copy_threads in [0, 1024].
  // Error(Value) naming the argument otherwise.
  KvCopyQueue(std::vector<TensorView> src_pools, std::vector<TensorView> dst_pools,
              KvCopyMethod method = KvCopyMethod::Auto, int copy_threads = 1);
  ~KvCopyQueue();  // close()
  KvCopyQueue(const KvCopyQueue&) = delete;
  KvCopyQueue& operator=(const KvCopyQueue&) = delete;

  // Queues dst_pools[l][dst_ids[i]] = src_pools[l][src_ids[i]] for every layer l, in chunks of
  // chunk_pages (>= 1) consecutive i; returns the chunks' tickets in order (none for n = 0).
  // src_ids, dst_ids: [n] int32 contiguous CPU tensors, read here (the caller may reuse them
  // once this returns). Error(Value) with nothing queued for a bad transfer, Error(Runtime)
  // after close().
  std::vector<int64_t> submit(const TensorView& src_ids, const TensorView& dst_ids, int64_t chunk_pages);

  bool done(int64_t ticket) const;  // ticket's chunk copied (true for tickets <= 0)
  // Blocks until ticket's chunk is copied and rethrows the error its copy raised, if any (every
  // wait on that ticket does). Error(Value) for a ticket this queue did not return.
  void wait(int64_t ticket);
  // Runs the queued chunks, then stops the worker; later submits fail. Idempotent.
  void close();
  int64_t submitted() const;  // tickets returned so far (the last ticket)

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace longcat
