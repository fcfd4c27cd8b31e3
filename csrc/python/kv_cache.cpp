// Bindings: paged latent KV cache writes/reads and interleaved RoPE (csrc/include/longcat/mla.h).
#include <nanobind/nanobind.h>
#include <nanobind/stl/vector.h>

#include <vector>

#include "longcat/kv_cache.h"
#include "python/convert.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace longcat::python {

void register_kv_cache(nb::module_& m) {
  m.def(
      "rope_interleaved",
      [](Array out, Array x, Array positions, Array inv_freq, bool half_output, uintptr_t stream) {
        const char* op = "rope_interleaved";
        TensorView o = to_view(out, op, "out"), xv = to_view(x, op, "x"), p = to_view(positions, op, "positions"),
                   f = to_view(inv_freq, op, "inv_freq");
        nb::gil_scoped_release release;
        longcat::rope_interleaved(o, xv, p, f, half_output, reinterpret_cast<Stream>(stream));
      },
      "out"_a, "x"_a, "positions"_a, "inv_freq"_a, "half_output"_a, "stream"_a = 0,
      "Interleaved RoPE over x's last dim into out (may be x). See longcat/mla.h.");
  m.def(
      "mla_append_kv",
      [](Array kv_cache, Array latent, Array rope_k, Array block_table, Array seq_ids, Array positions,
         uintptr_t stream) {
        const char* op = "mla_append_kv";
        TensorView kv = to_view(kv_cache, op, "kv_cache"), l = to_view(latent, op, "latent"),
                   r = to_view(rope_k, op, "rope_k"), bt = to_view(block_table, op, "block_table"),
                   s = to_view(seq_ids, op, "seq_ids"), p = to_view(positions, op, "positions");
        nb::gil_scoped_release release;
        longcat::mla_append_kv(kv, l, r, bt, s, p, reinterpret_cast<Stream>(stream));
      },
      "kv_cache"_a, "latent"_a, "rope_k"_a, "block_table"_a, "seq_ids"_a, "positions"_a, "stream"_a = 0,
      "Write new tokens' latent and rotated rope key into their cache pages.");
  m.def(
      "mla_gather",
      [](Array out, Array kv_cache, Array block_table, Array cache_seqlens, Array cu_seqlens, uintptr_t stream) {
        const char* op = "mla_gather";
        TensorView o = to_view(out, op, "out"), kv = to_view(kv_cache, op, "kv_cache"),
                   bt = to_view(block_table, op, "block_table"), l = to_view(cache_seqlens, op, "cache_seqlens"),
                   cu = to_view(cu_seqlens, op, "cu_seqlens");
        nb::gil_scoped_release release;
        longcat::mla_gather(o, kv, bt, l, cu, reinterpret_cast<Stream>(stream));
      },
      "out"_a, "kv_cache"_a, "block_table"_a, "cache_seqlens"_a, "cu_seqlens"_a, "stream"_a = 0,
      "Copy each sequence's cached tokens into out, packed in batch order.");
  m.def(
      "kv_copy_blocks",
      [](Array src_pool, Array dst_pool, Array src_ids, Array dst_ids, uintptr_t stream, int method) {
        const char* op = "kv_copy_blocks";
        TensorView s = to_view(src_pool, op, "src_pool"), d = to_view(dst_pool, op, "dst_pool"),
                   si = to_view(src_ids, op, "src_ids"), di = to_view(dst_ids, op, "dst_ids");
        nb::gil_scoped_release release;
        return static_cast<int>(longcat::kv_copy_blocks(s, d, si, di, reinterpret_cast<Stream>(stream),
                                                        static_cast<KvCopyMethod>(method)));
      },
      "src_pool"_a, "dst_pool"_a, "src_ids"_a, "dst_ids"_a, "stream"_a = 0, "method"_a = 0,
      "dst_pool[dst_ids[i]] = src_pool[src_ids[i]] (whole pages); returns the method used. See longcat/kv_cache.h.");
  // The same pages of every layer in one call (longcat/kv_cache.h): a background copy thread
  // (engine/kv_transfer.py) then takes the GIL once per chunk instead of once per layer.
  m.def(
      "kv_copy_blocks_layers",
      [](const std::vector<Array>& src_pools, const std::vector<Array>& dst_pools, Array src_ids, Array dst_ids,
         uintptr_t stream, int method) {
        const char* op = "kv_copy_blocks_layers";
        std::vector<TensorView> s, d;
        for (const Array& a : src_pools) s.push_back(to_view(a, op, "src_pools"));
        for (const Array& a : dst_pools) d.push_back(to_view(a, op, "dst_pools"));
        TensorView si = to_view(src_ids, op, "src_ids"), di = to_view(dst_ids, op, "dst_ids");
        nb::gil_scoped_release release;
        longcat::kv_copy_blocks_layers(s, d, si, di, reinterpret_cast<Stream>(stream), static_cast<KvCopyMethod>(method));
      },
      "src_pools"_a, "dst_pools"_a, "src_ids"_a, "dst_ids"_a, "stream"_a = 0, "method"_a = 0,
      "kv_copy_blocks for every layer: dst_pools[l][dst_ids[i]] = src_pools[l][src_ids[i]].");
}

}  // namespace longcat::python
