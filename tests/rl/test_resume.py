"""Kill a training process at a random moment, resume it, and check that no prompt was lost or
trained twice: every prompt id ever issued ends in exactly one place (trained, filtered, failed,
still buffered, re-queued), and the trained ids of the surviving step history are unique."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from longcat.rl.checkpoint import latest_checkpoint, load_state

ROOT = Path(__file__).resolve().parents[2]
STEPS = 6
SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from longcat.rl import train

async def parity(task, sample):  # a reward that varies within groups without a trained model
    return float(sample.completion_ids[0] % 2) if sample.completion_ids else 0.0

recipe = {"seed": 3, "warm_start": {"steps": 0},
          "rollout": {"group_size": 4, "max_new_tokens": 3, "controllers": 2, "max_concurrent": 4},
          "train": {"steps": int(sys.argv[4]), "batch_groups": 2, "max_staleness": 1, "checkpoint_every": 1,
                    "lr": 1e-3},
          "task": {"max_operand": 20 if sys.argv[2] == "none" else 3},  # greedy: prompts that come back
          "budget": {"mode": sys.argv[2]}}
if sys.argv[3] == "ray":  # reward workers must import the reward: the same parity, from a module
    from longcat.bench.rl import parity_reward as parity
res = train(recipe, sys.argv[1], progress=False, reward_fn=parity, backend=sys.argv[3])
print("DONE", res.steps, res.resumed_from)
"""


def _run(out, budget, wait=True, backend="local", steps=STEPS):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "python")}
    # A session of its own: the kill takes the run with every process it started (Ray's too).
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(out), budget, backend, str(steps)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    if wait:
        out_text, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, out_text
        return out_text
    return proc


@pytest.mark.parametrize("budget", ["none", "greedy"])  # greedy: skipped prompts, planned prompts re-queued
def test_kill_and_resume_loses_no_prompt(tmp_path, budget):
    kill_and_resume(tmp_path, budget, "local")


def kill_and_resume(tmp_path, budget: str, backend: str, steps: int = STEPS) -> None:
    """Start a run, SIGKILL it (and its process group) at a random moment after the first
    checkpoint, resume it to the end and check the ledger: no prompt lost or trained twice."""
    out = tmp_path / "run"
    proc = _run(out, budget, wait=False, backend=backend, steps=steps)
    deadline = time.time() + 180
    while latest_checkpoint(str(out)) is None:
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    time.sleep(random.Random().uniform(0.0, 1.5))  # a random moment after the first checkpoint
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = load_state(latest_checkpoint(str(out)))["step"]
    text = _run(out, budget, backend=backend, steps=steps)
    assert "DONE" in text and "resumed_from=" not in text
    state = load_state(latest_checkpoint(str(out)))
    assert state["step"] == steps
    ledger = state["manager"]["ledger"]
    buffered = [g["uid"] for g in state["buffer"]]
    requeued = state["manager"]["requeued"]
    places = list(ledger) + buffered + requeued
    assert len(places) == len(set(places)), "a prompt is in two places"
    assert set(places) == set(range(state["manager"]["next_uid"])), "a prompt was lost"
    trained = sorted(u for u, v in ledger.items() if v == "trained")
    assert len(trained) == steps * 2
    # The step history that survives: for each step, the row written last (the resumed run redoes
    # the steps after its checkpoint; the killed run's rows for them were never saved).
    rows = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        rows[r["step"]] = r
    assert sorted(rows) == list(range(1, steps + 1))
    history = [u for s in sorted(rows) for u in rows[s]["uids"]]
    assert len(history) == len(set(history)), "a prompt was trained twice"
    assert sorted(history) == trained
    assert killed_at >= 1
    if budget != "none":  # the pass-rate table went through the kill and the resume
        assert state["pass_rates"] and sum(n for _, n in state["pass_rates"].values()) > 0

