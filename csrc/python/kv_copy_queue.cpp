// longcat._C.KvCopyQueue: longcat::KvCopyQueue (longcat/kv_copy_queue.h) for ChunkedCopier's CPU
// path (engine/kv_transfer.py). The binding keeps the pools' arrays alive for the queue, which
// holds views of them, and releases the GIL where it blocks.
#include <nanobind/nanobind.h>
#include <nanobind/stl/vector.h>

#include <vector>

#include "longcat/kv_copy_queue.h"
#include "python/convert.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace longcat::python {
namespace {

std::vector<TensorView> views(const std::vector<Array>& arrays, const char* arg) {
  std::vector<TensorView> v;
  for (const Array& a : arrays) v.push_back(to_view(a, "KvCopyQueue", arg));
  return v;
}

struct PyKvCopyQueue {
  PyKvCopyQueue(const std::vector<Array>& src_pools, const std::vector<Array>& dst_pools, int method, int copy_threads)
      : src_arrays(src_pools), dst_arrays(dst_pools),
        queue(views(src_pools, "src_pools"), views(dst_pools, "dst_pools"), static_cast<KvCopyMethod>(method),
              copy_threads) {}
  std::vector<Array> src_arrays, dst_arrays;  // the memory queue's views point into; destroyed after it
  KvCopyQueue queue;
};

}  // namespace

void register_kv_copy_queue(nb::module_& m) {
  nb::class_<PyKvCopyQueue>(m, "KvCopyQueue",
                            "Chunks of page copies for every layer, run in order by one C++ worker thread that never "
                            "takes the GIL (ChunkedCopier's CPU path; longcat/kv_copy_queue.h).")
      .def(nb::init<const std::vector<Array>&, const std::vector<Array>&, int, int>(), "src_pools"_a, "dst_pools"_a,
           "method"_a = 0, "copy_threads"_a = 1)
      .def(
          "submit",
          [](PyKvCopyQueue& q, Array src_ids, Array dst_ids, int64_t chunk_pages) {
            const TensorView s = to_view(src_ids, "KvCopyQueue.submit", "src_ids"),
                             d = to_view(dst_ids, "KvCopyQueue.submit", "dst_ids");
            return q.queue.submit(s, d, chunk_pages);
          },
          "src_ids"_a, "dst_ids"_a, "chunk_pages"_a,
          "Check the transfer (int32 id tensors), queue it in chunks; returns one ticket per chunk.")
      .def("done", [](const PyKvCopyQueue& q, int64_t ticket) { return q.queue.done(ticket); }, "ticket"_a)
      .def(
          "wait", [](PyKvCopyQueue& q, int64_t ticket) { q.queue.wait(ticket); }, "ticket"_a,
          nb::call_guard<nb::gil_scoped_release>(), "Block until the chunk is copied; raises its error, if any.")
      .def(
          "close", [](PyKvCopyQueue& q) { q.queue.close(); }, nb::call_guard<nb::gil_scoped_release>(),
          "Run the queued chunks and stop the worker.");
}

}  // namespace longcat::python
