"""The Ray backend with a sharded trainer: the trainer actor is rank 0 of an FSDP2 trainer over
two processes it spawns (as verl's trainer workers shard the policy), generators and reward
workers are actors; the run trains, checkpoints the consolidated weights, and the actor's ranks
are gone when the run ends."""
import subprocess

import pytest
import torch

from longcat.models import LongcatFlashForCausalLM
from longcat.rl import train
from longcat.rl.metrics import read_metrics

pytest.importorskip("ray")

from longcat.bench.rl import parity_reward  # noqa: E402  (importable by the reward workers)


def _rank_processes() -> list[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "spawn_main" in line]  # torch.multiprocessing's spawned ranks


def test_fsdp2_trainer_inside_the_ray_trainer_actor(ray_cluster, tmp_path):
    assert _rank_processes() == []
    recipe = {"name": "arith-ray-fsdp", "seed": 0, "model": {"preset": "tiny"},
              "task": {"max_operand": 9, "ops": "+-", "n_terms": 2}, "warm_start": {"steps": 0},
              "rollout": {"group_size": 4, "max_new_tokens": 3, "controllers": 1, "max_concurrent": 4},
              "train": {"steps": 2, "batch_groups": 2, "lr": 1e-3, "max_staleness": 1, "checkpoint_every": 1,
                        "data_parallel": 2, "sharding": "fsdp2"}}
    res = train(recipe, str(tmp_path), progress=False, backend="ray", reward_fn=parity_reward)
    assert res.steps == 2 and res.stopped is None
    rows = read_metrics(res.metrics_path)
    assert [r["version"] for r in rows] == [1, 2]
    # Each checkpoint holds the full (consolidated) weights the trainer actor sent back, and they
    # moved between the two steps.
    steps = [LongcatFlashForCausalLM.from_pretrained(str(tmp_path / "checkpoints" / f"step-{i:06d}" / "model"),
                                                     dtype=torch.float32).state_dict() for i in (1, 2)]
    assert steps[0].keys() == steps[1].keys()
    assert any(not torch.equal(steps[0][k], steps[1][k]) for k in steps[0])
    assert _rank_processes() == []  # the actor stopped the ranks it spawned
