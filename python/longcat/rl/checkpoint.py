"""Lossless checkpoints of an RL run, written then renamed so a kill at any moment leaves the
previous one intact: ``checkpoints/step-NNNNNN/`` holds the policy as a Hugging Face-layout
folder (``model/``, loadable by ``LLM(...)``) and ``state.pt`` (optimizer, RNG, sample buffer,
in-flight and re-queued prompt ids, the prompt ledger, version counters); the ``latest`` file
names the newest complete one and is itself replaced atomically."""
from __future__ import annotations

import dataclasses
import os
import random
import shutil
from typing import Optional

import torch

from longcat.rl.protocols import Group, Sample

LATEST = "latest"


def rng_state() -> dict:
    return {"python": random.getstate(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])


def groups_to_list(groups: list[Group]) -> list[dict]:
    return [dataclasses.asdict(g) for g in groups]


def groups_from_list(items: list[dict]) -> list[Group]:
    return [Group(**{**g, "samples": [Sample(**s) for s in g["samples"]]}) for g in items]


def save_checkpoint(root: str, step: int, model, tokenizer, state: dict, keep: int = 2,
                    carry_from: Optional[str] = None) -> str:
    """Write ``root/checkpoints/step-<step>`` and point ``latest`` at it; returns its path.
    ``carry_from``: the warm-start checkpoint, whose copy head (``copy_head.*``, trained by SFT
    beside the model) goes along into ``model/`` so ``--copy-values`` keeps ranking with it."""
    ckpts = os.path.join(root, "checkpoints")
    os.makedirs(ckpts, exist_ok=True)
    name = f"step-{step:06d}"
    final = os.path.join(ckpts, name)
    tmp = os.path.join(ckpts, f".tmp-{name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    model.save_pretrained(os.path.join(tmp, "model"))
    if tokenizer is not None:
        tokenizer.save_pretrained(os.path.join(tmp, "model"))
    if carry_from is not None:
        for f in ("copy_head.safetensors", "copy_head.json"):
            if os.path.isfile(os.path.join(carry_from, f)):
                shutil.copy2(os.path.join(carry_from, f), os.path.join(tmp, "model", f))
    torch.save(state, os.path.join(tmp, "state.pt"))
    shutil.rmtree(final, ignore_errors=True)  # a rerun of this step after a resume
    os.replace(tmp, final)
    pointer = os.path.join(ckpts, f".{LATEST}.tmp")
    with open(pointer, "w") as f:
        f.write(name + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(pointer, os.path.join(ckpts, LATEST))
    for old in sorted(d for d in os.listdir(ckpts) if d.startswith("step-"))[:-keep]:
        if old != name:
            shutil.rmtree(os.path.join(ckpts, old), ignore_errors=True)
    return final


def latest_checkpoint(root: str) -> Optional[str]:
    pointer = os.path.join(root, "checkpoints", LATEST)
    if not os.path.isfile(pointer):
        return None
    with open(pointer) as f:
        path = os.path.join(root, "checkpoints", f.read().strip())
    return path if os.path.isdir(path) else None


def load_state(path: str) -> dict:
    return torch.load(os.path.join(path, "state.pt"), weights_only=False)
