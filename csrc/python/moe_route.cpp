// Bindings: MoE routing, dispatch and combine (csrc/include/longcat/moe_route.h).
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <optional>

#include "longcat/moe_route.h"
#include "python/convert.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace longcat::python {

void register_moe(nb::module_& m) {
  m.def(
      "moe_route",
      [](Array topk_ids, Array topk_weights, Array hidden, Array weight,
         std::optional<Array> correction_bias, int64_t n_routed, int64_t n_zero,
         double routed_scaling_factor, const std::string& score, bool renormalize,
         uintptr_t stream) {
        const char* op = "moe_route";
        const MoeScore sc = parse_moe_score(score);
        TensorView ids = to_view(topk_ids, op, "topk_ids"), w = to_view(topk_weights, op, "topk_weights"),
                   h = to_view(hidden, op, "hidden"), wt = to_view(weight, op, "weight");
        std::optional<TensorView> bias;
        if (correction_bias) bias = to_view(*correction_bias, op, "correction_bias");
        nb::gil_scoped_release release;
        longcat::moe_route(ids, w, h, wt, bias ? &*bias : nullptr, n_routed, n_zero,
                           routed_scaling_factor, sc, renormalize, reinterpret_cast<Stream>(stream));
      },
      "topk_ids"_a, "topk_weights"_a, "hidden"_a, "weight"_a, "correction_bias"_a.none(),
      "n_routed"_a, "n_zero"_a, "routed_scaling_factor"_a = 1.0, "score"_a = "softmax",
      "renormalize"_a = false, "stream"_a = 0,
      "Router: top-k expert ids and weights per token (see longcat/moe_route.h). Writes into topk_ids, topk_weights.");
  m.def(
      "moe_dispatch_layout",
      [](Array counts, Array offsets, Array topk_ids, int64_t n_routed, int64_t align, uintptr_t stream) {
        const char* op = "moe_dispatch_layout";
        TensorView c = to_view(counts, op, "counts"), o = to_view(offsets, op, "offsets"),
                   ids = to_view(topk_ids, op, "topk_ids");
        nb::gil_scoped_release release;
        longcat::moe_dispatch_layout(c, o, ids, n_routed, align, reinterpret_cast<Stream>(stream));
      },
      "counts"_a, "offsets"_a, "topk_ids"_a, "n_routed"_a, "align"_a = 1, "stream"_a = 0,
      "Per-expert counts and padded offsets of the dispatch buffer. Writes into counts, offsets.");
  m.def(
      "moe_dispatch",
      [](Array x_perm, Array row_token, Array slot_row, Array x, Array topk_ids, Array counts,
         Array offsets, int64_t n_routed, uintptr_t stream) {
        const char* op = "moe_dispatch";
        TensorView xp = to_view(x_perm, op, "x_perm"), rt = to_view(row_token, op, "row_token"),
                   sr = to_view(slot_row, op, "slot_row"), xv = to_view(x, op, "x"),
                   ids = to_view(topk_ids, op, "topk_ids"), c = to_view(counts, op, "counts"),
                   o = to_view(offsets, op, "offsets");
        nb::gil_scoped_release release;
        longcat::moe_dispatch(xp, rt, sr, xv, ids, c, o, n_routed, reinterpret_cast<Stream>(stream));
      },
      "x_perm"_a, "row_token"_a, "slot_row"_a, "x"_a, "topk_ids"_a, "counts"_a, "offsets"_a,
      "n_routed"_a, "stream"_a = 0,
      "Rows of x grouped by expert (layout from moe_dispatch_layout). Writes x_perm, row_token, slot_row.");
  m.def(
      "moe_combine",
      [](Array y, Array expert_out, Array slot_row, Array topk_ids, Array topk_weights, Array x,
         int64_t n_routed, uintptr_t stream) {
        const char* op = "moe_combine";
        TensorView yv = to_view(y, op, "y"), eo = to_view(expert_out, op, "expert_out"),
                   sr = to_view(slot_row, op, "slot_row"), ids = to_view(topk_ids, op, "topk_ids"),
                   w = to_view(topk_weights, op, "topk_weights"), xv = to_view(x, op, "x");
        nb::gil_scoped_release release;
        longcat::moe_combine(yv, eo, sr, ids, w, xv, n_routed, reinterpret_cast<Stream>(stream));
      },
      "y"_a, "expert_out"_a, "slot_row"_a, "topk_ids"_a, "topk_weights"_a, "x"_a, "n_routed"_a,
      "stream"_a = 0,
      "y[t] = sum_j w[t,j] * (expert_out[slot_row[t,j]] or x[t] for a zero expert). Writes into y.");
}

}  // namespace longcat::python
