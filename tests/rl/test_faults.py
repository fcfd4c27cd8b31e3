"""Faults: a NaN loss skips the step; repeated NaNs stop the run with the last good checkpoint intact."""
import os
import subprocess
import sys
from pathlib import Path

from longcat.rl.checkpoint import latest_checkpoint, load_state

ROOT = Path(__file__).resolve().parents[2]

NAN_SCRIPT = """
import sys, math, torch
torch.set_num_threads(1)
from longcat.rl import train

async def parity(task, sample):
    return float(sample.completion_ids[0] % 2) if sample.completion_ids else 0.0

async def broken(task, sample):  # a reward bug: NaN reaches the loss
    return float("nan")

recipe = {"seed": 1, "rollout": {"group_size": 4, "max_new_tokens": 2, "max_concurrent": 4},
          "train": {"steps": 6, "batch_groups": 2, "checkpoint_every": 1, "max_nan_steps": 2}}
good = train(recipe, sys.argv[1], max_steps=2, progress=False, reward_fn=parity)
bad = train(recipe, sys.argv[1], progress=False, reward_fn=broken)
print("GOOD", good.steps, good.stopped)
print("BAD", bad.steps, bad.stopped is not None, bad.checkpoint_dir)
"""


def test_repeated_nan_stops_with_the_checkpoint_intact(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "python")}
    out = subprocess.run([sys.executable, "-c", NAN_SCRIPT, str(tmp_path / "run")], env=env, capture_output=True,
                         text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "GOOD 2 None" in out.stdout
    steps, stopped, ckpt = out.stdout.split("BAD ")[1].split()
    assert stopped == "True"
    latest = latest_checkpoint(str(tmp_path / "run"))
    assert ckpt == os.path.join(latest, "model")
    state = load_state(latest)
    # Groups buffered by the good run may still train; then two NaN steps in a row stop the run
    # and the checkpoint before them stays the latest.
    assert state["step"] >= 2 and int(steps) == state["step"] + 2 and state["nan_steps"] == 0
    from longcat.models import LongcatFlashForCausalLM
    model = LongcatFlashForCausalLM.from_pretrained(ckpt)
    assert all(bool(p.isfinite().all()) for p in model.parameters())
    skipped = [u for u, v in state["manager"]["ledger"].items() if v == "skipped"]
    assert skipped == []  # the skipped steps were never checkpointed
