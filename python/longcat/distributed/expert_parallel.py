"""Expert parallelism: each rank of a torch.distributed group owns a contiguous block of the
routed experts; token rows travel to the ranks that own their experts and back.

One step, for the tokens on this rank:

1. ``moe_dispatch`` groups the token rows by global expert id. Experts are assigned to ranks
   in contiguous blocks, so the rows are then also grouped by destination rank.
2. The per-expert row counts are exchanged (one small all-to-all), so each rank learns how
   many rows it receives for each of its experts from each source rank.
3. The rows are exchanged (``all_to_all_single``, differentiable), regrouped by local expert
   (they arrive grouped by source rank), run through the local experts in one grouped call,
   put back in arrival order and returned by the inverse all-to-all.
4. ``moe_combine`` adds them up with the routing weights and the zero experts' identity term.

A rank may send or receive no rows; every rank must call the layer the same number of times.
The split sizes are read on the host (one device sync per step on GPU).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist
from torch.distributed._functional_collectives import all_to_all_single_autograd

from longcat import ops


class ExpertParallel:
    def __init__(self, n_routed: int, group: dist.ProcessGroup | None = None):
        if not dist.is_initialized():
            raise RuntimeError("ExpertParallel: torch.distributed is not initialised (call init_process_group)")
        self.group = group if group is not None else dist.group.WORLD
        self.world = dist.get_world_size(self.group)
        self.rank = dist.get_rank(self.group)
        if n_routed % self.world:
            raise ValueError(f"ExpertParallel: n_routed ({n_routed}) must be divisible by the group size "
                             f"({self.world})")
        self.n_routed = n_routed
        self.n_local = n_routed // self.world

    @property
    def local_slice(self) -> tuple[int, int]:
        """The global expert ids [lo, hi) this rank owns."""
        return self.rank * self.n_local, (self.rank + 1) * self.n_local

    def _all_to_all_counts(self, counts: torch.Tensor) -> torch.Tensor:
        recv = torch.empty_like(counts)
        dist.all_to_all_single(recv, counts, group=self.group)
        return recv

    def __call__(self, x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor,
                 experts: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``experts(x_local [R, H], offsets [n_local + 1] int32) -> [R, H]`` runs this rank's experts
        over rows grouped by local expert."""
        x_perm, counts, offsets, _, slot_row = ops.moe_dispatch(x, topk_ids, self.n_routed)
        # 1-2: rows per (destination rank, expert), and what we will receive.
        counts64 = counts.to(torch.int64)
        recv_counts = self._all_to_all_counts(counts64)                 # [world * n_local]: (src, local expert)
        send_splits = counts64.view(self.world, self.n_local).sum(1).tolist()
        recv_by_src_expert = recv_counts.view(self.world, self.n_local)
        recv_splits = recv_by_src_expert.sum(1).tolist()
        # 3: exchange, regroup by local expert, run, restore arrival order, send back.
        recv = all_to_all_single_autograd(x_perm, recv_splits, send_splits, self.group)
        src_of_row = torch.repeat_interleave(
            torch.arange(self.world * self.n_local, device=x.device) % self.n_local,
            recv_by_src_expert.reshape(-1), output_size=int(sum(recv_splits)))
        order = torch.argsort(src_of_row, stable=True)  # by local expert, then source rank
        local_counts = recv_by_src_expert.sum(0)
        local_offsets = torch.zeros(self.n_local + 1, dtype=torch.int32, device=x.device)
        local_offsets[1:] = torch.cumsum(local_counts, 0).to(torch.int32)
        y_local = experts(recv[order], local_offsets)
        y_recv = torch.empty_like(y_local).index_copy(0, order, y_local)
        back = all_to_all_single_autograd(y_recv, send_splits, recv_splits, self.group)
        # 4: weighted sum at the source, with the zero experts' identity term.
        return ops.moe_combine(back, slot_row, topk_ids, topk_weights, x, self.n_routed)
