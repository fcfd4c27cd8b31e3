// Bindings: varlen MLA / SSA prefill (csrc/include/longcat/attention.h).
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include <optional>
#include <string>

#include "longcat/attention.h"
#include "python/convert.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace longcat::python {

void register_mla_prefill(nb::module_& m) {
  m.def(
      "mla_prefill",
      [](Array out, Array lse, Array q, Array k, Array v, Array cu_seqlens_q, Array cu_seqlens_k,
         int64_t max_seqlen_q, int64_t max_seqlen_k, double softmax_scale, bool causal,
         const std::string& window_mode, int64_t sink, int64_t local, int64_t block_size,
         uintptr_t stream) {
        const char* op = "mla_prefill";
        TensorView o = to_view(out, op, "out"), l = to_view(lse, op, "lse"), qv = to_view(q, op, "q"),
                   kv = to_view(k, op, "k"), vv = to_view(v, op, "v"),
                   cq = to_view(cu_seqlens_q, op, "cu_seqlens_q"), ck = to_view(cu_seqlens_k, op, "cu_seqlens_k");
        const std::optional<SparseWindow> w = make_window(op, window_mode, sink, local, block_size);
        nb::gil_scoped_release release;
        longcat::mla_prefill(o, l, qv, kv, vv, cq, ck, max_seqlen_q, max_seqlen_k, softmax_scale, causal, w ? &*w : nullptr,
                             reinterpret_cast<Stream>(stream));
      },
      "out"_a, "lse"_a, "q"_a, "k"_a, "v"_a, "cu_seqlens_q"_a, "cu_seqlens_k"_a, "max_seqlen_q"_a,
      "max_seqlen_k"_a, "softmax_scale"_a, "causal"_a = true, "window_mode"_a = "none", "sink"_a = 1,
      "local"_a = 7, "block_size"_a = 128, "stream"_a = 0,
      "Varlen prefill attention, bottom-right causal, optional SSA window ('blocks' or 'tokens'; see "
      "longcat/attention.h). Writes into out [total_q, h, dv] and lse [h, total_q].");
}

}  // namespace longcat::python
