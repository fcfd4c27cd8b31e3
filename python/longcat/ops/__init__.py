"""Typed torch ops over the longcat kernels. Each is a ``torch.library`` custom op with a fake
implementation (so ``torch.compile(fullgraph=True)`` traces through it); ``reference`` holds the
plain-torch definition every kernel is tested against."""
from longcat.ops import reference
from longcat.ops._common import SsaWindow
from longcat.ops.kv_cache import (KvCopyMethod, kv_copy_blocks, mla_append_kv, mla_gather, rope_interleaved,
                                  zeros_on_huge_pages)
from longcat.ops.linear import linear
from longcat.ops.mla_decode import mla_decode, mla_decode_metadata, ssa_decode
from longcat.ops.mla_layer import mla_decode_layer, mla_layer_weights
from longcat.ops.mla_prefill import mla_prefill, ssa_prefill
from longcat.ops.moe_route import moe_combine, moe_dispatch, moe_route
from longcat.ops.moe_gemm import moe_grouped_swiglu
from longcat.ops.norm import fused_add_rms_norm, fused_add_rms_norm_, rms_norm

__all__ = ["linear", "rms_norm", "fused_add_rms_norm", "fused_add_rms_norm_", "moe_route", "moe_dispatch",
           "moe_combine", "moe_grouped_swiglu", "rope_interleaved", "mla_append_kv", "mla_gather",
           "kv_copy_blocks", "KvCopyMethod", "zeros_on_huge_pages",
           "mla_decode", "mla_decode_metadata", "ssa_decode", "mla_decode_layer", "mla_layer_weights", "mla_prefill", "ssa_prefill", "SsaWindow",
           "reference"]
