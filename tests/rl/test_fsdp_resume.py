"""A run checkpointed by the FSDP2-sharded trainer (``train.sharding: fsdp2`` over 2 processes)
resumes in a one-process unsharded run: the saved policy is the consolidated weights and the
optimizer state is in the unsharded trainer's format."""
import json

import pytest
import torch

from longcat.models import LongcatFlashForCausalLM


def test_sharded_checkpoint_resumes_unsharded(tmp_path):
    from longcat.bench.rl import parity_reward
    from longcat.rl import train
    from longcat.rl.checkpoint import latest_checkpoint, load_state

    recipe = {"seed": 0, "warm_start": {"steps": 0},
              "rollout": {"group_size": 4, "max_new_tokens": 3, "controllers": 1, "max_concurrent": 4},
              "train": {"steps": 3, "batch_groups": 2, "max_staleness": 1, "lr": 1e-3, "checkpoint_every": 2,
                        "data_parallel": 2, "sharding": "fsdp2"}}
    first = train(recipe, str(tmp_path), max_steps=2, progress=False, reward_fn=parity_reward)
    assert first.steps == 2
    state = load_state(latest_checkpoint(str(tmp_path)))
    saved = LongcatFlashForCausalLM.from_pretrained(first.checkpoint_dir, dtype=torch.float32).state_dict()
    assert state["optimizer"]["state"] and all(not hasattr(v, "device_mesh") for s in state["optimizer"]["state"]
                                               .values() for v in s.values())  # consolidated, plain tensors
    plain = {**recipe, "train": {**recipe["train"], "data_parallel": 1, "sharding": "none"}}
    second = train(plain, str(tmp_path), progress=False, reward_fn=parity_reward)
    assert second.resumed_from is not None and second.steps == 3
    rows = [json.loads(x) for x in open(second.metrics_path)]
    assert [r["step"] for r in rows] == [1, 2, 3] and not any(r["skipped"] for r in rows)
    after = LongcatFlashForCausalLM.from_pretrained(second.checkpoint_dir, dtype=torch.float32).state_dict()
    assert any(not torch.equal(after[k], saved[k]) for k in saved)  # step 3 trained on from the sharded weights
    with pytest.raises(ValueError, match="train.sharding"):
        train({**recipe, "train": {**recipe["train"], "sharding": "zero3"}}, str(tmp_path / "x"))
