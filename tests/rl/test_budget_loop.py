"""The dynamic budget wired into the loop: group sizes follow live pass rates, the metrics rows
carry the allocation, the pass-rate table survives a resume, bad recipe values name the key."""
import asyncio
import json

import pytest
import torch

from longcat.rl.budget import RolloutBudget
from longcat.rl.buffer import SampleBuffer, StalenessManager
from longcat.rl.loop import RolloutManager, StreamingLoop
from longcat.rl.recipe import load_recipe
from test_loop import FakePolicy  # tests/rl is on sys.path (pytest prepend mode)


class TwoPrompts:
    """Even uids are prompt [0] (always solved), odd uids prompt [1] (solved half the time)."""

    def get(self, uid):
        return uid % 2, [uid % 2]


async def reward(task, sample):
    return 1.0 if task == 0 else float(sample.completion_ids[0] % 2)


def run_loop(budget, steps):
    policy, manager, staleness = FakePolicy(), RolloutManager(), StalenessManager(2, 1, 4)
    loop = StreamingLoop(policy=policy, source=TwoPrompts(), reward_fn=reward, manager=manager,
                         buffer=SampleBuffer(), staleness=staleness, group_size=4, controllers=2,
                         log=lambda m: None, budget=budget)
    seen = []

    async def on_batch(report):
        seen.append((report, budget.take_stats() if budget else None))
        await policy.update_weights(None, policy.version + 1)
        await staleness.set_version(policy.version)
        return report.step < steps

    asyncio.run(asyncio.wait_for(loop.run(on_batch), 30))
    return seen, manager


def test_greedy_moves_rollouts_from_the_solved_prompt_to_the_open_one():
    budget = RolloutBudget("greedy", 4, window=4, unit=2, max_group_size=8, decay=1.0)
    seen, manager = run_loop(budget, 10)
    sizes = [len(g.samples) for r, _ in seen for g in r.groups]
    assert sizes[0] == 4, sizes  # both prompts start at the prior 0.5: equal shares of the budget
    assert max(sizes) == 8, sizes  # the open prompt [1] gets the solved prompt's share
    assert budget.rates.rate((0,)) > 0.9 and 0.3 < budget.rates.rate((1,)) < 0.7
    assert "unallocated" in manager.ledger.values()  # the solved prompt is no longer rolled out
    assert all(u % 2 == 1 for r, _ in seen for g in r.groups for u in [g.uid])
    for _, stats in seen:
        assert stats["budget_samples"] <= stats["budget_limit"]
    late = seen[-1][1]
    assert late["rollouts_max"] == 8 and late["rollouts_min"] == 0


def test_oversample_launches_more_rollouts_for_a_nearly_solved_prompt():
    budget = RolloutBudget("oversample", 4, max_group_size=16, decay=1.0, max_factor=4.0)
    budget.rates.update((0,), [1.0] * 40)
    budget.rates.update((1,), [1.0, 0.0] * 20)
    sizes = budget.plan([(0,), (1,)])
    assert sizes[0] == 16 and sizes[1] == 5  # 4 / P(informative group of 4): 1 / (1 - 2 * 0.5**4) -> 4.27 -> 5
    seen, _ = run_loop(RolloutBudget("oversample", 4, max_group_size=16), 3)
    assert all(len(g.samples) >= 4 for r, _ in seen for g in r.groups)


def test_no_budget_keeps_the_fixed_group_size():
    seen, _ = run_loop(None, 3)
    assert {len(g.samples) for r, _ in seen for g in r.groups} == {4}


def test_bad_budget_values_name_the_key():
    for section, match in (({"mode": "greediest"}, "budget.mode"), ({"unit": 1}, "budget.unit"),
                           ({"decay": 0.0}, "budget.decay"), ({"window": 0}, "budget.window"),
                           ({"mode": "greedy", "size": 3}, "unknown key 'budget.size'"),
                           ({"mode": "oversample", "max_group_size": 4}, "budget.max_group_size"),
                           ({"mode": "greedy", "unit": 66, "max_group_size": 66}, "budget.unit")):
        with pytest.raises(ValueError, match=match):
            load_recipe({"budget": section})
    assert load_recipe({}).budget.mode == "none"


def test_metrics_have_the_allocation_and_resume_restores_the_pass_rates(tmp_path):
    from longcat.rl import train
    from longcat.rl.checkpoint import latest_checkpoint, load_state
    from longcat.rl.runner import _Run

    torch.set_num_threads(1)

    async def parity(task, sample):  # varies within groups without a trained model
        return float(sample.completion_ids[0] % 2) if sample.completion_ids else 0.0

    recipe = load_recipe({"seed": 1, "warm_start": {"steps": 0}, "task": {"max_operand": 2},
                          "rollout": {"group_size": 4, "max_new_tokens": 2, "controllers": 1, "max_concurrent": 2},
                          "train": {"steps": 2, "batch_groups": 2, "checkpoint_every": 1},
                          "budget": {"mode": "greedy", "window": 2}})
    res = train(recipe, tmp_path, progress=False, reward_fn=parity)
    rows = [json.loads(x) for x in open(res.metrics_path)]
    for row in rows:
        for k in ("budget_mode", "rollouts_mean", "rollouts_min", "rollouts_max", "budget_samples", "budget_limit",
                  "pass_rate_buckets", "pass_rate_tracked", "samples"):
            assert k in row, k
        assert sum(row["pass_rate_buckets"].values()) == row["budget_prompts"]
    saved = load_state(latest_checkpoint(str(tmp_path)))["pass_rates"]
    assert saved and all(isinstance(k, tuple) for k in saved)
    run = _Run(recipe, str(tmp_path), 3, False)
    try:
        assert run.budget.rates.counts == saved
    finally:
        asyncio.run(run.policy.close())
        run.metrics.close()
        run._exec.shutdown()
