"""``torchrun --nproc_per_node 2 -m longcat rl train``: rank 0 is the single controller
(rollouts, buffer, checkpoints, trainer rank 0), rank 1 trains its share of every batch. The run
ends with its steps, checkpoints and metrics as a one-process run, and with both ranks holding
the same trained weights (checked at the end: a rank that did not train fails the run), or with
``sharding: fsdp2`` each its shard of them."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from longcat.rl.checkpoint import latest_checkpoint, load_state

ROOT = Path(__file__).resolve().parents[2]

RECIPE = """
name: arith-torchrun
seed: 0
model: {preset: tiny}
task: {max_operand: 3, ops: "+", n_terms: 2}
warm_start: {steps: 40, batch_size: 32, lr: 3.0e-3}
rollout: {group_size: 4, max_new_tokens: 3, controllers: 1, max_concurrent: 4}
algorithm: {filter_degenerate: false}
train: {steps: 2, batch_groups: 2, lr: 1.0e-3, max_staleness: 1, checkpoint_every: 1, data_parallel: %d,
        sharding: %s}
"""


def _torchrun(tmp_path, data_parallel: int, sharding: str = "none"):
    (tmp_path / "r.yaml").write_text(RECIPE % (data_parallel, sharding))
    # PYTHONFAULTHANDLER: a rank that crashes in native code prints every thread's Python stack.
    env = {**os.environ, "PYTHONPATH": str(ROOT / "python"), "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "longcat", "rl", "train", "--recipe", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "run"),
           "--no-progress"]
    # A session of its own, so a hang is killed with every rank.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"torchrun hung:\n{out[-2000:]}\n{err[-2000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.parametrize("sharding", ["none", pytest.param("fsdp2", marks=pytest.mark.slow)])
def test_torchrun_two_ranks_train_in_step(tmp_path, sharding):
    p = _torchrun(tmp_path, 2, sharding)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-8000:]
    assert "steps: 2" in p.stdout
    rows = [json.loads(x) for x in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["version"] for r in rows] == [1, 2] and not any(r["skipped"] for r in rows)
    assert any(r["grad_norm"] > 0 for r in rows)  # a real update, which both ranks had to apply alike
    state = load_state(latest_checkpoint(str(tmp_path / "run")))
    assert state["step"] == 2 and sum(o == "trained" for o in state["manager"]["ledger"].values()) == 4


def test_torchrun_conflicting_data_parallel_is_named(tmp_path):
    p = _torchrun(tmp_path, 3)
    assert p.returncode != 0 and "train.data_parallel" in p.stdout + p.stderr
