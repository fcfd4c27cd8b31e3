"""The RL trainer sharded with FSDP2 (``torch.distributed.fsdp.fully_shard``) over ``world_size``
processes: ``train: {data_parallel: N, sharding: fsdp2}``. Every rank holds 1/N of each weight,
gradient and AdamW moment; the forward all-gathers the weights, the backward reduce-scatters the
gradients. As in ``longcat.rl.distributed``, each rank computes the loss on its share of every
minibatch's rows, weighted by the share's size, and the gradients are summed (divide factor 1),
so a step is the whole batch's step whatever N is.

A difference from the all-reduce trainer: FSDP2 reduces gradients inside the backward, before
anyone could agree on which parameters were used, so a parameter no rank touched (an expert that
got no token) gets a zero gradient on every rank (``set_reduce_scatter_unused_params``) instead
of None: AdamW then still moves it by its momentum. A run with ``sharding: fsdp2`` is the same
for every N (1 included), not bit-for-bit the unsharded trainer's.

``FSDPTrainer`` is rank 0, in the run's process; after each step it gathers the full weights
into the run's own (unsharded) ``model``, which the rollout engines take and the checkpoint
saves. Its ``optimizer.state_dict()`` is consolidated in ``PolicyTrainer``'s format (full
tensors by parameter index), so a checkpoint of a sharded run resumes in a one-process run and
the other way round."""
from __future__ import annotations

import copy
from typing import Optional

import torch

from longcat.rl.distributed import _RankZero, _ShardedTrainer


def _shard(model: torch.nn.Module, world_size: int) -> torch.nn.Module:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    device = "cuda" if next(model.parameters()).is_cuda else "cpu"
    fully_shard(model, mesh=init_device_mesh(device, (world_size,)))
    model.set_gradient_divide_factor(1.0)     # the per-rank losses are weighted to sum, not average
    model.set_force_sum_reduction_for_comms(True)  # plain SUM (gloo has no PREMUL_SUM)
    model.set_reduce_scatter_unused_params(True)  # every rank reduces every parameter (see module doc)
    return model


def _full(t):
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


class _FSDPShardTrainer(_ShardedTrainer):
    """One rank: ``PolicyTrainer`` over an FSDP2-sharded copy of the policy (collective methods:
    every rank calls them in the same order)."""

    def __init__(self, model, *, rank: int, world_size: int, **kwargs):
        super().__init__(_shard(model, world_size), rank=rank, world_size=world_size, **kwargs)

    def _sync_grads(self) -> None:
        pass  # FSDP2 reduce-scattered them in the backward

    def _idle_loss(self, batch, grad: bool):
        # No row of this minibatch here: the forward (and backward) still run, on one row with
        # weight 0, since every rank must join the weights' all-gather and the gradients' reduce.
        from longcat.rl.trainer import _rows_of, completion_logprobs

        with torch.set_grad_enabled(grad):
            return completion_logprobs(self.model, _rows_of(batch, torch.tensor([0]))).sum() * 0.0

    def step(self, groups) -> dict:
        stats = super().step(groups)
        self.full = self.full_state()
        return stats

    def full_state(self) -> dict:
        return {k: _full(v).detach().clone() for k, v in self.model.state_dict().items()}

    def full_optimizer_state(self) -> dict:
        sd = self.optimizer.state_dict()
        return {"state": {i: {k: _full(v) for k, v in s.items()} for i, s in sd["state"].items()},
                "param_groups": sd["param_groups"]}

    def load(self, model_state: dict, optimizer_state: dict) -> None:
        from torch.distributed.tensor import distribute_tensor

        params = list(self.model.parameters())
        with torch.no_grad():
            for k, v in self.model.state_dict().items():
                if hasattr(v, "device_mesh"):
                    v.to_local().copy_(distribute_tensor(model_state[k].to(v.dtype), v.device_mesh,
                                                         v.placements).to_local())
                else:
                    v.copy_(model_state[k])

        def local(i, v):
            p = params[i]
            if torch.is_tensor(v) and v.shape == p.shape and hasattr(p, "device_mesh"):
                return distribute_tensor(v.to(p.dtype), p.device_mesh, p.placements)
            return v

        if optimizer_state is None:  # a fresh optimizer
            return
        state = {int(i): {k: local(int(i), v) for k, v in s.items()} for i, s in optimizer_state["state"].items()}
        self.optimizer.load_state_dict({"state": state, "param_groups": optimizer_state["param_groups"]})

    def handle(self, kind: str, payload) -> None:
        if kind == "optim":
            self.full_optimizer_state()  # a collective: rank 0 gathers the consolidated state
        else:
            super().handle(kind, payload)


class _ConsolidatedOptimizer:
    """What the run touches of the optimizer: its state (consolidated), for checkpoints and resume."""

    def __init__(self, owner: "FSDPTrainer"):
        self._owner = owner

    def state_dict(self) -> dict:
        if not self._owner._synced and self._owner._pending_optimizer is not None:
            return self._owner._pending_optimizer  # loaded (a resume), not yet sent to the ranks
        self._owner._send("optim")
        return self._owner._inner.full_optimizer_state()

    def load_state_dict(self, state: dict) -> None:
        self._owner._pending_optimizer = state


class FSDPTrainer(_RankZero):
    """Rank 0 of an FSDP2 trainer over ``world_size`` processes (spawned, or torchrun's with
    ``spawn=False``). ``model``: the run's unsharded policy, updated with the full weights after
    every step. ``kwargs``: ``PolicyTrainer``'s. ``close()`` stops the other ranks."""

    def __init__(self, model: torch.nn.Module, world_size: int, *, threads: Optional[int] = None,
                 spawn: bool = True, **kwargs):
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"FSDPTrainer: 'world_size' must be an int >= 1, got {world_size!r}")
        self.model, self.world_size = model, world_size
        template = copy.deepcopy(model).cpu()
        self._start_ranks("FSDPTrainer", world_size, spawn, _FSDPShardTrainer, template, kwargs, threads)
        if not spawn:
            self._send("init", ("fsdp2", template, kwargs))  # longcat.rl.distributed.torchrun_worker
        self._inner = _FSDPShardTrainer(copy.deepcopy(template), rank=0, world_size=world_size, **kwargs)
        self.optimizer = _ConsolidatedOptimizer(self)
        self._pending_optimizer: Optional[dict] = None

    def step(self, groups) -> dict:
        self._check_ranks()
        if not self._synced:  # the run's weights and optimizer state as they are now (warm start, resume)
            opt = self._pending_optimizer
            payload = ({k: v.detach().cpu() for k, v in self.model.state_dict().items()}, opt)
            self._send("load", payload)
            self._inner.load(*payload)
            self._synced = True
        self._send("step", groups)
        stats = self._inner.step(groups)
        with torch.no_grad():
            self.model.load_state_dict(self._inner.full)
        return stats

    def close(self) -> None:
        self._stop_ranks()


__all__ = ["FSDPTrainer"]
