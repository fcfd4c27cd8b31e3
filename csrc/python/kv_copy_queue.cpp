// longcat._C.KvCopyQueue: the CPU worker of engine/kv_transfer.py's ChunkedCopier, in C++.
//
// A worker written in Python takes the GIL twice per chunk (to run the copy's wrapper and to
// complete the chunk's event), and each time the thread that computes may be the one kept
// waiting for it: the hand-offs are the part of a transfer that overlap cannot hide. This
// worker is a C++ thread that never touches the interpreter: the caller validates the pools
// once (here) and the ids of a whole transfer once (ChunkedCopier), submits every chunk in one
// call, and waits on a chunk's ticket with the GIL released.
//
// Tickets number the chunks 1, 2, ... in submission order; one worker runs them in that order,
// so "chunk t is done" is "completed >= t". submit checks what can be checked for the whole
// transfer (ids in range, distinct destinations); what only the copy checks (a page both read
// and written when the two sides are the same pools) fails its chunk: the error stays with the
// chunk's ticket, raised by every wait on it, and the chunks after it still run.
#include <nanobind/nanobind.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "longcat/kv_cache.h"
#include "longcat/runtime.h"
#include "python/convert.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace longcat::python {
namespace {

class KvCopyQueue {
 public:
  // The pools are kept alive here (arrays) and read by the worker through plain views.
  KvCopyQueue(const std::vector<Array>& src_pools, const std::vector<Array>& dst_pools, int method,
              int copy_threads)
      : src_arrays_(src_pools), dst_arrays_(dst_pools), method_(static_cast<KvCopyMethod>(method)),
        copy_threads_(copy_threads) {
    const char* op = "KvCopyQueue";
    if (src_pools.empty() || src_pools.size() != dst_pools.size())
      fail(ErrorKind::Value, std::string(op) + ": arguments 'src_pools' and 'dst_pools' must hold the same number "
                                 "(>= 1) of pools, got " + std::to_string(src_pools.size()) + " and " +
                                 std::to_string(dst_pools.size()));
    const int prev = thread_limit();  // copy_threads checked now by the function the worker calls
    try {
      set_thread_limit(copy_threads);
    } catch (const Error& e) {
      fail(ErrorKind::Value, std::string(op) + ": argument 'copy_threads' is out of range (" + e.what() + ")");
    }
    set_thread_limit(prev);
    for (size_t l = 0; l < src_pools.size(); ++l) {
      src_.push_back(to_view(src_pools[l], op, "src_pools"));
      dst_.push_back(to_view(dst_pools[l], op, "dst_pools"));
    }
    // Every layer's pools, dtypes and method checked now, by a copy of nothing: a job can then
    // fail only on its ids, which the caller checks for the whole transfer.
    int32_t none = 0;
    TensorView empty;
    empty.data = &none;
    empty.dtype = DType::Int32;
    empty.ndim = 1;
    empty.strides[0] = 1;
    empty.device = {DeviceType::CPU, 0};
    for (size_t l = 0; l < src_.size(); ++l) {
      if (src_[l].device.type != DeviceType::CPU || dst_[l].device.type != DeviceType::CPU)
        fail(ErrorKind::Value, std::string(op) + ": pools must be CPU tensors (a CUDA copier uses a copy stream), "
                                   "layer " + std::to_string(l) + " is on " +
                                   device_name(src_[l].device.type != DeviceType::CPU ? src_[l].device
                                                                                        : dst_[l].device));
      kv_copy_blocks(src_[l], dst_[l], empty, empty, nullptr, method_);
    }
  }

  ~KvCopyQueue() { close(); }

  // Checks the whole transfer (one destination per source, every id in range of every layer's
  // pool, no destination twice), then queues it in chunks of chunk_pages; returns the chunks'
  // tickets, in order. A bad transfer raises here with nothing queued.
  std::vector<int64_t> submit(const std::vector<int64_t>& src_ids, const std::vector<int64_t>& dst_ids,
                              int64_t chunk_pages) {
    const char* op = "KvCopyQueue.submit";
    const int64_t n = static_cast<int64_t>(src_ids.size());
    if (static_cast<int64_t>(dst_ids.size()) != n)
      fail(ErrorKind::Value, std::string(op) + ": argument 'dst_ids' must have one id per source (" +
                                 std::to_string(n) + "), got " + std::to_string(dst_ids.size()));
    if (chunk_pages < 1)
      fail(ErrorKind::Value, std::string(op) + ": argument 'chunk_pages' must be >= 1, got " +
                                 std::to_string(chunk_pages));
    check_range(op, "src_ids", src_ids, src_, "src_pools");
    check_range(op, "dst_ids", dst_ids, dst_, "dst_pools");
    std::vector<std::pair<int64_t, int64_t>> w(static_cast<size_t>(n));  // (page, index), sorted
    for (int64_t i = 0; i < n; ++i) w[i] = {dst_ids[i], i};
    std::sort(w.begin(), w.end());
    for (int64_t k = 1; k < n; ++k)
      if (w[k].first == w[k - 1].first)
        fail(ErrorKind::Value, std::string(op) + ": argument 'dst_ids' must not repeat a page; page " +
                                   std::to_string(w[k].first) + " appears at indices " + std::to_string(w[k - 1].second) +
                                   " and " + std::to_string(w[k].second));
    std::vector<int64_t> tickets;
    {
      std::lock_guard<std::mutex> lk(m_);
      if (closed_) fail(ErrorKind::Runtime, std::string(op) + ": the queue is closed");
      for (int64_t i = 0; i < n; i += chunk_pages) {
        const int64_t end = std::min(n, i + chunk_pages);
        jobs_.push_back(Job{std::vector<int32_t>(src_ids.begin() + i, src_ids.begin() + end),
                            std::vector<int32_t>(dst_ids.begin() + i, dst_ids.begin() + end), ++submitted_});
        tickets.push_back(submitted_);
      }
      if (!worker_.joinable() && !tickets.empty()) worker_ = std::thread([this] { loop(); });
    }
    cv_work_.notify_one();
    return tickets;
  }

  bool done(int64_t ticket) {
    std::lock_guard<std::mutex> lk(m_);
    return completed_ >= ticket;
  }

  // Blocks (GIL released by the binding) until the chunk is copied; rethrows its error.
  void wait(int64_t ticket) {
    std::unique_lock<std::mutex> lk(m_);
    if (ticket < 1 || ticket > submitted_)
      fail(ErrorKind::Value, "KvCopyQueue.wait: argument 'ticket' must be a ticket of this queue, in [1, " +
                                 std::to_string(submitted_) + "], got " + std::to_string(ticket));
    ++waiters_;
    cv_done_.wait(lk, [&] { return completed_ >= ticket; });
    --waiters_;
    if (auto it = errors_.find(ticket); it != errors_.end()) std::rethrow_exception(it->second);
  }

  // Runs the queued chunks, then stops the worker (idempotent; GIL released by the binding).
  void close() {
    {
      std::lock_guard<std::mutex> lk(m_);
      closed_ = true;
    }
    cv_work_.notify_one();
    if (worker_.joinable()) worker_.join();
  }

 private:
  struct Job {
    std::vector<int32_t> src, dst;
    int64_t ticket;
  };

  // Every id in [0, pages) of every layer's pool.
  static void check_range(const char* op, const char* arg, const std::vector<int64_t>& ids,
                          const std::vector<TensorView>& pools, const char* pools_arg) {
    int64_t pages = pools[0].shape[0];
    size_t layer = 0;
    for (size_t l = 1; l < pools.size(); ++l)
      if (pools[l].shape[0] < pages) pages = pools[l].shape[0], layer = l;
    for (size_t i = 0; i < ids.size(); ++i)
      if (ids[i] < 0 || ids[i] >= pages)
        fail(ErrorKind::Value, std::string(op) + ": argument '" + arg + "' must hold page ids in [0, " +
                                   std::to_string(pages) + ") (" + pools_arg + "[" + std::to_string(layer) +
                                   "].shape[0]), got " + std::to_string(ids[i]) + " at index " + std::to_string(i));
  }

  static TensorView ids_view(std::vector<int32_t>& ids) {
    TensorView v;
    v.data = ids.data();
    v.dtype = DType::Int32;
    v.ndim = 1;
    v.shape[0] = static_cast<int64_t>(ids.size());
    v.strides[0] = 1;
    v.device = {DeviceType::CPU, 0};
    return v;
  }

  void loop() {
    set_thread_limit(copy_threads_);  // this thread only: the copy owns copy_threads cores
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> lk(m_);
        cv_work_.wait(lk, [&] { return !jobs_.empty() || closed_; });
        if (jobs_.empty()) return;  // closed and drained
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      std::exception_ptr error;
      try {  // every layer of the chunk
        const TensorView s = ids_view(job.src), d = ids_view(job.dst);
        for (size_t l = 0; l < src_.size(); ++l) kv_copy_blocks(src_[l], dst_[l], s, d, nullptr, method_);
      } catch (...) {
        error = std::current_exception();
      }
      bool wake;
      {
        std::lock_guard<std::mutex> lk(m_);
        if (error) errors_[job.ticket] = error;
        completed_ = job.ticket;
        wake = waiters_ > 0;
      }
      if (wake) cv_done_.notify_all();  // only when someone waits: no wake-ups for chunks nobody needs yet
    }
  }

  std::vector<Array> src_arrays_, dst_arrays_;  // owners of the memory src_ / dst_ view
  std::vector<TensorView> src_, dst_;
  const KvCopyMethod method_;
  const int copy_threads_;
  std::mutex m_;
  std::condition_variable cv_work_, cv_done_;
  std::deque<Job> jobs_;
  std::map<int64_t, std::exception_ptr> errors_;
  int64_t submitted_ = 0, completed_ = 0;
  int waiters_ = 0;
  bool closed_ = false;
  std::thread worker_;
};

}  // namespace

void register_kv_copy_queue(nb::module_& m) {
  nb::class_<KvCopyQueue>(m, "KvCopyQueue",
                          "Chunks of page copies for every layer, run in order by one C++ worker thread that never "
                          "takes the GIL (ChunkedCopier's CPU path).")
      .def(nb::init<const std::vector<Array>&, const std::vector<Array>&, int, int>(), "src_pools"_a, "dst_pools"_a,
           "method"_a = 0, "copy_threads"_a = 1)
      .def("submit", &KvCopyQueue::submit, "src_ids"_a, "dst_ids"_a, "chunk_pages"_a,
           "Check the transfer, queue it in chunks; returns one ticket per chunk.")
      .def("done", &KvCopyQueue::done, "ticket"_a)
      .def("wait", &KvCopyQueue::wait, "ticket"_a, nb::call_guard<nb::gil_scoped_release>(),
           "Block until the chunk is copied; raises its error, if any.")
      .def("close", &KvCopyQueue::close, nb::call_guard<nb::gil_scoped_release>(),
           "Run the queued chunks and stop the worker.");
}

}  // namespace longcat::python
