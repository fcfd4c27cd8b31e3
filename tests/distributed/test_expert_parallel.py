"""Expert parallelism over 2 and 4 CPU processes (gloo) equals the single-process MoE, forward
and backward, including ranks that receive no rows and ranks with no tokens."""
import gc
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from longcat.distributed import ExpertParallel
from longcat.nn import MoE, MoEConfig

CONFIG = dict(hidden_size=32, expert_ffn_hidden_size=16, n_routed_experts=8, zero_expert_num=4,
              moe_topk=3, routed_scaling_factor=2.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tokens_for(rank: int, case: str) -> torch.Tensor:
    if case == "empty_rank" and rank == 1:
        return torch.zeros(0, CONFIG["hidden_size"])
    g = torch.Generator().manual_seed(100 + rank)
    return torch.randn(5 + 3 * rank, CONFIG["hidden_size"], generator=g)


CASES = ["random", "one_rank_gets_all", "empty_rank"]


def check_case(rank: int, case: str) -> None:
    torch.manual_seed(0)  # the same full model on every rank
    full = MoE(MoEConfig(**CONFIG))          # identical on every rank (same seed)
    if case == "one_rank_gets_all":
        # Steer every token to experts 0..2, all owned by rank 0: the other ranks receive no rows.
        with torch.no_grad():
            full.e_score_correction_bias[:3] = 10.0
    ep = ExpertParallel(CONFIG["n_routed_experts"])
    local = MoE(MoEConfig(**CONFIG), expert_parallel=ep)
    lo, hi = ep.local_slice
    with torch.no_grad():
        local.router_weight.copy_(full.router_weight)
        local.e_score_correction_bias.copy_(full.e_score_correction_bias)
        local.w13.copy_(full.w13[lo:hi])
        local.w2.copy_(full.w2[lo:hi])

    x = tokens_for(rank, case)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    want, got = full(x1), local(x2)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(want)
    want.backward(g)
    got.backward(g)
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-5, atol=1e-5)
    # Expert weight grads: this rank's slice of the full model's grads comes from every
    # rank's tokens, so sum the single-process grads over ranks before comparing.
    full_grad = full.w13.grad.clone()
    dist.all_reduce(full_grad)
    torch.testing.assert_close(local.w13.grad, full_grad[lo:hi], rtol=1e-4, atol=1e-5)


def worker(rank: int, world: int, port: int) -> None:
    # One process group for all cases: starting processes dominates the test's time.
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        for case in CASES:
            try:
                check_case(rank, case)
            except AssertionError as e:
                raise AssertionError(f"case {case!r}, rank {rank} of {world}: {e}") from e
    finally:
        # Tear the group down while Python is alive. Gloo's worker threads release finished
        # work (and the tensors it holds) asynchronously; one still holding a tensor when the
        # interpreter finalizes needs the GIL, cannot get it and aborts the process
        # ("terminate called without an active exception", about 1 run in 30 before this).
        # Freeing our references (cycles included) and destroying the group joins those
        # threads first.
        gc.collect()
        dist.destroy_process_group()
        gc.collect()


@pytest.mark.parametrize("world", [2, 4])
def test_expert_parallel_matches_single_process(world):
    """Cases: random routing; every token steered to rank 0's experts (the other ranks receive
    no rows); rank 1 has no tokens at all."""
    mp.spawn(worker, args=(world, free_port()), nprocs=world, join=True)


def test_requires_divisible_experts():
    with pytest.raises(RuntimeError, match="not initialised"):
        ExpertParallel(8)
