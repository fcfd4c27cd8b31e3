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
SCRIPT = f"""
import sys, torch
torch.set_num_threads(1)
from longcat.rl import train

async def parity(task, sample):  # a reward that varies within groups without a trained model
    return float(sample.completion_ids[0] % 2) if sample.completion_ids else 0.0

recipe = {{"seed": 3, "warm_start": {{"steps": 0}},
          "rollout": {{"group_size": 4, "max_new_tokens": 3, "controllers": 2, "max_concurrent": 4}},
          "train": {{"steps": {STEPS}, "batch_groups": 2, "max_staleness": 1, "checkpoint_every": 1, "lr": 1e-3}}}}
res = train(recipe, sys.argv[1], progress=False, reward_fn=parity)
print("DONE", res.steps, res.resumed_from)
"""


def _run(out, wait=True):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "python")}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(out)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    if wait:
        out_text, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, out_text
        return out_text
    return proc


def test_kill_and_resume_loses_no_prompt(tmp_path):
    out = tmp_path / "run"
    proc = _run(out, wait=False)
    deadline = time.time() + 180
    while latest_checkpoint(str(out)) is None:
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    time.sleep(random.Random().uniform(0.0, 1.5))  # a random moment after the first checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_state(latest_checkpoint(str(out)))["step"]
    text = _run(out)
    assert "DONE" in text and "resumed_from=" not in text
    state = load_state(latest_checkpoint(str(out)))
    assert state["step"] == STEPS
    ledger = state["manager"]["ledger"]
    buffered = [g["uid"] for g in state["buffer"]]
    requeued = state["manager"]["requeued"]
    places = list(ledger) + buffered + requeued
    assert len(places) == len(set(places)), "a prompt is in two places"
    assert set(places) == set(range(state["manager"]["next_uid"])), "a prompt was lost"
    trained = sorted(u for u, v in ledger.items() if v == "trained")
    assert len(trained) == STEPS * 2
    # The step history that survives: for each step, the row written last (the resumed run redoes
    # the steps after its checkpoint; the killed run's rows for them were never saved).
    rows = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        rows[r["step"]] = r
    assert sorted(rows) == list(range(1, STEPS + 1))
    history = [u for s in sorted(rows) for u in rows[s]["uids"]]
    assert len(history) == len(set(history)), "a prompt was trained twice"
    assert sorted(history) == trained
    assert killed_at >= 1


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
