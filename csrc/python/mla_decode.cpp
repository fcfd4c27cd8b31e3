// Bindings: MLA / SSA decode over the paged latent cache and its split-KV planner
// (csrc/include/longcat/mla.h).
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>

#include <optional>

#include "longcat/mla.h"
#include "python/convert.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace longcat::python {

void register_mla_decode(nb::module_& m) {
  m.def("mla_decode_max_splits", &longcat::mla_decode_max_splits, "batch"_a, "num_workers"_a,
        "Upper bound batch + num_workers on the splits mla_decode_metadata plans.");
  m.def("mla_decode_workspace_size", &longcat::mla_decode_workspace_size, "batch"_a, "s_q"_a, "h_q"_a,
        "head_dim_v"_a, "num_workers"_a, "Bytes of workspace mla_decode needs (fp32 split partials).");
  m.def(
      "mla_decode_plan_splits",
      [](Array metadata, Array cache_seqlens, int64_t s_q, bool causal, std::optional<SsaWindow> w) {
        const char* op = "mla_decode";
        TensorView md = to_view(metadata, op, "metadata"), sl = to_view(cache_seqlens, op, "cache_seqlens");
        return longcat::mla_decode_plan_splits(md, sl, s_q, causal, w ? &*w : nullptr);
      },
      "metadata"_a, "cache_seqlens"_a, "s_q"_a, "causal"_a, "window"_a.none() = nb::none(),
      "Total splits S of a host plan, after checking it against the lengths as mla_decode does.");
  m.def(
      "mla_decode_metadata",
      [](Array metadata, Array cache_seqlens, int64_t s_q, int64_t num_workers, bool causal,
         std::optional<SsaWindow> w, uintptr_t stream) {
        const char* op = "mla_decode_metadata";
        TensorView md = to_view(metadata, op, "metadata"), sl = to_view(cache_seqlens, op, "cache_seqlens");
        nb::gil_scoped_release release;
        longcat::mla_decode_metadata(md, sl, s_q, num_workers, w ? &*w : nullptr, causal,
                                     reinterpret_cast<Stream>(stream));
      },
      "metadata"_a, "cache_seqlens"_a, "s_q"_a, "num_workers"_a, "causal"_a = true, "window"_a.none() = nb::none(),
      "stream"_a = 0,
      "Split-KV plan [batch + 1, 2] int32 (see longcat/mla.h). Writes into metadata.");
  m.def(
      "mla_decode",
      [](Array out, Array lse, Array q, Array kv_cache, Array block_table, Array cache_seqlens,
         int64_t head_dim_v, double softmax_scale, bool causal, Array metadata, Array workspace,
         int64_t num_workers, std::optional<SsaWindow> w, uintptr_t stream) {
        const char* op = "mla_decode";
        TensorView o = to_view(out, op, "out"), l = to_view(lse, op, "lse"), qv = to_view(q, op, "q"),
                   kv = to_view(kv_cache, op, "kv_cache"), bt = to_view(block_table, op, "block_table"),
                   sl = to_view(cache_seqlens, op, "cache_seqlens"), md = to_view(metadata, op, "metadata"),
                   ws = to_view(workspace, op, "workspace");
        nb::gil_scoped_release release;
        longcat::mla_decode(o, l, qv, kv, bt, sl, head_dim_v, softmax_scale, causal, md, ws, num_workers,
                            w ? &*w : nullptr, reinterpret_cast<Stream>(stream));
      },
      "out"_a, "lse"_a, "q"_a, "kv_cache"_a, "block_table"_a, "cache_seqlens"_a, "head_dim_v"_a,
      "softmax_scale"_a, "causal"_a, "metadata"_a, "workspace"_a, "num_workers"_a, "window"_a.none() = nb::none(),
      "stream"_a = 0,
      "MLA decode over the paged latent cache (optionally with an SSA window). Writes into out, lse.");
  m.def(
      "_mla_decode_amx_emulated",
      [](Array out, Array lse, Array q, Array kv_cache, Array block_table, Array cache_seqlens,
         int64_t head_dim_v, double softmax_scale, bool causal, Array metadata, Array workspace,
         int64_t num_workers, std::optional<SsaWindow> w) {
        const char* op = "mla_decode_amx_emulated";
        TensorView o = to_view(out, op, "out"), l = to_view(lse, op, "lse"), qv = to_view(q, op, "q"),
                   kv = to_view(kv_cache, op, "kv_cache"), bt = to_view(block_table, op, "block_table"),
                   sl = to_view(cache_seqlens, op, "cache_seqlens"), md = to_view(metadata, op, "metadata"),
                   ws = to_view(workspace, op, "workspace");
        nb::gil_scoped_release release;
        longcat::mla_decode_amx_emulated(o, l, qv, kv, bt, sl, head_dim_v, softmax_scale, causal, md, ws,
                                         num_workers, w ? &*w : nullptr);
      },
      "out"_a, "lse"_a, "q"_a, "kv_cache"_a, "block_table"_a, "cache_seqlens"_a, "head_dim_v"_a,
      "softmax_scale"_a, "causal"_a, "metadata"_a, "workspace"_a, "num_workers"_a, "window"_a.none() = nb::none(),
      "For tests: mla_decode on CPU run by the AMX copy's code with emulated tile instructions.");
}

}  // namespace longcat::python
