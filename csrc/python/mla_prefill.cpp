// Bindings: varlen MLA / SSA prefill (csrc/include/longcat/mla.h).
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>

#include <optional>

#include "longcat/mla.h"
#include "python/convert.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace longcat::python {

void register_mla_prefill(nb::module_& m) {
  m.def(
      "mla_prefill",
      [](Array out, Array lse, Array q, Array k, Array v, Array cu_seqlens_q, Array cu_seqlens_k,
         int64_t max_seqlen_q, int64_t max_seqlen_k, double softmax_scale, bool causal,
         std::optional<SsaWindow> w, uintptr_t stream) {
        const char* op = "mla_prefill";
        TensorView o = to_view(out, op, "out"), l = to_view(lse, op, "lse"), qv = to_view(q, op, "q"),
                   kv = to_view(k, op, "k"), vv = to_view(v, op, "v"),
                   cq = to_view(cu_seqlens_q, op, "cu_seqlens_q"), ck = to_view(cu_seqlens_k, op, "cu_seqlens_k");
        nb::gil_scoped_release release;
        longcat::mla_prefill(o, l, qv, kv, vv, cq, ck, max_seqlen_q, max_seqlen_k, softmax_scale, causal, w ? &*w : nullptr,
                             reinterpret_cast<Stream>(stream));
      },
      "out"_a, "lse"_a, "q"_a, "k"_a, "v"_a, "cu_seqlens_q"_a, "cu_seqlens_k"_a, "max_seqlen_q"_a,
      "max_seqlen_k"_a, "softmax_scale"_a, "causal"_a = true, "window"_a.none() = nb::none(), "stream"_a = 0,
      "Varlen prefill attention, bottom-right causal, optional SsaWindow (see "
      "longcat/mla.h). Writes into out [total_q, h, dv] and lse [h, total_q].");
  m.def(
      "_mla_prefill_amx_emulated",
      [](Array out, Array lse, Array q, Array k, Array v, Array cu_seqlens_q, Array cu_seqlens_k,
         int64_t max_seqlen_q, int64_t max_seqlen_k, double softmax_scale, bool causal, std::optional<SsaWindow> w) {
        const char* op = "mla_prefill_amx_emulated";
        TensorView o = to_view(out, op, "out"), l = to_view(lse, op, "lse"), qv = to_view(q, op, "q"),
                   kv = to_view(k, op, "k"), vv = to_view(v, op, "v"),
                   cq = to_view(cu_seqlens_q, op, "cu_seqlens_q"), ck = to_view(cu_seqlens_k, op, "cu_seqlens_k");
        nb::gil_scoped_release release;
        longcat::mla_prefill_amx_emulated(o, l, qv, kv, vv, cq, ck, max_seqlen_q, max_seqlen_k, softmax_scale, causal,
                                          w ? &*w : nullptr);
      },
      "out"_a, "lse"_a, "q"_a, "k"_a, "v"_a, "cu_seqlens_q"_a, "cu_seqlens_k"_a, "max_seqlen_q"_a,
      "max_seqlen_k"_a, "softmax_scale"_a, "causal"_a = true, "window"_a.none() = nb::none(),
      "For tests: mla_prefill on CPU run by the AMX copy's code with emulated tile instructions.");
}

}  // namespace longcat::python
