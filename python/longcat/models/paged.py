"""The contract between the model and the engine: one engine step as a packed, paged batch.

The engine owns the paged latent caches (one ``[num_pages, page_size, 1, 576]`` tensor per
attention sublayer, allocated by ``PagedModel.make_kv_caches``), the block tables and the
scheduling; the model owns the math. Each step, every scheduled sequence contributes ``q_len >= 1``
new tokens (a prompt chunk, possibly on top of tokens already cached, or one decode token); the
model appends their latents to the caches and returns logits for the rows the engine asks for.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

import torch


@dataclass
class PagedBatch:
    """One step's packed batch of ``B`` sequences and ``T`` new tokens (batch order).

    - ``input_ids [T]`` int64: the new tokens of every sequence, concatenated.
    - ``positions [T]`` int64: each new token's absolute position in its sequence.
    - ``cu_seqlens_q [B + 1]`` int32: sequence b's new tokens are rows ``cu[b]:cu[b+1]``.
    - ``seq_lens [B]`` int32: tokens of sequence b in the cache *after* this step's tokens are
      appended (cached prefix + new tokens); the new tokens are the last ``q_len`` of them.
    - ``block_table [B, max_pages]`` int32: the pages of each sequence, in order.
    - ``logits_indices [N]`` int64: rows of the ``T`` new tokens whose logits are returned, in
      this order (usually the last new token of each sequence that samples this step).
    - ``max_q_len``: ``max(q_len)`` over the batch (host int, so no device sync is needed).
    """

    input_ids: torch.Tensor
    positions: torch.Tensor
    cu_seqlens_q: torch.Tensor
    seq_lens: torch.Tensor
    block_table: torch.Tensor
    logits_indices: torch.Tensor
    max_q_len: int

    @classmethod
    def from_lists(cls, input_ids, positions, cu_seqlens_q, seq_lens, block_table, logits_indices,
                   max_q_len: int, device=None) -> "PagedBatch":
        """The batch of host lists (``block_table`` a list of equal-length rows), as tensors of
        the documented dtypes on ``device``."""
        def t(v, dtype):
            return torch.tensor(list(v), dtype=dtype, device=device)

        return cls(input_ids=t(input_ids, torch.int64), positions=t(positions, torch.int64),
                   cu_seqlens_q=t(cu_seqlens_q, torch.int32), seq_lens=t(seq_lens, torch.int32),
                   block_table=torch.tensor([list(r) for r in block_table], dtype=torch.int32, device=device),
                   logits_indices=t(logits_indices, torch.int64), max_q_len=max_q_len)


@runtime_checkable
class PagedModel(Protocol):
    """What the engine needs from a model (``LongcatFlashForCausalLM`` implements it)."""

    config: object

    def make_kv_caches(self, num_pages: int, page_size: int = 64, dtype: torch.dtype | None = None,
                       device: torch.device | str | None = None) -> list[torch.Tensor]:
        """One zeroed latent cache ``[num_pages, page_size, 1, 576]`` per attention sublayer."""
        ...

    def forward_paged(self, batch: PagedBatch, kv_caches: Sequence[torch.Tensor]) -> torch.Tensor:
        """Append the batch's latents to ``kv_caches``, run the layers (prefill kernels for rows
        with ``q_len > 1``, decode kernels for ``q_len == 1``; the decode split plan computed
        once per step for all layers) and return float32 logits ``[N, vocab_size]`` for
        ``batch.logits_indices``. Runs under ``torch.inference_mode``."""
        ...
