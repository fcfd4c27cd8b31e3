"""Paged latent KV cache ops and interleaved RoPE: ``rope_interleaved``, ``mla_append_kv``,
``mla_gather``, ``kv_copy_blocks`` (page moves between pools: swapping, disaggregation). Semantics: the functions of the same names in ``reference``; the C++ contract is
``csrc/include/longcat/mla.h``.

Cache layout (FlashMLA's): ``kv_cache[num_pages, page_size, 1, 576]`` holds, per token, the
normalised KV latent (512) followed by the rotated rope key (64); ``block_table[batch,
max_pages]`` int32 lists each sequence's pages in order.
"""
from __future__ import annotations

import enum
import functools
import mmap
from typing import Sequence

import torch

from longcat import _C
from longcat.ops._common import (_profiler_enabled, check_tensor, check_tensors, dl, eager_fast_path, stream_of,
                                 view)

LONGCAT_ROPE_BASE = 1e7  # rope_theta of LongCat-Flash


_HUGE_PAGE = 2 << 20


def zeros_on_huge_pages(shape: Sequence[int], dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """A zero-filled CPU tensor whose memory is advised for transparent huge pages (Linux
    ``madvise(MADV_HUGEPAGE)`` on an anonymous mapping, 2 MiB-aligned): the kernel then backs it
    with 2 MiB pages where it can, else with ordinary ones (the result is the same tensor either
    way). For KV page pools: a scattered 73.7 KB page spans 18 ordinary pages, each a TLB miss
    when a swap or an attention read reaches it, and the hardware prefetchers stop at every
    4 KiB boundary. Measured on the Zen 5 (pools from DRAM after a cache scrub, one process,
    alternated): ``kv_copy_blocks`` of 16 scattered pages 29.6-30.8 GB/s against 22.9-25.7 on
    ordinary pages, 128 pages 36.2-37.0 against 32.0-33.8, where a 66 MB ``copy_`` gained 3-5%.
    Where the platform has no ``MADV_HUGEPAGE`` this is ``torch.zeros``."""
    shape = tuple(int(d) for d in shape)
    nbytes = torch.Size(shape).numel() * dtype.itemsize
    if not hasattr(mmap, "MADV_HUGEPAGE") or nbytes < _HUGE_PAGE:
        return torch.zeros(shape, dtype=dtype)
    # Anonymous memory reads as zeros; one huge page more than asked, to start on a boundary.
    mapping = mmap.mmap(-1, nbytes + _HUGE_PAGE, flags=mmap.MAP_PRIVATE)  # private: like malloc across fork
    raw = torch.frombuffer(mapping, dtype=torch.uint8)  # keeps `mapping` alive while it lives
    start = -raw.data_ptr() % _HUGE_PAGE
    try:
        mapping.madvise(mmap.MADV_HUGEPAGE, start, nbytes - nbytes % _HUGE_PAGE)
    except OSError:  # THP disabled in this kernel build: ordinary pages
        pass
    return raw[start:start + nbytes].view(dtype).view(shape)


def _check_int(op: str, name: str, t: torch.Tensor, dtypes=(torch.int32,)) -> None:
    if t.dtype not in dtypes:
        names = " or ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{op}: argument '{name}' must be {names}, got {str(t.dtype).replace('torch.', '')}")


def rope_inv_freq(dim: int, base: float = LONGCAT_ROPE_BASE, device: torch.device | str = "cpu") -> torch.Tensor:
    """``1 / base^(arange(0, dim, 2) / dim)`` in fp32, computed exactly as transformers' default
    RoPE does, so rotated values match it bit for bit (torch's pow is not correctly rounded;
    a one-ulp change of a frequency moves the angle by ~position * 1e-7 radians)."""
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64, device=device).float() / dim))


@functools.lru_cache(maxsize=64)
def _cached_inv_freq(dim: int, base: float, device: torch.device) -> torch.Tensor:
    # A normal tensor even when first asked for under torch.inference_mode (the engine's decode):
    # an inference tensor cannot be saved for backward, and RL trains right after generating.
    with torch.inference_mode(False):
        return rope_inv_freq(dim, base, device)


@torch.library.custom_op("longcat::rope_interleaved", mutates_args=())
def _rope(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor, half_output: bool) -> torch.Tensor:
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    _C.rope_interleaved(out, view(x), positions, inv_freq, half_output, stream_of(x))
    return out


@_rope.register_fake
def _(x, positions, inv_freq, half_output):
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


def _rope_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[1], inputs[2])
    ctx.half_output = inputs[3]


def _rope_backward(ctx, grad_out):
    # The rotation is orthogonal: its gradient is the inverse rotation (angle -theta) of grad_out,
    # brought back to the input's interleaved layout.
    positions, inv_freq = ctx.saved_tensors
    g = grad_out.float()
    d = g.shape[-1]
    ang = positions.float()[:, None] * inv_freq[None, :]
    shape = (g.shape[0],) + (1,) * (g.dim() - 2) + (d // 2,)
    cos, sin = ang.cos().view(shape), ang.sin().view(shape)
    ga, gb = (g[..., : d // 2], g[..., d // 2:]) if ctx.half_output else (g[..., 0::2], g[..., 1::2])
    grad_x = torch.stack([ga * cos + gb * sin, gb * cos - ga * sin], -1).flatten(-2)
    return grad_x.to(grad_out.dtype), None, None, None


_rope.register_autograd(_rope_backward, setup_context=_rope_setup)


def rope_interleaved(x: torch.Tensor, positions: torch.Tensor, base: float = LONGCAT_ROPE_BASE,
                     half_output: bool = True, out: torch.Tensor | None = None,
                     inv_freq: torch.Tensor | None = None) -> torch.Tensor:
    """Interleaved (DeepSeek-style) rotary embedding over x's last dim ``D`` (even, <= 4096).

    Pair ``(x[2i], x[2i+1])`` of token ``t`` is rotated by ``positions[t] * inv_freq[i]`` in
    fp32 and rounded once; ``inv_freq`` defaults to ``rope_inv_freq(D, base)`` (plain RoPE, base
    1e7 as LongCat-Flash) — pass your own for scaled variants (YaRN, ...). ``half_output=True``
    writes transformers' layout (``apply_rotary_pos_emb_interleave``: rotated even elements,
    then rotated odd ones), so q and k rotated here match transformers' LongcatFlash; ``False``
    keeps each pair in place.

    x: ``[T, D]`` or ``[T, heads, D]``, float32 / bfloat16 (float16 on CUDA), last dim contiguous
    (e.g. ``q[..., 128:]``); positions: ``[T]`` int32 or int64, >= 0. Returns a new contiguous
    tensor, or writes ``out`` (x's shape and dtype, contiguous; may be x itself when x is
    contiguous). Differentiable in x (without ``out``).
    """
    op = "rope_interleaved"
    check_tensors(op, x=x, positions=positions)
    _check_int(op, "positions", positions, (torch.int32, torch.int64))
    if inv_freq is None:
        if x.dim() == 0 or x.shape[-1] % 2 != 0:
            raise ValueError(f"{op}: argument 'x' must have an even last dim, got shape {list(x.shape)}")
        base = float(base)
        if not base > 1.0 or base == float("inf"):
            raise ValueError(f"{op}: argument 'base' must be a finite number > 1, got {base}")
        inv_freq = (rope_inv_freq(x.shape[-1], base, x.device) if torch.compiler.is_compiling()
                    else _cached_inv_freq(x.shape[-1], base, x.device))
    else:
        check_tensors(op, x=x, inv_freq=inv_freq)
    half_output = bool(half_output)
    if out is not None:
        check_tensors(op, x=x, out=out)
        if torch.is_grad_enabled() and x.requires_grad:
            raise RuntimeError(f"{op}(out=...) does not support autograd; call it without out")
        _C.rope_interleaved(out, view(x), positions, inv_freq, half_output, stream_of(x))
        return out
    if eager_fast_path(x):
        res = torch.empty_like(x, memory_format=torch.contiguous_format)
        _C.rope_interleaved(dl(res), dl(x), dl(positions), dl(inv_freq), half_output, stream_of(x))
        return res
    return _rope(x, positions, inv_freq, half_output)


@torch.library.custom_op("longcat::mla_append_kv", mutates_args=("kv_cache",))
def _append(kv_cache: torch.Tensor, latent: torch.Tensor, rope_k: torch.Tensor,
            block_table: torch.Tensor, seq_ids: torch.Tensor, positions: torch.Tensor) -> None:
    _C.mla_append_kv(kv_cache, view(latent), view(rope_k), block_table, seq_ids, positions,
                     stream_of(kv_cache))


@_append.register_fake
def _(kv_cache, latent, rope_k, block_table, seq_ids, positions):
    return None


def mla_append_kv(latent: torch.Tensor, rope_k: torch.Tensor, kv_cache: torch.Tensor,
                  block_table: torch.Tensor, positions: torch.Tensor,
                  seq_ids: torch.Tensor | None = None) -> None:
    """Write new tokens into the paged cache, in place.

    latent ``[T, 512]`` (the normalised KV latent) and rope_k ``[T, 64]`` (already rotated), in
    kv_cache's dtype, last dim contiguous; kv_cache ``[num_pages, page_size, 1, 576]``;
    block_table ``[batch, max_pages]`` int32. Token t goes to sequence ``seq_ids[t]`` (int32
    ``[T]``) at position ``positions[t]``. Two shorthands: ``positions`` of shape ``[batch, s]``
    with ``T = batch * s`` (each row one sequence's new tokens, the decode step) and seq_ids
    omitted; or a single sequence (batch 1) with seq_ids omitted.

    On CPU a bad seq id, position or page id raises ValueError before anything is written.
    """
    op = "mla_append_kv"
    check_tensors(op, kv_cache=kv_cache, latent=latent, rope_k=rope_k, block_table=block_table,
                  positions=positions)
    _check_int(op, "block_table", block_table)
    _check_int(op, "positions", positions)
    if seq_ids is None:
        if positions.dim() == 2:
            b, s = positions.shape
            if b != block_table.shape[0]:
                raise ValueError(f"{op}: argument 'positions' of shape [batch, s] must have batch = "
                                 f"block_table.shape[0] = {block_table.shape[0]}, got {list(positions.shape)}")
            seq_ids = torch.arange(b, dtype=torch.int32, device=positions.device).repeat_interleave(s)
        elif block_table.shape[0] == 1:
            seq_ids = torch.zeros(positions.shape, dtype=torch.int32, device=positions.device)
        else:
            raise ValueError(f"{op}: argument 'seq_ids' is required when block_table has "
                             f"{block_table.shape[0]} sequences and positions is 1-D")
    else:
        check_tensors(op, kv_cache=kv_cache, seq_ids=seq_ids)
        _check_int(op, "seq_ids", seq_ids)
    positions = positions.reshape(-1)
    if not seq_ids.is_contiguous():
        seq_ids = seq_ids.contiguous()
    if not positions.is_contiguous():
        positions = positions.contiguous()
    if eager_fast_path(latent, rope_k):
        _C.mla_append_kv(dl(kv_cache), dl(latent), dl(rope_k), dl(block_table), dl(seq_ids), dl(positions),
                         stream_of(kv_cache))
        return
    _append(kv_cache, latent, rope_k, block_table, seq_ids, positions)


def mla_gather(kv_cache: torch.Tensor, block_table: torch.Tensor,
               cache_seqlens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Read every sequence's cached tokens back, packed: returns ``(kv [sum L_b, 576],
    cu_seqlens [batch + 1] int32)``. For debugging and reference implementations. Reads the
    lengths on the host (a sync on CUDA)."""
    op = "mla_gather"
    check_tensors(op, kv_cache=kv_cache, block_table=block_table, cache_seqlens=cache_seqlens)
    _check_int(op, "block_table", block_table)
    _check_int(op, "cache_seqlens", cache_seqlens)
    if cache_seqlens.dim() != 1:
        raise ValueError(f"{op}: argument 'cache_seqlens' must be 1-D [batch], got {list(cache_seqlens.shape)}")
    if bool((cache_seqlens < 0).any()):
        raise ValueError(f"{op}: argument 'cache_seqlens' must be >= 0, got {cache_seqlens.tolist()}")
    # The prefix sum in int64 first: an int32 one would wrap for more than 2^31 - 1 cached tokens.
    cu64 = torch.zeros(cache_seqlens.shape[0] + 1, dtype=torch.int64, device=cache_seqlens.device)
    torch.cumsum(cache_seqlens, 0, out=cu64[1:])
    total = int(cu64[-1])
    if total > 2**31 - 1:
        raise ValueError(f"{op}: argument 'cache_seqlens' sums to {total} tokens, more than the int32 "
                         f"cu_seqlens of the result can index (2^31 - 1)")
    cu = cu64.to(torch.int32)
    out = torch.empty(total, kv_cache.shape[-1], dtype=kv_cache.dtype,
                      device=kv_cache.device)
    _C.mla_gather(out, kv_cache, block_table, cache_seqlens.contiguous(), cu, stream_of(kv_cache))
    return out, cu


class KvCopyMethod(enum.IntEnum):
    """How ``kv_copy_blocks`` moves pages (C++ ``longcat::KvCopyMethod``; the choice of AUTO is
    documented in csrc/include/longcat/kv_cache.h)."""

    AUTO = 0
    CPU_THREADS = 1       # host <-> host: the CPU thread pool
    KERNEL = 2            # CUDA: an SM-driven copy kernel (pinned host pages through UVA)
    MEMCPY_BATCH = 3      # CUDA: one cudaMemcpyBatchAsync (CUDA >= 12.8, not on the default stream)
    MEMCPY_PER_BLOCK = 4  # CUDA: one cudaMemcpyAsync per run of consecutive pages


def _page_ids(op: str, name: str, ids) -> torch.Tensor:
    if isinstance(ids, torch.Tensor):
        _check_int(op, name, ids)
        if ids.device.type != "cpu":
            raise ValueError(f"{op}: argument '{name}' must be a CPU tensor (the host validates and plans the "
                             f"copy), got one on {ids.device}")
        if ids.dim() != 1:
            raise ValueError(f"{op}: argument '{name}' must be 1-D, got shape {list(ids.shape)}")
        return ids.contiguous()
    if isinstance(ids, (list, tuple, range)):
        return torch.tensor(list(ids), dtype=torch.int32)
    raise TypeError(f"{op}: argument '{name}' must be an int32 tensor or a list of ints, got {type(ids).__name__}")


def _plain_cpu(t) -> bool:
    return type(t) is torch.Tensor and t.is_cpu


def _int32_ids(t) -> bool:
    return type(t) is torch.Tensor and t.dtype is torch.int32 and t.is_cpu and t.dim() == 1 and t.is_contiguous()


@torch.library.custom_op("longcat::kv_copy_blocks", mutates_args=("dst_pool",))
def _copy_blocks(src_pool: torch.Tensor, dst_pool: torch.Tensor, src_ids: torch.Tensor,
                 dst_ids: torch.Tensor, method: int) -> None:
    cuda = src_pool if src_pool.device.type == "cuda" else dst_pool
    _C.kv_copy_blocks(src_pool, dst_pool, src_ids, dst_ids, stream_of(cuda), method)


@_copy_blocks.register_fake
def _(src_pool, dst_pool, src_ids, dst_ids, method):
    return None


def kv_copy_blocks(src_pool: torch.Tensor, dst_pool: torch.Tensor, src_ids: torch.Tensor | Sequence[int],
                   dst_ids: torch.Tensor | Sequence[int], method: KvCopyMethod = KvCopyMethod.AUTO,
                   stream: torch.cuda.Stream | None = None) -> KvCopyMethod:
    """Copy whole pages: ``dst_pool[dst_ids[i]] = src_pool[src_ids[i]]``, in place.

    Pools ``[pages, page_size, 1, 576]``, contiguous, same dtype and page size, any page counts;
    each on the CPU or a CUDA device (a host pool paired with a CUDA pool must be pinned). Ids:
    int32 CPU tensors or lists, one destination per source, destinations distinct; within one
    pool no page may be both read and written. Everything is validated before a byte moves (an
    error leaves ``dst_pool`` as it was). On CUDA the copy is queued on ``stream`` (default: the
    current stream) and the call returns at once; on the CPU it runs on the calling thread.
    Returns the method used (``method`` forces one, for benchmarks).
    """
    if ((method is KvCopyMethod.AUTO or method is KvCopyMethod.CPU_THREADS) and stream is None
            and _plain_cpu(src_pool) and _plain_cpu(dst_pool) and _int32_ids(src_ids) and _int32_ids(dst_ids)
            and not torch.compiler.is_compiling() and not _profiler_enabled()):
        # Host pools and int32 id tensors: the C++ op checks the rest. Saves ~10 us of wrapper
        # per call, against ~0.08 ms for a 16-page copy.
        _C.kv_copy_blocks(dl(src_pool), dl(dst_pool), dl(src_ids), dl(dst_ids), 0, int(method))
        return KvCopyMethod.CPU_THREADS
    op = "kv_copy_blocks"
    check_tensor(op, "src_pool", src_pool)
    check_tensor(op, "dst_pool", dst_pool)
    src_ids, dst_ids = _page_ids(op, "src_ids", src_ids), _page_ids(op, "dst_ids", dst_ids)
    method = KvCopyMethod(method)
    if torch.compiler.is_compiling() or _profiler_enabled():
        _copy_blocks(src_pool, dst_pool, src_ids, dst_ids, int(method))
        return method
    cuda = src_pool if src_pool.device.type == "cuda" else dst_pool
    raw = stream.cuda_stream if stream is not None else stream_of(cuda)
    # Capsules, not tensors: nanobind would call Tensor.__dlpack__ per argument (5-8 us each, as
    # much as copying a page).
    return KvCopyMethod(_C.kv_copy_blocks(dl(src_pool), dl(dst_pool), dl(src_ids), dl(dst_ids), raw, int(method)))


def kv_copy_blocks_layers(src_pools: Sequence[torch.Tensor], dst_pools: Sequence[torch.Tensor],
                          src_ids: torch.Tensor | Sequence[int], dst_ids: torch.Tensor | Sequence[int],
                          method: KvCopyMethod = KvCopyMethod.AUTO) -> None:
    """``kv_copy_blocks(src_pools[l], dst_pools[l], src_ids, dst_ids)`` for every layer l, in one
    call that releases the GIL once (a background copy thread then hands the GIL back and forth
    once per chunk, not once per layer). Each pool pair as ``kv_copy_blocks`` takes it (page
    counts may differ per layer: ids are bounded by each side's smallest pool), every pool of a
    side on one device; every layer and id is checked before any layer is written. On CUDA the
    copies go on the current stream."""
    op = "kv_copy_blocks_layers"
    src_pools, dst_pools = list(src_pools), list(dst_pools)
    for name, pools in (("src_pools", src_pools), ("dst_pools", dst_pools)):
        for t in pools:
            check_tensor(op, name, t)
    src_ids, dst_ids = _page_ids(op, "src_ids", src_ids), _page_ids(op, "dst_ids", dst_ids)
    cuda = [t for t in src_pools[:1] + dst_pools[:1] if t.device.type == "cuda"]
    _C.kv_copy_blocks_layers([dl(t) for t in src_pools], [dl(t) for t in dst_pools], dl(src_ids), dl(dst_ids),
                             stream_of(cuda[0]) if cuda else 0, int(KvCopyMethod(method)))
