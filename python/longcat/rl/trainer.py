"""The trainer: a batch of groups -> advantages -> the trainer's own logprobs -> GSPO/GRPO loss
-> one optimizer step (or ``minibatches`` of them against one proximal policy). A non-finite
loss or gradient skips the step (with one minibatch nothing is applied; with several, the
minibatches before the bad one stay applied) and says so in the returned stats."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from longcat.rl.losses import LOSSES, TripletClip, group_advantages
from longcat.rl.protocols import Group


@dataclass
class Batch:
    input_ids: torch.Tensor      # [B, S] prompt + completion, right-padded
    attention_mask: torch.Tensor  # [B, S]
    completion_mask: torch.Tensor  # [B, T] 1 on generated tokens
    starts: torch.Tensor          # [B] index of each row's first completion token
    behav_logp: torch.Tensor      # [B, T]
    advantages: torch.Tensor      # [B]


def sample_advantages(samples: list, normalize_std: bool) -> torch.Tensor:
    """Group-relative advantages of one group's samples. Segments of one multi-turn trajectory
    (same ``trajectory``) count once in the group statistics and share their trajectory's value."""
    keys = [i if s.trajectory is None else ("t", s.trajectory) for i, s in enumerate(samples)]
    order = list(dict.fromkeys(keys))
    first = {k: s.reward for k, s in reversed(list(zip(keys, samples)))}
    adv = group_advantages(torch.tensor([first[k] for k in order], dtype=torch.float32), normalize_std)
    return adv[[order.index(k) for k in keys]]


def build_batch(groups: list[Group], normalize_std: bool, pad_id: int = 0) -> Batch:
    samples, advantages = [], []
    for g in groups:
        samples += g.samples
        advantages.append(sample_advantages(g.samples, normalize_std))
    B = len(samples)
    T = max(1, max(len(s.completion_ids) for s in samples))
    S = max(len(s.prompt_ids) + len(s.completion_ids) for s in samples)
    ids = torch.full((B, S), pad_id, dtype=torch.long)
    attn = torch.zeros(B, S, dtype=torch.long)
    cmask = torch.zeros(B, T)
    behav = torch.zeros(B, T)
    starts = torch.zeros(B, dtype=torch.long)
    for i, s in enumerate(samples):
        p, c = len(s.prompt_ids), len(s.completion_ids)
        ids[i, :p + c] = torch.tensor(s.prompt_ids + s.completion_ids)
        attn[i, :p + c] = 1
        cmask[i, :c] = 1 if s.loss_mask is None else torch.tensor(s.loss_mask, dtype=torch.float32)
        behav[i, :c] = torch.tensor(s.logprobs, dtype=torch.float32)
        starts[i] = p
    return Batch(ids, attn, cmask, starts, behav, torch.cat(advantages))


def completion_logprobs(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """``[B, T]`` logprob of each completion token under ``model`` (0 where masked)."""
    logits = model(batch.input_ids, attention_mask=batch.attention_mask).float()
    logp_all = F.log_softmax(logits[:, :-1], dim=-1)
    targets = batch.input_ids[:, 1:]
    token_logp = logp_all.gather(-1, targets[..., None])[..., 0]  # position t predicts token t + 1
    T = batch.completion_mask.shape[1]
    idx = (batch.starts[:, None] - 1 + torch.arange(T)[None]).clamp(max=token_logp.shape[1] - 1)
    return token_logp.gather(1, idx) * batch.completion_mask


class PolicyTrainer:
    def __init__(self, model: torch.nn.Module, *, lr: float, loss: str = "gspo", clip: TripletClip = TripletClip(),
                 tis_cap: float | None = 2.0, max_len: int = 16, normalize_std: bool = True,
                 grad_clip: float = 1.0, minibatches: int = 1, weight_decay: float = 0.0, pad_id: int = 0):
        if loss not in LOSSES:
            raise ValueError(f"PolicyTrainer: 'loss' must be one of {sorted(LOSSES)}, got {loss!r}")
        self.model = model
        self.loss_name, self.clip, self.tis_cap, self.max_len = loss, clip, tis_cap, max_len
        self.normalize_std, self.grad_clip, self.minibatches, self.pad_id = normalize_std, grad_clip, minibatches, pad_id
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.99))

    def _loss(self, logp, old, behav, adv, mask):
        kwargs = dict(clip=self.clip, tis_cap=self.tis_cap)
        if self.loss_name == "grpo":
            kwargs["max_len"] = self.max_len
        return LOSSES[self.loss_name](logp, old, behav, adv, mask, **kwargs)

    # Data-parallel hooks (longcat.rl.distributed overrides them; one process: identity).
    def _local_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """The rows of ``rows`` this process computes."""
        return rows

    def _all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def _sync_grads(self) -> None:
        pass

    def _idle_loss(self, batch: Batch, grad: bool):
        """This process has no row of a minibatch: None (nothing to compute), or, for a sharded
        model whose forward is a collective, a zero loss through the model (longcat.rl.fsdp)."""
        return None

    def step(self, groups: list[Group]) -> dict:
        batch = build_batch(groups, self.normalize_std, self.pad_id)
        self.model.train()
        B = batch.input_ids.shape[0]
        parts = torch.arange(B).chunk(self.minibatches)
        mine = torch.cat([self._local_rows(rows) for rows in parts])
        old = torch.zeros_like(batch.behav_logp)
        if len(mine):
            with torch.no_grad():
                old[mine] = completion_logprobs(self.model, _rows_of(batch, mine))
        else:
            self._idle_loss(batch, grad=False)
        stats = {"loss": 0.0, "grad_norm": 0.0, "skipped": False}
        for rows in parts:
            local = self._local_rows(rows)
            self.optimizer.zero_grad(set_to_none=True)
            if len(local):
                sub = _rows_of(batch, local)
                logp = completion_logprobs(self.model, sub)
                loss, extra = self._loss(logp, old[local], sub.behav_logp, sub.advantages, sub.completion_mask)
                # Both losses are means over rows: a share of rows weighs by its size, so the
                # processes' gradients sum to the whole minibatch's.
                loss = loss * (len(local) / len(rows))
                stats.update(extra)
            else:
                loss = self._idle_loss(batch, grad=True)
            total = self._all_reduce_sum(torch.zeros(()) if loss is None else loss.detach().clone())
            if not torch.isfinite(total):
                stats.update(skipped=True, loss=float(total))
                break
            if loss is not None:
                loss.backward()
            self._sync_grads()
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            if not math.isfinite(float(norm)):
                self.optimizer.zero_grad(set_to_none=True)
                stats.update(skipped=True, loss=float(total), grad_norm=float(norm))
                break
            self.optimizer.step()
            stats["loss"] += float(total) / len(parts)
            stats["grad_norm"] = max(stats["grad_norm"], float(norm))
        self.model.eval()
        # The engine/trainer gap on the same tokens (the mismatch TIS corrects), per token.
        mask = torch.zeros(B, 1)
        mask[mine] = 1.0
        mask = batch.completion_mask * mask
        sums = self._all_reduce_sum(torch.stack([((old - batch.behav_logp).abs() * mask).sum(), mask.sum()]))
        stats["logp_gap"] = float(sums[0] / sums[1].clamp(min=1))
        stats["tokens"] = int(sums[1])
        return stats


def _rows_of(batch: Batch, rows: torch.Tensor) -> Batch:
    return Batch(*(getattr(batch, f.name)[rows] for f in dataclasses.fields(batch)))
