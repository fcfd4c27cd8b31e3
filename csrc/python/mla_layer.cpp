// Bindings: one MLA decode sublayer in one call (csrc/include/longcat/mla_layer.h).
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>

#include <optional>

#include "longcat/mla_layer.h"
#include "python/convert.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace longcat::python {
namespace {

// The weights converted once (checked at construction): the DLPack imports keep the tensors
// alive, so a decode step converts only its activations.
struct MlaLayerWeightsHolder {
  Array keep[8];
  MlaLayerWeights w;
};

}  // namespace

void register_mla_layer(nb::module_& m) {
  nb::class_<MlaLayerWeightsHolder>(m, "MlaLayerWeights",
                                    "An MLA sublayer's decode weights, checked and held (see longcat/mla_layer.h).")
      .def(
          "__init__",
          [](MlaLayerWeightsHolder* self, Array w_a, Array q_norm, Array w_qb, Array kv_norm, Array w_uk_t,
             Array w_uv, Array w_o, Array inv_freq, double norm_eps) {
            const char* op = "mla_decode_layer";
            MlaLayerWeights w;
            w.w_a = to_view(w_a, op, "w_a");
            w.q_norm = to_view(q_norm, op, "q_norm");
            w.w_qb = to_view(w_qb, op, "w_qb");
            w.kv_norm = to_view(kv_norm, op, "kv_norm");
            w.w_uk_t = to_view(w_uk_t, op, "w_uk_t");
            w.w_uv = to_view(w_uv, op, "w_uv");
            w.w_o = to_view(w_o, op, "w_o");
            w.inv_freq = to_view(inv_freq, op, "inv_freq");
            w.norm_eps = norm_eps;
            longcat::mla_decode_layer_check_weights(w);
            new (self) MlaLayerWeightsHolder{{w_a, q_norm, w_qb, kv_norm, w_uk_t, w_uv, w_o, inv_freq}, w};
          },
          "w_a"_a, "q_norm"_a, "w_qb"_a, "kv_norm"_a, "w_uk_t"_a, "w_uv"_a, "w_o"_a, "inv_freq"_a, "norm_eps"_a)
      .def(
          "workspace_size",
          [](const MlaLayerWeightsHolder& self, int64_t tokens, int64_t num_workers) {
            return longcat::mla_decode_layer_workspace_size(self.w, tokens, num_workers);
          },
          "tokens"_a, "num_workers"_a, "Bytes of workspace mla_decode_layer needs for `tokens` rows.");
  m.def(
      "mla_decode_layer",
      [](Array out, Array x, const MlaLayerWeightsHolder& weights, Array kv_cache, Array block_table,
         Array cache_seqlens, Array positions, Array seq_ids, double softmax_scale, Array metadata, Array workspace,
         int64_t num_workers, std::optional<SsaWindow> window) {
        const char* op = "mla_decode_layer";
        TensorView o = to_view(out, op, "out"), xv = to_view(x, op, "x"), kv = to_view(kv_cache, op, "kv_cache"),
                   bt = to_view(block_table, op, "block_table"), sl = to_view(cache_seqlens, op, "cache_seqlens"),
                   pos = to_view(positions, op, "positions"), ids = to_view(seq_ids, op, "seq_ids"),
                   md = to_view(metadata, op, "metadata"), ws = to_view(workspace, op, "workspace");
        nb::gil_scoped_release release;
        longcat::mla_decode_layer(o, xv, weights.w, kv, bt, sl, pos, ids, softmax_scale, md, ws, num_workers,
                                  window ? &*window : nullptr);
      },
      "out"_a, "x"_a, "weights"_a, "kv_cache"_a, "block_table"_a, "cache_seqlens"_a, "positions"_a, "seq_ids"_a,
      "softmax_scale"_a, "metadata"_a, "workspace"_a, "num_workers"_a, "window"_a.none() = nb::none(),
      "One MLA decode sublayer (see longcat/mla_layer.h). Writes into out.");
}

}  // namespace longcat::python
