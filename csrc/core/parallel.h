// The CPU kernels' thread pool (internal header).
//
// A small persistent pool of our own rather than OpenMP: torch's CPU wheel carries its own
// OpenMP runtime, and two runtimes in one process oversubscribe the cores.
#pragma once

#include <cstdint>
#include <functional>

namespace longcat::cpu {

// Runs fn(begin, end) over [0, n) in at most num_threads() (capped by the calling thread's
// set_thread_limit) contiguous chunks of at least `grain`
// items each; threads claim chunks, the calling thread first, so a worker that is slow to wake
// (its core busy) leaves its chunk to the caller instead of delaying it. Runs inline when one chunk suffices, when
// called from inside a parallel region, or while another caller holds the pool. The first
// exception thrown by fn is rethrown on the calling thread.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

// The same, but [0, n) is cut into pieces of `grain` items (at most 1024 pieces), each claimed by
// whichever thread is free: a worker that wakes late (its core busy) delays the call by at most
// one piece, not by a thread's share. For items of equal cost that need no per-thread setup
// (kv_copy_blocks' pages). Runs inline when one piece suffices or one thread may be used.
void parallel_for_claimed(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace longcat::cpu
