// KvCopyQueue (longcat/kv_copy_queue.h): chunks of page copies run in order by one worker thread.
// The checks are kv_copy_blocks' own (core/kv_cache_args.h, kv_copy::), run once per transfer at
// submit, so the worker only copies.
#include "longcat/kv_copy_queue.h"

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/checks.h"
#include "core/kv_cache_args.h"
#include "longcat/runtime.h"

namespace longcat {

struct KvCopyQueue::Impl {
  struct Job {
    std::vector<int32_t> src, dst;
    int64_t ticket;
  };

  std::vector<TensorView> src, dst;
  kv_copy::Layers layers;  // the pools' checks: smallest pool per side, layers within one pool
  int copy_threads = 1;
  mutable std::mutex m;
  std::mutex join_m;  // close() from two threads joins once
  std::condition_variable cv_work, cv_done;
  std::deque<Job> jobs;
  std::map<int64_t, std::exception_ptr> errors;
  int64_t submitted = 0, completed = 0;
  int waiters = 0;
  bool closed = false;
  std::thread worker;

  void loop() {
    set_thread_limit(copy_threads);  // this thread only: the copy owns copy_threads cores
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> lk(m);
        cv_work.wait(lk, [&] { return !jobs.empty() || closed; });
        if (jobs.empty()) return;  // closed and drained
        job = std::move(jobs.front());
        jobs.pop_front();
      }
      std::exception_ptr error;
      try {  // every layer of the chunk, checked at submit
        const int64_t n = static_cast<int64_t>(job.src.size());
        for (size_t l = 0; l < src.size(); ++l) kv_copy::copy_cpu(src[l], dst[l], job.src.data(), job.dst.data(), n);
      } catch (...) {  // kept for the chunk's waiters: an exception must not end the worker
        error = std::current_exception();
      }
      bool wake;
      {
        std::lock_guard<std::mutex> lk(m);
        if (error) errors[job.ticket] = error;
        completed = job.ticket;
        wake = waiters > 0;
      }
      if (wake) cv_done.notify_all();  // only when someone waits: no wake-ups for chunks nobody needs yet
    }
  }
};

KvCopyQueue::KvCopyQueue(std::vector<TensorView> src_pools, std::vector<TensorView> dst_pools, KvCopyMethod method,
                         int copy_threads)
    : impl_(std::make_unique<Impl>()) {
  const char* op = "KvCopyQueue";
  const kv_copy::Layers layers = kv_copy::check_layers(op, src_pools, dst_pools, method);
  for (size_t l = 0; l < src_pools.size(); ++l) {
    const std::string s = "src_pools[" + std::to_string(l) + "]", d = "dst_pools[" + std::to_string(l) + "]";
    for (const auto& [pool, name] : {std::pair{&src_pools[l], &s}, std::pair{&dst_pools[l], &d}})
      if (pool->device.type != DeviceType::CPU)
        fail(ErrorKind::Value, arg_prefix(op, name->c_str()) + "must be a CPU tensor (on CUDA a copy stream does "
                                   "this job), got one on " + device_name(pool->device));
  }
  const int prev = thread_limit();  // copy_threads checked by the call the worker makes
  try {
    set_thread_limit(copy_threads);
  } catch (const Error& e) {
    fail(ErrorKind::Value, arg_prefix(op, "copy_threads") + "is out of range (" + e.what() + ")");
  }
  set_thread_limit(prev);
  impl_->copy_threads = copy_threads;
  impl_->layers = layers;
  impl_->src = std::move(src_pools);
  impl_->dst = std::move(dst_pools);
}

KvCopyQueue::~KvCopyQueue() { close(); }

std::vector<int64_t> KvCopyQueue::submit(const TensorView& src_ids, const TensorView& dst_ids, int64_t chunk_pages) {
  const char* op = "KvCopyQueue.submit";
  Impl& q = *impl_;
  const kv_copy::Ids ids = kv_copy::read_ids(op, src_ids, dst_ids);
  if (chunk_pages < 1)
    fail(ErrorKind::Value, arg_prefix(op, "chunk_pages") + "must be >= 1, got " + std::to_string(chunk_pages));
  const int64_t n = static_cast<int64_t>(ids.src.size());
  // kv_copy_blocks' checks for every layer at once: the smallest pool of each side bounds the
  // ids of all, destinations are distinct over the whole transfer, and where a layer copies
  // within one pool, each chunk (one copy) reads no page it writes. Chunks run one after the
  // other, so a page written by one chunk may be read by a later one.
  const kv_copy::Layers& L = q.layers;
  kv_copy::check_ids(op, ids.src.data(), ids.dst.data(), n, 0, L.src_pages, L.src_name.c_str(), L.dst_pages,
                     L.dst_name.c_str(), false);
  if (L.any_same_pool)
    for (int64_t i = 0; i < n; i += chunk_pages)
      kv_copy::check_same_pool_copy(op, ids.src.data() + i, ids.dst.data() + i, std::min(chunk_pages, n - i), i);
  std::vector<int64_t> tickets;
  {
    std::lock_guard<std::mutex> lk(q.m);
    if (q.closed) fail(ErrorKind::Runtime, std::string(op) + ": the queue is closed");
    for (int64_t i = 0; i < n; i += chunk_pages) {
      const int64_t end = std::min(n, i + chunk_pages);
      q.jobs.push_back(Impl::Job{std::vector<int32_t>(ids.src.begin() + i, ids.src.begin() + end),
                                 std::vector<int32_t>(ids.dst.begin() + i, ids.dst.begin() + end), ++q.submitted});
      tickets.push_back(q.submitted);
    }
    if (!q.worker.joinable() && !tickets.empty()) q.worker = std::thread([&q] { q.loop(); });
  }
  q.cv_work.notify_one();
  return tickets;
}

bool KvCopyQueue::done(int64_t ticket) const {
  std::lock_guard<std::mutex> lk(impl_->m);
  return impl_->completed >= ticket;
}

void KvCopyQueue::wait(int64_t ticket) {
  Impl& q = *impl_;
  std::unique_lock<std::mutex> lk(q.m);
  if (ticket < 1 || ticket > q.submitted)
    fail(ErrorKind::Value, "KvCopyQueue.wait: argument 'ticket' must be a ticket of this queue, in [1, " +
                               std::to_string(q.submitted) + "], got " + std::to_string(ticket));
  ++q.waiters;
  q.cv_done.wait(lk, [&] { return q.completed >= ticket; });
  --q.waiters;
  if (auto it = q.errors.find(ticket); it != q.errors.end()) std::rethrow_exception(it->second);
}

void KvCopyQueue::close() {
  Impl& q = *impl_;
  {
    std::lock_guard<std::mutex> lk(q.m);
    q.closed = true;
  }
  q.cv_work.notify_one();
  std::lock_guard<std::mutex> lk(q.join_m);
  if (q.worker.joinable()) q.worker.join();
}

int64_t KvCopyQueue::submitted() const {
  std::lock_guard<std::mutex> lk(impl_->m);
  return impl_->submitted;
}

}  // namespace longcat
