"""One MLA decode sublayer in one call: ``mla_decode_layer`` runs the attention sublayer of a
decode step (projections, latent RMSNorms, RoPE, cache append, absorbed query, ``mla_decode`` /
SSA decode, value and output projections) as the same kernels the ops run one by one, so the
result is bit for bit that composition, without a Python round trip per op and with every
intermediate in one workspace. Semantics: ``reference.mla_decode_layer``; the C++ contract is
``csrc/include/longcat/mla_layer.h``. CPU, forward only (decode runs without gradients).

The weights are checked and converted once, by ``mla_layer_weights`` (a ``longcat._C``
object that keeps the tensors alive): a decode step then converts only its activations.
Build it again after the weights change memory (in-place updates show through)."""
from __future__ import annotations

from typing import Optional

import torch

from longcat import _C
from longcat.ops._common import SsaWindow, check_tensors, check_window, dl

_OP = "mla_decode_layer"


def mla_layer_weights(w_a: torch.Tensor, q_norm: torch.Tensor, w_qb: torch.Tensor, kv_norm: torch.Tensor,
                      w_uk_t: torch.Tensor, w_uv: torch.Tensor, w_o: torch.Tensor, inv_freq: torch.Tensor,
                      norm_eps: float = 1e-6) -> "_C.MlaLayerWeights":
    """An attention sublayer's decode weights, checked once: ``w_a [R + 576, H]`` (q_a's rows,
    then kv_a's 512 latent + 64 rope rows), ``q_norm [R]``, ``w_qb [heads * (nope + 64), R]``
    (q_b with its LoRA scale folded in), ``kv_norm [512]`` (kv_a's norm weight with the latent
    scale folded in), ``w_uk_t [heads, 512, nope]`` / ``w_uv [heads, v, 512]`` (kv_b's key and
    value halves per head), ``w_o [H, heads * v]``: one dtype (bfloat16 / float32), contiguous,
    CPU; ``inv_freq [32]`` float32 (RoPE's frequencies). ValueError / TypeError naming the
    weight that does not fit."""
    tensors = dict(w_a=w_a, q_norm=q_norm, w_qb=w_qb, kv_norm=kv_norm, w_uk_t=w_uk_t, w_uv=w_uv, w_o=w_o,
                   inv_freq=inv_freq)
    check_tensors(_OP, **tensors)
    return _C.MlaLayerWeights(*(dl(t) for t in tensors.values()), float(norm_eps))


def mla_decode_layer(x: torch.Tensor, weights: "_C.MlaLayerWeights", kv_cache: torch.Tensor,
                     block_table: torch.Tensor, cache_seqlens: torch.Tensor, positions: torch.Tensor,
                     seq_ids: torch.Tensor, softmax_scale: float, metadata: torch.Tensor,
                     workspace: Optional[torch.Tensor] = None, window: Optional[SsaWindow] = None,
                     out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The attention sublayer for T decode rows: x ``[T, H]`` (contiguous, the weights' dtype)
    -> ``[T, H]`` (written into ``out`` when given); appends the rows' latents to ``kv_cache``.
    kv_cache / block_table / cache_seqlens / metadata as ``mla_decode`` with s_q = 1 (metadata from
    ``mla_decode_metadata`` with the library's thread count and, for SSA, the same ``window``);
    positions ``[T]`` and seq_ids ``[T]`` int32 as ``mla_append_kv``. ``workspace``: uint8 of at
    least ``weights.workspace_size(T, longcat.num_threads())`` bytes, reusable by every sublayer
    of a step (allocated here when None). Not differentiable."""
    check_tensors(_OP, x=x, kv_cache=kv_cache, block_table=block_table, cache_seqlens=cache_seqlens,
                  positions=positions, seq_ids=seq_ids, metadata=metadata)
    if not isinstance(weights, _C.MlaLayerWeights):
        raise TypeError(f"{_OP}: argument 'weights' must come from longcat.ops.mla_layer_weights, got "
                        f"{type(weights).__name__}")
    if window is not None:
        check_window(_OP, window)
    if torch.is_grad_enabled() and x.requires_grad:
        raise RuntimeError(f"{_OP}: not differentiable (decode runs without gradients); call it under "
                           f"torch.no_grad() or torch.inference_mode()")
    workers = _C.num_threads()
    if workspace is None:
        workspace = torch.empty(weights.workspace_size(x.shape[0] if x.dim() == 2 else 0, workers),
                                dtype=torch.uint8, device=x.device)
    if out is None:
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
    _C.mla_decode_layer(dl(out), dl(x), weights, dl(kv_cache), dl(block_table), dl(cache_seqlens), dl(positions),
                        dl(seq_ids), float(softmax_scale), dl(metadata), dl(workspace), workers, window)
    return out
