"""The RL trainer data-parallel over ``world_size`` processes with ``torch.distributed`` (gloo on
CPU, NCCL where each rank has a GPU): every rank holds the policy and its optimizer, computes the
loss on its share of each minibatch's rows (``rows[rank::world]``), the gradients are summed with
one ``all_reduce`` (the loss is weighted by the share's size, so the sum is the whole batch's
gradient), and every rank applies the same optimizer step, so the weights stay identical.

Why an explicit all-reduce and not ``DistributedDataParallel``: the MoE policy leaves some experts
without tokens in a step; on one process their ``grad`` is None and AdamW skips them, while DDP
would hand them zeros (and AdamW would still move them by momentum). Here a parameter no rank
touched keeps ``grad=None``, so a step equals the single-process step on the same batch.

``DataParallelTrainer`` is rank 0, used by ``train()`` when ``train.data_parallel > 1``: it
starts ranks 1..N-1 as processes (``torch.multiprocessing`` spawn), sends them the weights and
optimizer state before the first step (so a resumed run continues exactly), and each batch to
train on, over the process group itself (``broadcast_object_list``).

Under ``torchrun --nproc_per_node N -m longcat rl train ...`` the ranks exist already: rank 0 is
the single controller (rollout controllers, generators, sample buffer, ledger, checkpoints and
trainer rank 0, ``DataParallelTrainer(spawn=False)``); ranks 1..N-1 run ``torchrun_worker`` and
only train their share of each batch. One controller, as verl's single-controller driver and
DORA's central RolloutManager: the staleness bound, the prompt ledger and the checkpoint stay in
one place, so the resume guarantees are the one-process run's; per-rank controllers would need
a distributed ledger and a cross-rank version agreement for no gain at this scale (the rollout
side scales with ``--ray`` instead). At the end ``close()`` checks that every rank holds rank 0's
weights (a hash per tensor)."""
from __future__ import annotations

import copy
import datetime
import os
import socket
import sys
from typing import Optional

import torch
import torch.distributed as dist

from longcat.rl.trainer import PolicyTrainer


class _ShardedTrainer(PolicyTrainer):
    """``PolicyTrainer`` whose data-parallel hooks use the default process group."""

    def __init__(self, model, *, rank: int, world_size: int, **kwargs):
        super().__init__(model, **kwargs)
        self.rank, self.world_size = rank, world_size

    def _local_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return rows[self.rank::self.world_size]

    def _all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        t = t.detach().clone().float()
        dist.all_reduce(t)
        return t

    def _sync_grads(self) -> None:
        params = list(self.model.parameters())
        # Which parameters got a gradient on any rank (the others stay None, as on one process).
        has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32)
        dist.all_reduce(has)
        live = [p for p, h in zip(params, has.tolist()) if h > 0]
        if not live:
            return
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float()
                          for p in live])
        dist.all_reduce(flat)
        offset = 0
        for p in live:
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p).to(p.dtype)
            offset += n

    def load(self, model_state: dict, optimizer_state: dict) -> None:
        self.model.load_state_dict(model_state)
        self.optimizer.load_state_dict(optimizer_state)

    def handle(self, kind: str, payload) -> None:
        """Rank > 0: one message from rank 0."""
        if kind == "load":
            self.load(*payload)
        elif kind == "step":
            self.step(payload)
        elif kind == "gather":
            dist.gather_object({k: v.detach().clone() for k, v in self.model.state_dict().items()}, None, dst=0)
        elif kind == "digest":
            dist.gather(_digest(self.model), dst=0)
        else:
            raise RuntimeError(f"rank {self.rank}: unknown message {kind!r}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TIMEOUT = datetime.timedelta(minutes=5)  # a rank that died fails the others' collectives after this


def _init(rank: int, world_size: int, address: str) -> None:
    dist.init_process_group("gloo", init_method=address, rank=rank, world_size=world_size, timeout=TIMEOUT)


def _receive():
    msg = [None]
    dist.broadcast_object_list(msg, src=0)
    return msg[0]


def _digest(model: torch.nn.Module) -> torch.Tensor:
    """A hash of each weight tensor's bytes (exact: a sum would round differently with another
    thread count): equal on every rank while the ranks are in step."""
    import hashlib

    return torch.tensor([int.from_bytes(hashlib.blake2b(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
                                                        .tobytes(), digest_size=7).digest(), "little")
                         for v in model.state_dict().values()], dtype=torch.int64)


def _serve(trainer: _ShardedTrainer) -> None:
    """Rank > 0: do what rank 0 says until it says stop."""
    while True:
        kind, payload = _receive()
        if kind == "stop":
            break
        trainer.handle(kind, payload)


def _leave_without_finalizing() -> None:
    """End a rank > 0 process that served rank 0 to the end, without the interpreter's
    finalization. Once torch._dynamo is imported (AdamW imports it), torch keeps the gloo group's
    worker threads alive past ``destroy_process_group``; a worker that drops its last reference to
    a message tensor while the interpreter finalizes calls into Python, Python ends that thread,
    and the C++ runtime aborts the process ("terminate called without an active exception",
    SIGABRT). Seen in CI on rank 1 of the torchrun test; a 2-rank script of 3
    ``broadcast_object_list`` calls on 2 busy cores aborted in 5 of 30 runs, 0 of 30 leaving this
    way. Nothing is lost: rank 0 writes the run's files, and this rank's output is flushed."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _rank_main(rank: int, world_size: int, address: str, trainer_cls, model, kwargs: dict, threads: int) -> None:
    torch.set_num_threads(threads)
    _init(rank, world_size, address)
    try:
        _serve(trainer_cls(model, rank=rank, world_size=world_size, **kwargs))
    finally:
        dist.destroy_process_group()
    _leave_without_finalizing()


class _RankZero:
    """What rank 0 of a multi-process trainer does with the other ranks: spawn them (or join the
    group torchrun made), send them messages, check they live, stop them."""

    def _start_ranks(self, who: str, world_size: int, spawn: bool, trainer_cls, template, kwargs: dict,
                     threads: Optional[int]) -> None:
        self._who, self._spawned, self._procs = who, spawn, []
        self._synced = self._closed = False
        if not spawn:
            if not dist.is_initialized() or dist.get_rank() != 0 or dist.get_world_size() != world_size:
                raise RuntimeError(f"{who}(spawn=False): needs this process to be rank 0 of an initialised "
                                   f"process group of world_size {world_size}")
            return
        if dist.is_initialized():
            raise RuntimeError(f"{who}: a torch.distributed process group already exists in this process; it "
                               "starts its own (train.data_parallel)")
        import torch.multiprocessing as mp

        address = f"tcp://127.0.0.1:{_free_port()}"
        threads = threads if threads is not None else max(1, (os.cpu_count() or 1) // world_size)
        ctx = mp.get_context("spawn")
        for rank in range(1, world_size):
            p = ctx.Process(target=_rank_main, args=(rank, world_size, address, trainer_cls, template, kwargs,
                                                     threads), daemon=True, name=f"longcat-rl-rank{rank}")
            p.start()
            self._procs.append(p)
        _init(0, world_size, address)

    def _send(self, kind: str, payload=None) -> None:
        dist.broadcast_object_list([(kind, payload)], src=0)

    def _check_ranks(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self._who}.step: the trainer is closed")
        for p in self._procs:
            if not p.is_alive():
                raise RuntimeError(f"{self._who}: rank process {p.name} died (exit code {p.exitcode})")

    def _stop_ranks(self, before_stop=None) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if all(p.is_alive() for p in self._procs):
                if before_stop is not None:
                    before_stop()
                self._send("stop")
        finally:
            for p in self._procs:
                p.join(30)
                if p.is_alive():
                    p.kill()
            if self._spawned:
                dist.destroy_process_group()


def launched_by_torchrun() -> bool:
    """True in a process that ``torchrun`` (``torch.distributed.run``) started with more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "TORCHELASTIC_RUN_ID" in os.environ


def torchrun_worker() -> None:
    """Rank > 0 of ``torchrun ... -m longcat rl train``: rank 0 (the controller: rollouts, buffer,
    checkpoints, trainer rank 0) sends the policy's architecture and the trainer's settings,
    then every batch; this rank trains its share until rank 0 stops it. The process group is the
    caller's (``init_process_group`` from torchrun's environment)."""
    kind, payload = _receive()
    if kind != "init":
        raise RuntimeError(f"torchrun rank {dist.get_rank()}: expected the trainer from rank 0, got {kind!r}")
    sharding, model, kwargs = payload
    if sharding == "fsdp2":
        from longcat.rl.fsdp import _FSDPShardTrainer as trainer_cls
    else:
        trainer_cls = _ShardedTrainer
    _serve(trainer_cls(model, rank=dist.get_rank(), world_size=dist.get_world_size(), **kwargs))


def torchrun_main(controller) -> int:
    """The body of ``longcat rl train`` under ``torchrun``: joins the process group torchrun
    describes (gloo, or NCCL where each rank has a GPU), rank 0 runs ``controller()`` (the whole
    run: its trainer is a ``DataParallelTrainer(spawn=False)``), the other ranks serve it, then
    leave without the interpreter's finalization (``_leave_without_finalizing``)."""
    backend = "nccl" if torch.cuda.is_available() and torch.cuda.device_count() >= int(os.environ["WORLD_SIZE"]) \
        else "gloo"
    dist.init_process_group(backend, timeout=TIMEOUT)
    try:
        if dist.get_rank() == 0:
            return controller()
        torchrun_worker()
    finally:
        dist.destroy_process_group()
    _leave_without_finalizing()


class DataParallelTrainer(_ShardedTrainer, _RankZero):
    """Rank 0 of a ``world_size``-process trainer over ``model`` (trained in place here, as
    ``PolicyTrainer`` does). ``kwargs``: ``PolicyTrainer``'s. ``threads``: torch threads of each
    spawned rank (None: cores / world_size). ``close()`` checks that the ranks hold the same
    weights and stops the other ranks.

    ``spawn=False``: the ranks exist already (``torchrun``; this process is rank 0 of the default
    process group, the others run ``torchrun_worker``); the group stays the caller's."""

    def __init__(self, model: torch.nn.Module, world_size: int, *, threads: Optional[int] = None,
                 spawn: bool = True, **kwargs):
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"DataParallelTrainer: 'world_size' must be an int >= 1, got {world_size!r}")
        super().__init__(model, rank=0, world_size=world_size, **kwargs)
        template = copy.deepcopy(model).cpu()
        self._start_ranks("DataParallelTrainer", world_size, spawn, _ShardedTrainer, template, kwargs, threads)
        if not spawn:
            self._send("init", ("none", template, kwargs))

    def step(self, groups) -> dict:
        self._check_ranks()
        if not self._synced:  # weights and optimizer state as they are now (a warm start, a resume)
            self._send("load", (self.model.state_dict(), self.optimizer.state_dict()))
            self._synced = True
        self._send("step", groups)
        return super().step(groups)

    def gather_states(self) -> list[dict]:
        """Every rank's model state dict, rank 0 first (to check that the ranks agree)."""
        self._send("gather")
        out = [None] * self.world_size
        dist.gather_object({k: v.detach().clone() for k, v in self.model.state_dict().items()}, out, dst=0)
        return out

    def check_in_sync(self) -> int:
        """Raise if any rank's weights differ from rank 0's (per-tensor sums, no weights sent);
        returns the number of tensors compared."""
        self._send("digest")
        mine = _digest(self.model)
        out = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.gather(mine, out, dst=0)
        for rank, d in enumerate(out[1:], 1):
            if not torch.equal(d, mine):
                bad = int((d != mine).nonzero()[0])
                raise RuntimeError(f"DataParallelTrainer: rank {rank}'s weights differ from rank 0's "
                                   f"(tensor {list(self.model.state_dict())[bad]!r})")
        return len(mine)

    def close(self) -> None:
        self._stop_ranks(self.check_in_sync if self._synced else None)


def make_trainer(model, kwargs: dict, data_parallel: int, sharding: str, threads: Optional[int] = None):
    """The trainer this process runs: ``PolicyTrainer``, or rank 0 of a data-parallel (``sharding``
    none) or FSDP2 trainer over ``data_parallel`` processes that it spawns."""
    if sharding == "fsdp2":
        from longcat.rl.fsdp import FSDPTrainer

        return FSDPTrainer(model, data_parallel, threads=threads, **kwargs)
    if data_parallel > 1:
        return DataParallelTrainer(model, data_parallel, threads=threads, **kwargs)
    return PolicyTrainer(model, **kwargs)


__all__ = ["DataParallelTrainer", "launched_by_torchrun", "make_trainer", "torchrun_main", "torchrun_worker"]
