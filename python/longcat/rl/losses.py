"""Policy-gradient objectives of the DORA recipe: GRPO (token-level ratio, no KL) and GSPO
(sequence-level ratio), both with group-relative advantages, triplet clipping and truncated
importance sampling (TIS) for the gap between the rollout engine's and the trainer's logprobs.

Three probabilities meet here (AReaL's decoupled PPO):
  * ``behav_logp``: what the rollout engine reported when it sampled the token (possibly an older
    policy version, and a different numerical path than the trainer);
  * ``old_logp``: the trainer's logprob at the start of this step (the proximal policy, detached);
  * ``logp``: the trainer's logprob under the parameters being optimised (carries the gradient).
The clipped ratio is ``logp - old_logp``; the TIS weight ``min(exp(old_logp - behav_logp), C)``
corrects for staleness and engine mismatch and is never differentiated.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TripletClip:
    """The clip bounds of LongCat-Flash-Thinking (section 3.2). For a positive advantage the ratio
    is capped at ``1 + eps_pos_high`` (PPO's upper clip). For a negative advantage it is floored at
    ``1 - eps_neg_low`` (PPO's lower clip) and also capped at ``1 + eps_neg_high`` (dual clip), so
    a token whose probability exploded under a stale policy cannot dominate the batch."""

    eps_neg_low: float = 0.2
    eps_neg_high: float = 2.0
    eps_pos_high: float = 0.28

    def __post_init__(self):
        for name in ("eps_neg_low", "eps_neg_high", "eps_pos_high"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"TripletClip.{name} must be a number > 0, got {v!r}")
        if self.eps_neg_low >= 1:
            raise ValueError(f"TripletClip.eps_neg_low must be < 1 (the floor 1 - eps is a ratio), "
                             f"got {self.eps_neg_low}")


def group_advantages(rewards: torch.Tensor, normalize_std: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """Group-relative advantages ``(r - mean) / (std + eps)`` over the last dim (one group per row);
    ``normalize_std=False`` gives Dr.GRPO's ``r - mean``. std is the population std (ddof 0)."""
    if rewards.dim() < 1 or rewards.shape[-1] < 1:
        raise ValueError(f"group_advantages: 'rewards' must be [..., group] with group >= 1, got {list(rewards.shape)}")
    centred = rewards - rewards.mean(-1, keepdim=True)
    if not normalize_std:
        return centred
    return centred / (rewards.std(-1, unbiased=False, keepdim=True) + eps)


def is_degenerate(rewards) -> bool:
    """A group whose samples all got the same reward (all correct, all wrong) has zero advantage
    everywhere and teaches nothing: online filtering drops it."""
    rewards = list(rewards)
    return all(r == rewards[0] for r in rewards)


def clipped_objective(ratio: torch.Tensor, advantages: torch.Tensor, clip: TripletClip) -> torch.Tensor:
    """Per-element ``clip(ratio) * A`` of the triplet scheme (to be maximised); the gradient flows
    through ``ratio`` only where it is inside its bounds."""
    pos = torch.minimum(ratio, torch.full_like(ratio, 1 + clip.eps_pos_high))
    neg = torch.clamp(torch.maximum(ratio, torch.full_like(ratio, 1 - clip.eps_neg_low)),
                      max=1 + clip.eps_neg_high)
    return torch.where(advantages >= 0, pos, neg) * advantages


def _check(logp, old_logp, behav_logp, advantages, mask):
    shape = list(logp.shape)
    if logp.dim() != 2:
        raise ValueError(f"policy loss: 'logp' must be [batch, tokens], got {shape}")
    for name, t in (("old_logp", old_logp), ("behav_logp", behav_logp), ("mask", mask)):
        if list(t.shape) != shape:
            raise ValueError(f"policy loss: '{name}' must have logp's shape {shape}, got {list(t.shape)}")
    if list(advantages.shape) != shape[:1]:
        raise ValueError(f"policy loss: 'advantages' must be [batch] = {shape[:1]}, got {list(advantages.shape)}")


def grpo_loss(logp, old_logp, behav_logp, advantages, mask, *, clip: TripletClip, max_len: int,
              tis_cap: float | None = 2.0) -> tuple[torch.Tensor, dict]:
    """GRPO without KL: token ratio ``exp(logp - old_logp)``, triplet-clipped, times the token's
    TIS weight ``min(exp(old_logp - behav_logp), tis_cap)``; summed over valid tokens and divided by
    ``batch * max_len`` (Dr.GRPO's constant normaliser: long answers are not down-weighted per
    token, and the loss scale does not depend on which lengths happened to be sampled).
    Shapes: logp/old_logp/behav_logp/mask ``[B, T]``, advantages ``[B]``. Returns (loss, stats)."""
    _check(logp, old_logp, behav_logp, advantages, mask)
    if max_len < 1:
        raise ValueError(f"grpo_loss: 'max_len' must be >= 1, got {max_len}")
    mask = mask.to(logp.dtype)
    ratio = torch.exp(logp - old_logp.detach())
    adv = advantages[:, None].expand_as(ratio)
    tis = _tis(old_logp.detach() - behav_logp, tis_cap)
    obj = clipped_objective(ratio, adv, clip) * tis
    loss = -(obj * mask).sum() / (logp.shape[0] * max_len)
    with torch.no_grad():
        n = mask.sum().clamp(min=1)
        clipped = (clipped_objective(ratio, adv, clip) != ratio * adv).to(mask.dtype)
        stats = {"clip_frac": float((clipped * mask).sum() / n), "tis_mean": float((tis * mask).sum() / n),
                 "ratio_mean": float((ratio * mask).sum() / n)}
    return loss, stats


def gspo_loss(logp, old_logp, behav_logp, advantages, mask, *, clip: TripletClip,
              tis_cap: float | None = 2.0) -> tuple[torch.Tensor, dict]:
    """GSPO: one ratio per sequence, ``exp(mean_t(logp - old_logp))`` over its valid tokens,
    triplet-clipped against the sequence's advantage, times the sequence TIS weight
    ``min(exp(mean_t(old_logp - behav_logp)), tis_cap)``; the loss is minus the mean over
    sequences. Shapes as ``grpo_loss``."""
    _check(logp, old_logp, behav_logp, advantages, mask)
    mask = mask.to(logp.dtype)
    lengths = mask.sum(-1).clamp(min=1)
    seq_log_ratio = ((logp - old_logp.detach()) * mask).sum(-1) / lengths
    ratio = torch.exp(seq_log_ratio)
    tis = _tis(((old_logp.detach() - behav_logp) * mask).sum(-1) / lengths, tis_cap)
    obj = clipped_objective(ratio, advantages, clip) * tis
    loss = -obj.mean()
    with torch.no_grad():
        clipped = (clipped_objective(ratio, advantages, clip) != ratio * advantages).to(ratio.dtype)
        stats = {"clip_frac": float(clipped.mean()), "tis_mean": float(tis.mean()),
                 "ratio_mean": float(ratio.mean())}
    return loss, stats


def _tis(log_ratio: torch.Tensor, cap: float | None) -> torch.Tensor:
    w = torch.exp(log_ratio.detach())
    return w if cap is None else torch.clamp(w, max=cap)


LOSSES = {"grpo": grpo_loss, "gspo": gspo_loss}
