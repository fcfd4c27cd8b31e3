"""The data-parallel trainer (torch.distributed, gloo, 2 processes): after each step both ranks
hold the same weights, equal to one process's step on the same batch (fp32 tolerance), with
minibatches and a resumed optimizer state; a NaN on one rank's share is skipped on every rank."""
import copy
import random

import pytest
import torch

from longcat.models import LongcatFlashConfig, LongcatFlashForCausalLM
from longcat.rl.distributed import DataParallelTrainer
from longcat.rl.protocols import Group, Sample
from longcat.rl.trainer import PolicyTrainer


def _groups(seed: int, n_groups=3, group_size=4, vocab=20):
    rng = random.Random(seed)
    out = []
    for uid in range(n_groups):
        prompt = [rng.randrange(3, vocab) for _ in range(rng.randint(3, 6))]
        samples = []
        for _ in range(group_size):
            c = [rng.randrange(3, vocab) for _ in range(rng.randint(1, 4))]
            samples.append(Sample(prompt, c, [-rng.uniform(0.5, 3.0) for _ in c], [0] * len(c),
                                  reward=float(rng.random() < 0.5)))
        samples[0].reward, samples[1].reward = 1.0, 0.0  # never a degenerate group
        out.append(Group(uid, 0, samples))
    return out


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return LongcatFlashForCausalLM(LongcatFlashConfig.from_preset("tiny"), dtype=torch.float32)


def _close(a: dict, b: dict, what: str):
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=2e-6, msg=lambda m: f"{what}: {k}: {m}")


def test_two_ranks_equal_one_process_after_a_resume_and_skip_nan_together(model):
    # One process group for every check: spawning a rank costs seconds on 2 cores.
    kw = dict(lr=1e-3, loss="grpo", max_len=4, minibatches=2)
    warm = PolicyTrainer(copy.deepcopy(model), **kw)
    warm.step(_groups(5))  # an optimizer with moments, as a resume restores it
    single = PolicyTrainer(copy.deepcopy(warm.model), **kw)
    single.optimizer.load_state_dict(copy.deepcopy(warm.optimizer.state_dict()))
    dp = DataParallelTrainer(copy.deepcopy(warm.model), 2, threads=1, **kw)
    dp.optimizer.load_state_dict(copy.deepcopy(warm.optimizer.state_dict()))
    try:
        start = {k: v.clone() for k, v in warm.model.state_dict().items()}
        for step in range(2):
            groups = _groups(step)
            a, b = single.step(groups), dp.step(groups)
            assert not a["skipped"] and not b["skipped"]
            assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-6)
            assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
            assert b["tokens"] == a["tokens"] and b["logp_gap"] == pytest.approx(a["logp_gap"], rel=1e-4)
        ranks = dp.gather_states()
        assert len(ranks) == 2
        for k in ranks[0]:  # the ranks are bit-identical: same summed gradient, same optimizer step
            assert torch.equal(ranks[0][k], ranks[1][k]), k
        _close(single.model.state_dict(), ranks[1], "rank 1 vs one process")
        moved = sum(float((ranks[0][k] - start[k]).abs().sum()) for k in start)
        assert moved > 0  # the steps really trained

        bad = _groups(7)
        bad[2].samples[3].logprobs[0] = float("nan")  # the last row: rank 1's share of minibatch 2
        a, b = single.step(bad), dp.step(bad)
        assert a["skipped"] and b["skipped"]  # minibatch 1 stays applied, minibatch 2 is skipped
        after = dp.gather_states()
        for k in after[0]:
            assert torch.equal(after[0][k], after[1][k]), k
        _close(single.model.state_dict(), after[0], "after a skipped minibatch")
    finally:
        dp.close()


def test_bad_world_size():
    with pytest.raises(ValueError, match="world_size"):
        DataParallelTrainer(torch.nn.Linear(2, 2), 0, lr=1e-3)


def test_recipe_key_runs_train_data_parallel(tmp_path):
    """``train.data_parallel: 2`` through ``train()``: the spawned rank trains in step with rank 0
    (the run's steps, metrics and checkpoints as with one process), and is stopped at the end."""
    import json
    import multiprocessing

    from longcat.bench.rl import parity_reward
    from longcat.rl import train

    recipe = {"seed": 0, "warm_start": {"steps": 0},
              "rollout": {"group_size": 4, "max_new_tokens": 3, "controllers": 1, "max_concurrent": 4},
              "train": {"steps": 2, "batch_groups": 2, "max_staleness": 1, "lr": 1e-3, "data_parallel": 2}}
    res = train(recipe, str(tmp_path), progress=False, reward_fn=parity_reward)
    rows = [json.loads(x) for x in open(res.metrics_path)]
    assert res.steps == 2 and [r["version"] for r in rows] == [1, 2] and not any(r["skipped"] for r in rows)
    assert multiprocessing.active_children() == []  # rank 1 was stopped
    with pytest.raises(ValueError, match="train.data_parallel"):
        train({**recipe, "train": {**recipe["train"], "data_parallel": 0}}, str(tmp_path / "x"))
