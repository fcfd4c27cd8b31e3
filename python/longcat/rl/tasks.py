"""The RL side of ``longcat.tasks.arith``: a character-level tokenizer the tiny model can learn
digits with, a deterministic prompt source (task ``uid`` -> problem), the reward, a heavy-tailed
latency wrapper for any reward, and the short supervised warm start."""
from __future__ import annotations

import asyncio
import random
from typing import Any

import torch

from longcat.rl.protocols import Sample
from longcat.tasks.arith import ArithProblem, make_problems, score

ARITH_CHARS = "0123456789+-*= []"  # brackets: the compact Heavy Thinking summary layout "12+7=[19][18]="
SPECIALS = ["<pad>", "<s>", "</s>"]  # ids 0, 1, 2 as the model presets' pad/bos/eos


def arith_tokenizer():
    """A Hugging Face fast tokenizer with one id per character of arithmetic (plus pad/bos/eos),
    so ``save_pretrained`` next to the weights makes ``LLM(folder).generate("12+7=")`` work."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for c in ARITH_CHARS:
        vocab[c] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))  # no merges: one token per character
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(SPECIALS)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   clean_up_tokenization_spaces=False)


class ArithSource:
    """uid -> (problem, prompt ids): problem ``uid`` is drawn from its own seed, so any prompt can
    be regenerated from its id alone (a re-queued prompt after a resume is the same prompt)."""

    def __init__(self, tokenizer, seed: int = 0, max_operand: int = 20, ops: str = "+-", n_terms: int = 2):
        self.tokenizer, self.seed = tokenizer, seed
        self.kwargs = dict(max_operand=max_operand, ops=ops, n_terms=n_terms)

    def problem(self, uid: int) -> ArithProblem:
        return make_problems(1, seed=self.seed * 1_000_003 + uid, **self.kwargs)[0]

    def get(self, uid: int) -> tuple[ArithProblem, list[int]]:
        p = self.problem(uid)
        return p, list(self.tokenizer(p.prompt)["input_ids"])


class ArithReward:
    """1.0 for a correct answer (``longcat.tasks.arith.score`` on the decoded completion; a task
    with ``resolve``, a picking summary prompt, is scored on the answer its completion names)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    async def __call__(self, task: ArithProblem, sample: Sample) -> float:
        text = self.tokenizer.decode(sample.completion_ids, skip_special_tokens=True)
        resolve = getattr(task, "resolve", None)
        return score(text if resolve is None else resolve(text), task)


class DelayedReward:
    """Wraps a reward with a heavy-tailed delay, ``min(scale * U**(-1/alpha), cap)`` seconds
    (Pareto, tail index ``alpha``): most samples are fast, a few take very long, as real
    environment steps and sandboxes do."""

    def __init__(self, inner, scale: float, alpha: float, cap: float, seed: int = 0):
        if not scale > 0 or not alpha > 0 or not cap > 0:
            raise ValueError(f"DelayedReward: scale, alpha and cap must be > 0, got {scale}, {alpha}, {cap}")
        self.inner, self.scale, self.alpha, self.cap = inner, scale, alpha, cap
        self.rng = random.Random(seed)

    def delay(self) -> float:
        return min(self.scale * (1.0 - self.rng.random()) ** (-1.0 / self.alpha), self.cap)

    async def __call__(self, task: Any, sample: Sample) -> float:
        await asyncio.sleep(self.delay())
        return await self.inner(task, sample)


def warm_start(model: torch.nn.Module, source: ArithSource, steps: int, batch_size: int = 64, lr: float = 3e-3,
               seed: int = 0, eos_id: int = 2, pad_id: int = 0) -> list[float]:
    """``steps`` supervised steps on correct answers (prompt tokens masked out of the loss);
    returns the losses. Prompt uids are negative, so they never collide with RL prompts."""
    if steps <= 0:
        return []
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99))
    losses = []
    model.train()
    for step in range(steps):
        rows = []
        for i in range(batch_size):
            p, prompt = source.get(-1 - (seed * 7919 + step * batch_size + i))
            answer = list(source.tokenizer(str(p.answer))["input_ids"]) + [eos_id]
            rows.append((prompt, answer))
        S = max(len(a) + len(b) for a, b in rows)
        ids = torch.full((len(rows), S), pad_id, dtype=torch.long)
        labels = torch.full((len(rows), S), -100, dtype=torch.long)
        mask = torch.zeros(len(rows), S, dtype=torch.long)
        for r, (a, b) in enumerate(rows):
            ids[r, :len(a) + len(b)] = torch.tensor(a + b)
            labels[r, len(a):len(a) + len(b)] = torch.tensor(b)
            mask[r, :len(a) + len(b)] = 1
        loss = model(ids, attention_mask=mask, labels=labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses
