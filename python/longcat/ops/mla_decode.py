"""MLA decode over a paged latent KV cache (FlashMLA-compatible), its split-KV planner, and SSA
decode (the same attention restricted to sink + local blocks, for Zig-Zag layers).

``mla_decode`` / ``ssa_decode`` return ``(out [b, s_q, h_q, 512], lse [b, h_q, s_q] float32)``;
semantics: ``reference.mla_decode``; the C++ contract (visibility rule, conventions) is
``csrc/include/longcat/mla.h``. Forward only: these ops have no backward (decode runs
without gradients).

Plan once per decode step and reuse across layers::

    md = mla_decode_metadata(cache_seqlens, s_q)                       # full-attention layers
    md_ssa = mla_decode_metadata(cache_seqlens, s_q, window=SsaWindow(sink=1, local=7))
    out, lse = mla_decode(q, kv_cache, block_table, cache_seqlens, metadata=md)
    out, lse = ssa_decode(q, kv_cache, block_table, cache_seqlens, metadata=md_ssa, window=SsaWindow(sink=1, local=7))
"""
from __future__ import annotations

from typing import Optional

import torch

from longcat import _C
from longcat.ops._common import (SsaWindow, check_tensors, check_window, dl, eager_fast_path, int_arg, stream_of,
                                 window_from_op, window_to_op)

_DIM_QK, _DIM_V = _C.MLA_DIM_QK, _C.MLA_DIM_V


def _sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def _default_workers(device: torch.device, rows: int = 1) -> int:
    """CPU: the library's threads. CUDA: FlashMLA's num_sm_parts, the SMs divided by the 64-row
    tiles of one sequence's ``rows = s_q * h_q`` query rows (each split runs one CTA per tile)."""
    if device.type == "cuda":
        return max(1, _sm_count(device) // -(-rows // 64))
    return _C.num_threads()


# ---- planner ---------------------------------------------------------------------------------

def _metadata(cache_seqlens, s_q, num_workers, causal, window):
    md = torch.empty(cache_seqlens.shape[0] + 1, 2, dtype=torch.int32, device=cache_seqlens.device)
    _C.mla_decode_metadata(md, cache_seqlens, s_q, num_workers, causal, window, stream_of(cache_seqlens))
    # Marks the plan as made here, at this version of its data: on CUDA mla_decode trusts such a
    # plan without reading it (a read costs a sync) while no in-place op has changed it since.
    md._longcat_plan_version = _version_of(md)
    return md


def _version_of(t: torch.Tensor):
    return None if t.is_inference() else t._version  # inference tensors keep no version counter


def mla_decode_metadata(cache_seqlens: torch.Tensor, s_q: int, num_workers: Optional[int] = None, *,
                        causal: bool = True, window: Optional[SsaWindow] = None,
                        h_q: Optional[int] = None) -> torch.Tensor:
    """The split-KV plan ``[batch + 1, 2]`` int32 for one decode step (like FlashMLA's
    get_mla_metadata): ``[b, 0]`` the first split of sequence b (``[batch, 0]`` = total splits
    S), ``[b, 1]`` keys per split (at least 64 on CPU, 256 on CUDA). It balances the keys each
    sequence can see over ``num_workers``, so a batch of one long sequence still uses every
    core; ``S <= batch + num_workers``. None: the library's CPU threads on CPU; on CUDA
    FlashMLA's num_sm_parts, the SM count divided by the 64-row tiles of ``s_q * h_q`` query
    rows (give the query heads ``h_q``; without it the plan assumes one tile).

    Full attention by default; give ``window`` (an ``SsaWindow``) to plan for ``ssa_decode`` with
    that window, which then covers only the visible keys. Pass the result as ``metadata=`` to every layer of the step
    with the same cache_seqlens, s_q, causal and window.
    """
    op = "mla_decode_metadata"
    check_tensors(op, cache_seqlens=cache_seqlens)
    s_q = int_arg(op, "s_q", s_q, 1)
    rows = s_q * (1 if h_q is None else int_arg(op, "h_q", h_q, 1))
    if num_workers is None:
        num_workers = _default_workers(cache_seqlens.device, rows)
    num_workers = int_arg(op, "num_workers", num_workers, 1)
    if cache_seqlens.device.type == "cuda" and num_workers > _sm_count(cache_seqlens.device):
        # mla_decode sizes its CUDA workspace for the SM count and cannot read the plan without
        # a sync; a plan with more splits would not fit, so refuse it here.
        raise ValueError(f"{op}: argument 'num_workers' must be <= the device's SM count "
                         f"({_sm_count(cache_seqlens.device)}) on CUDA, got {num_workers}")
    if window is not None:
        check_window(op, window)
    return _metadata(cache_seqlens, s_q, num_workers, bool(causal), window)


# ---- decode ------------------------------------------------------------------------------------

def _outputs(q: torch.Tensor, head_dim_v: int):
    b, s_q, h_q, _ = q.shape
    return q.new_empty(b, s_q, h_q, head_dim_v), q.new_empty(b, h_q, s_q, dtype=torch.float32)


def _check_lengths_fit(block_table, kv_cache, cache_seqlens):
    """cache_seqlens within the pages block_table can hold (what mla_decode checks), before a
    plan over those lengths sizes the workspace."""
    if block_table.dim() == 2 and kv_cache.dim() == 4 and cache_seqlens.dim() == 1 and cache_seqlens.numel():
        capacity = block_table.shape[1] * kv_cache.shape[1]
        longest = int(cache_seqlens.max())
        if longest > capacity:
            raise ValueError(f"mla_decode: argument 'block_table' has {block_table.shape[1]} pages per sequence "
                             f"of {kv_cache.shape[1]} tokens, too few for cache_seqlens up to {longest}")


# The last CPU plan read: (tensor, data_ptr, shape, numpy view), replaced whole (threads).
_last_plan: list = [(None, 0, None, None)]


def _fits_default_workspace(metadata, b: int, workers: int) -> bool:
    """The common case, read cheaply: a plan of at most ``b + workers`` splits (what
    mla_decode_metadata makes here) fits the default workspace, and the kernel checks the whole
    plan against that workspace before it reads anything. Only a larger plan is checked in full
    here, because it sizes a larger allocation. A model's decode step passes one plan to all its
    attention sublayers: the numpy view of the last plan is kept, so each later call reads the
    current value through it without a torch op."""
    if metadata.dim() != 2 or metadata.shape[0] != b + 1 or metadata.shape[1] != 2 or metadata.dtype != torch.int32 \
            or metadata.device.type != "cpu":
        return True   # the kernel's own checks name what is wrong
    memo = _last_plan[0]
    if memo[0] is not metadata or memo[1] != metadata.data_ptr() or memo[2] != metadata.shape:  # (resize_)
        memo = _last_plan[0] = (metadata, metadata.data_ptr(), metadata.shape, metadata.numpy())
    return 0 <= int(memo[3][b, 0]) <= b + workers


def check_plan_fits(first_splits, batch: int, max_splits: int) -> None:
    """ValueError unless the plan's split starts (its column 0, ``batch + 1`` integers: the first
    split of each sequence, then the total) rise from 0 to at most ``max_splits``, the splits the
    workspace holds. What the CPU kernel checks; on CUDA mla_decode checks a plan it did not make
    with this (one read of the plan) rather than let the kernel turn the rows it cannot hold into
    NaN."""
    starts = [int(v) for v in first_splits]
    if len(starts) != batch + 1 or starts[0] != 0 or any(b < a for a, b in zip(starts, starts[1:])):
        raise ValueError(f"mla_decode: argument 'metadata' must start at split 0 and never decrease (a plan "
                         f"from mla_decode_metadata), got split starts {starts[:8]}{' ...' if len(starts) > 8 else ''}")
    if starts[-1] > max_splits:
        raise ValueError(f"mla_decode: argument 'metadata' plans {starts[-1]} splits, more than the workspace "
                         f"holds (batch + the device's SM count = {max_splits}); make the plan with "
                         f"mla_decode_metadata on this device")


def _made_here(metadata) -> bool:
    return hasattr(metadata, "_longcat_plan_version") and metadata._longcat_plan_version == _version_of(metadata)


def _decode_impl(q, kv_cache, block_table, cache_seqlens, head_dim_v, softmax_scale, causal, metadata, window,
                 amx_emulated: bool = False):
    b, s_q, h_q, _ = q.shape
    # The workspace holds any plan mla_decode_metadata accepts (<= SM count on CUDA).
    workers = _sm_count(q.device) if q.device.type == "cuda" else _default_workers(q.device)
    if metadata is None:
        metadata = _metadata(cache_seqlens, s_q, _default_workers(q.device, s_q * h_q), causal, window)
    elif (q.device.type == "cuda" and metadata.dim() == 2 and metadata.shape == (b + 1, 2) and not _made_here(metadata)
          and not torch.cuda.is_current_stream_capturing()):
        # A plan made elsewhere (or changed since): read once and checked, as the CPU kernel does.
        # Inside a CUDA graph capture no read is possible; the kernel then writes NaN rows for
        # what does not fit, never a softmax over fewer keys.
        check_plan_fits(metadata[:, 0].tolist(), b, b + workers)
    elif q.device.type == "cpu" and not _fits_default_workspace(metadata, b, workers):
        # A plan made for more workers (e.g. on another machine) needs a larger workspace: size it
        # from the plan, checked first (a tampered plan must not size an allocation).
        _check_lengths_fit(block_table, kv_cache, cache_seqlens)
        workers = max(workers, _C.mla_decode_plan_splits(metadata, cache_seqlens, s_q, causal, window) - b)
    out, lse = _outputs(q, head_dim_v)
    ws = torch.empty(_C.mla_decode_workspace_size(b, s_q, h_q, head_dim_v, workers), dtype=torch.uint8,
                     device=q.device)
    if amx_emulated:  # tests: the AMX copy's code with the tile instructions emulated
        _C._mla_decode_amx_emulated(dl(out), dl(lse), dl(q), dl(kv_cache), dl(block_table), dl(cache_seqlens),
                                    head_dim_v, softmax_scale, causal, dl(metadata), dl(ws), workers, window)
    else:
        _C.mla_decode(dl(out), dl(lse), dl(q), dl(kv_cache), dl(block_table), dl(cache_seqlens), head_dim_v,
                      softmax_scale, causal, dl(metadata), dl(ws), workers, window, stream_of(q))
    return out, lse


@torch.library.custom_op("longcat::mla_decode", mutates_args=())
def _mla_decode(q: torch.Tensor, kv_cache: torch.Tensor, block_table: torch.Tensor, cache_seqlens: torch.Tensor,
                head_dim_v: int, softmax_scale: float, causal: bool, metadata: Optional[torch.Tensor],
                window: Optional[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    return _decode_impl(q, kv_cache, block_table, cache_seqlens, head_dim_v, softmax_scale, causal, metadata,
                        window_from_op(window))


@_mla_decode.register_fake
def _(q, kv_cache, block_table, cache_seqlens, head_dim_v, softmax_scale, causal, metadata, window):
    return _outputs(q, head_dim_v)


def _check(op, q, kv_cache, block_table, cache_seqlens, head_dim_v, softmax_scale, metadata):
    tensors = dict(q=q, kv_cache=kv_cache, block_table=block_table, cache_seqlens=cache_seqlens)
    if metadata is not None:
        tensors["metadata"] = metadata
    check_tensors(op, **tensors)
    if q.dim() != 4:
        raise ValueError(f"{op}: argument 'q' must have 4 dimensions [batch, s_q, h_q, 576], got {q.dim()} "
                         f"(shape {list(q.shape)})")
    if q.shape[-1] != _DIM_QK:
        raise ValueError(f"{op}: argument 'q' must have size 576 in dimension 3 (512 latent + 64 rope "
                         f"values), got {q.shape[-1]} (shape {list(q.shape)})")
    head_dim_v = int_arg(op, "head_dim_v", head_dim_v, 1)
    if head_dim_v != _DIM_V:
        raise ValueError(f"{op}: argument 'head_dim_v' must be 512, got {head_dim_v}")
    if softmax_scale is None:
        softmax_scale = q.shape[-1] ** -0.5
    softmax_scale = float(softmax_scale)
    if not softmax_scale > 0 or softmax_scale == float("inf"):
        raise ValueError(f"{op}: argument 'softmax_scale' must be finite and > 0, got {softmax_scale}")
    return head_dim_v, softmax_scale


def _run(op, q, kv_cache, block_table, cache_seqlens, head_dim_v, softmax_scale, causal, metadata, window):
    head_dim_v, softmax_scale = _check(op, q, kv_cache, block_table, cache_seqlens, head_dim_v, softmax_scale,
                                       metadata)
    causal = bool(causal)
    if eager_fast_path(q, kv_cache):
        return _decode_impl(q, kv_cache, block_table, cache_seqlens, head_dim_v, softmax_scale, causal, metadata,
                            window)
    return _mla_decode(q, kv_cache, block_table, cache_seqlens, head_dim_v, softmax_scale, causal, metadata,
                       window_to_op(window))


def mla_decode(q: torch.Tensor, kv_cache: torch.Tensor, block_table: torch.Tensor, cache_seqlens: torch.Tensor,
               head_dim_v: int = _DIM_V, softmax_scale: Optional[float] = None, causal: bool = True,
               metadata: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """MLA decode (absorbed form) over a paged latent cache, as FlashMLA's flash_mla_with_kvcache.

    q ``[b, s_q, h_q, 576]``; kv_cache ``[num_pages, page_size, 1, 576]`` (512 latent + 64 rope
    per token, V = the first 512 values; any page_size >= 1, 64 as FlashMLA), q's dtype
    (float32 / bfloat16 on CPU, bfloat16 / float16 on CUDA); block_table ``[b, max_pages]`` int32;
    cache_seqlens ``[b]`` int32 (the s_q new tokens already in the cache). Query i of s_q sits at
    position ``cache_seqlens - s_q + i`` and is causal among the new tokens (``causal=False``:
    every query sees the whole cache). softmax_scale None = ``576 ** -0.5``. Returns
    ``(out [b, s_q, h_q, 512] q's dtype, lse [b, h_q, s_q] float32)``, natural-log lse; a query
    that sees no key gets out 0 and lse +inf. Pages past a sequence's length are never read.
    metadata: from ``mla_decode_metadata`` (computed here when None). Forward only.
    """
    return _run("mla_decode", q, kv_cache, block_table, cache_seqlens, head_dim_v, softmax_scale, causal,
                metadata, None)


def ssa_decode(q: torch.Tensor, kv_cache: torch.Tensor, block_table: torch.Tensor, cache_seqlens: torch.Tensor,
               head_dim_v: int = _DIM_V, softmax_scale: Optional[float] = None, causal: bool = True,
               metadata: Optional[torch.Tensor] = None, *,
               window: Optional[SsaWindow] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Streaming sparse attention decode (Zig-Zag SSA layers): ``mla_decode`` where a query at
    absolute position p sees only key j <= p inside ``window`` (None: ``SsaWindow()``, the
    report's 1 sink + 7 local blocks of 128):

    * block mode (default, as the ZigZag kernels): ``j // block_size < sink`` or
      ``j // block_size >= p // block_size - local + 1``, i.e. the sink blocks plus the
      last ``local`` blocks up to and including p's own block (causal in it);
    * token mode (``SsaWindow(sink, local, tokens=True)``): ``j < sink`` or ``j >= p - local + 1``
      (the window includes p itself).

    Only those keys' pages are read, so the cost stays flat as the context grows. With
    ``causal=False`` every query uses p = cache_seqlens - 1. metadata: from
    ``mla_decode_metadata`` with the same window (computed here when None). Forward only.
    """
    op = "ssa_decode"
    window = SsaWindow() if window is None else check_window(op, window)
    return _run(op, q, kv_cache, block_table, cache_seqlens, head_dim_v, softmax_scale, causal, metadata, window)
