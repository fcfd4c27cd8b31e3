"""The FSDP2-sharded trainer (``train.sharding: fsdp2``, gloo on CPU): its first step from a
fresh optimizer equals the unsharded one-process trainer's, and 2 processes keep giving the same
weights and consolidated optimizer state as 1 process, with minibatches."""
import copy

import pytest
import torch

from longcat.models import LongcatFlashConfig, LongcatFlashForCausalLM
from longcat.rl.fsdp import FSDPTrainer
from longcat.rl.trainer import PolicyTrainer

from test_distributed import _close, _groups

KW = dict(lr=1e-3, loss="grpo", max_len=4, minibatches=2)
STEPS = 2


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return LongcatFlashForCausalLM(LongcatFlashConfig.from_preset("tiny"), dtype=torch.float32)


def _run(model, world: int):
    t = FSDPTrainer(copy.deepcopy(model), world, threads=1, **KW)
    try:
        states, stats = [], []
        for step in range(STEPS):
            stats.append(t.step(_groups(step)))
            states.append({k: v.clone() for k, v in t.model.state_dict().items()})
        return states, stats, t.optimizer.state_dict()
    finally:
        t.close()


def test_two_sharded_ranks_equal_one(model):
    single = PolicyTrainer(copy.deepcopy(model), **KW)
    ref = single.step(_groups(0))
    one, one_stats, one_opt = _run(model, 1)
    two, two_stats, two_opt = _run(model, 2)
    # Step 1 from a fresh optimizer: a zero gradient (an unused expert) moves nothing, so the
    # sharded step is the unsharded one.
    assert two_stats[0]["loss"] == pytest.approx(ref["loss"], rel=1e-4, abs=1e-6)
    _close(single.model.state_dict(), two[0], "fsdp2 x2 vs unsharded, step 1")
    for step in range(STEPS):
        assert not two_stats[step]["skipped"]
        assert two_stats[step]["loss"] == pytest.approx(one_stats[step]["loss"], rel=1e-4, abs=1e-6)
        assert two_stats[step]["grad_norm"] == pytest.approx(one_stats[step]["grad_norm"], rel=1e-4)
        _close(one[step], two[step], f"fsdp2 x2 vs x1, step {step + 1}")
    assert sum(float((two[-1][k] - model.state_dict()[k]).abs().sum()) for k in two[-1]) > 0  # it trained
    # The consolidated optimizer state: full tensors by parameter index, as PolicyTrainer's.
    assert sorted(two_opt["state"]) == sorted(one_opt["state"]) == list(range(len(list(model.parameters()))))
    for i in one_opt["state"]:
        for k in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(two_opt["state"][i][k], one_opt["state"][i][k], rtol=1e-4, atol=1e-7)
    single.optimizer.load_state_dict(two_opt)  # loads into an unsharded AdamW
