"""A short supervised warm start of a small preset on ``longcat.tasks.arith``, so ``longcat bench
heavy`` has a model that solves part of the problems before the RL checkpoint exists.

Two kinds of examples, both completion-style and ending with EOS: the task itself
(``"12+7="`` -> ``"19"``) and the summary step in the ``COMPACT`` layout (``"12+7=[19][18]="`` ->
``"19"``), whose candidates are drawn like a policy's samples (right with a random probability,
else off by a small amount). The summary target is always the true answer, so the model learns
to use the candidates, not to copy their majority. The checkpoint is cached: a folder whose
``warmstart.json`` records the same settings is reused.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from longcat.heavy.templates import COMPACT, ShownCandidate
from longcat.tasks.arith import make_problems

IGNORE = -100


@dataclass(frozen=True)
class WarmStartConfig:
    preset: str = "tiny"
    steps: int = 300
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 0
    max_operand: int = 20
    ops: str = "+-"
    summary_fraction: float = 0.5   # share of summary-step examples in each batch
    max_candidates: int = 8

    def __post_init__(self):
        for name in ("steps", "batch_size", "max_operand", "max_candidates"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"WarmStartConfig.{name}: expected an int >= 1, got {v!r}")
        if not 0.0 <= self.summary_fraction <= 1.0:
            raise ValueError(f"WarmStartConfig.summary_fraction: expected a number in [0, 1], "
                             f"got {self.summary_fraction!r}")


def _noisy_candidates(answer: int, rng: random.Random, max_candidates: int) -> list[ShownCandidate]:
    k = rng.randint(1, max_candidates)
    p_right = rng.random()
    out = []
    for _ in range(k):
        value = answer if rng.random() < p_right else answer + rng.choice([-1, 1]) * rng.randint(1, 10)
        out.append(ShownCandidate(str(value)))
    return out


def make_examples(cfg: WarmStartConfig, n: int, rng: random.Random) -> list[tuple[str, str]]:
    """``n`` (prompt, completion) pairs: task examples and summary-step examples."""
    problems = make_problems(n, seed=rng.getrandbits(32), max_operand=cfg.max_operand, ops=cfg.ops)
    pairs = []
    for p in problems:
        prompt = p.prompt
        if rng.random() < cfg.summary_fraction:
            prompt = COMPACT.render(p.prompt, _noisy_candidates(p.answer, rng, cfg.max_candidates))
        pairs.append((prompt, str(p.answer)))
    return pairs


def _batch(tokenizer, pairs: list[tuple[str, str]], eos: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rows, labels = [], []
    for prompt, completion in pairs:
        p = tokenizer(prompt)["input_ids"]
        c = tokenizer(completion)["input_ids"] + [eos]
        rows.append(p + c)
        labels.append([IGNORE] * len(p) + c)
    width = max(map(len, rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    lab = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, (r, l) in enumerate(zip(rows, labels)):
        ids[i, :len(r)] = torch.tensor(r)
        lab[i, :len(l)] = torch.tensor(l)
        mask[i, :len(r)] = 1
    return ids, lab, mask


def fit(model, tokenizer, next_pairs, *, steps: int, lr: float, seed: int, device: str = "cpu", log=print,
        label: str = "fine-tune") -> list[float]:
    """``steps`` AdamW steps (one-cycle schedule from 20 steps, gradient clip 1.0) on batches of (prompt,
    completion) pairs from ``next_pairs()``; loss on the completion tokens and EOS only. Leaves
    the model in eval mode; returns the per-step losses."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    # One-cycle needs a warm-up of >= 2 steps (else it divides by zero): a constant rate below 20 steps.
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1) if steps >= 20 else None
    losses = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for step in range(steps):
            ids, lab, mask = (t.to(device) for t in _batch(tokenizer, next_pairs(), tokenizer.eos_token_id))
            loss = model(ids, attention_mask=mask, labels=lab)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if sched is not None:
                sched.step()
            losses.append(loss.item())
            if log is not None and (step + 1) % max(1, steps // 10) == 0:
                log(f"  {label} step {step + 1}/{steps}: loss {sum(losses[-10:]) / len(losses[-10:]):.3f}")
    model.eval()
    return losses


@torch.no_grad()
def mean_loss(model, tokenizer, pairs: list[tuple[str, str]], device: str = "cpu", batch_size: int = 64) -> float:
    """Mean per-token loss of the completions (and EOS) of ``pairs`` under ``model``."""
    if not pairs:
        raise ValueError("pairs: expected at least one (prompt, completion) pair, got none")
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(pairs), batch_size):
        ids, lab, mask = (t.to(device) for t in _batch(tokenizer, pairs[i:i + batch_size], tokenizer.eos_token_id))
        n = int((lab[:, 1:] != IGNORE).sum())
        total += model(ids, attention_mask=mask, labels=lab).item() * n
        count += n
    model.train(was_training)
    return total / count


def warm_start(out_dir: str | Path, cfg: WarmStartConfig = WarmStartConfig(), device: str = "cpu",
               log=print) -> Path:
    """Trains (or reuses) the warm-start checkpoint in ``out_dir``; returns the folder."""
    from transformers import AutoTokenizer

    from longcat.models import LongcatFlashForCausalLM
    from longcat.models.random_init import init_checkpoint

    out = Path(out_dir)
    record = out / "warmstart.json"
    if record.exists() and json.loads(record.read_text()).get("config") == asdict(cfg):
        return out
    init_checkpoint(out, preset=cfg.preset, seed=cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = LongcatFlashForCausalLM.from_pretrained(out, device=device)
    rng = random.Random(cfg.seed)
    start = time.perf_counter()
    losses = fit(model, tokenizer, lambda: make_examples(cfg, cfg.batch_size, rng), steps=cfg.steps, lr=cfg.lr,
                 seed=cfg.seed, device=device, log=log, label="warm start")
    model.save_pretrained(out)
    record.write_text(json.dumps({"config": asdict(cfg), "final_loss": sum(losses[-10:]) / len(losses[-10:]),
                                  "seconds": time.perf_counter() - start}, indent=2) + "\n")
    return out
