"""Each objective against values and gradients worked out by hand on tiny tensors."""
import math

import pytest
import torch

from longcat.rl.losses import TripletClip, clipped_objective, group_advantages, grpo_loss, gspo_loss, is_degenerate

CLIP = TripletClip(eps_neg_low=0.2, eps_neg_high=2.0, eps_pos_high=0.28)


def _leaf(values):
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


def test_group_advantages_by_hand():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    assert torch.allclose(group_advantages(r, eps=0.0), torch.tensor([[1.0, -1.0, -1.0, 1.0]], dtype=torch.float64))
    assert torch.allclose(group_advantages(r, normalize_std=False), torch.tensor([[0.5, -0.5, -0.5, 0.5]],
                                                                                dtype=torch.float64))
    assert is_degenerate([1, 1, 1]) and is_degenerate([0.0]) and not is_degenerate([1, 0, 1])


def test_grpo_positive_advantage_clip_and_tis():
    # ratios 1.1 (inside) and 1.5 (clipped at 1.28); TIS weights 1 and min(4, 2) = 2
    logp = _leaf([[math.log(1.1), math.log(1.5)]])
    old = torch.zeros(1, 2, dtype=torch.float64)
    behav = torch.tensor([[0.0, math.log(0.25)]], dtype=torch.float64)
    loss, stats = grpo_loss(logp, old, behav, torch.tensor([1.0], dtype=torch.float64), torch.ones(1, 2),
                            clip=CLIP, max_len=4, tis_cap=2.0)
    assert loss.item() == pytest.approx(-(1.1 * 1 + 1.28 * 2) / 4)
    loss.backward()
    assert torch.allclose(logp.grad, torch.tensor([[-1.1 / 4, 0.0]], dtype=torch.float64))
    assert stats["clip_frac"] == pytest.approx(0.5) and stats["tis_mean"] == pytest.approx(1.5)


def test_grpo_negative_advantage_floor_dual_clip_and_mask():
    # ratios 0.5 (floored at 0.8), 4 (dual-clipped at 3), 1.5 (inside), 2 (masked out)
    logp = _leaf([[math.log(0.5), math.log(4.0), math.log(1.5), math.log(2.0)]])
    zeros = torch.zeros(1, 4, dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    loss, _ = grpo_loss(logp, zeros, zeros, torch.tensor([-1.0], dtype=torch.float64), mask, clip=CLIP,
                        max_len=3, tis_cap=None)
    assert loss.item() == pytest.approx((0.8 + 3.0 + 1.5) / 3)
    loss.backward()
    assert torch.allclose(logp.grad, torch.tensor([[0.0, 0.0, 1.5 / 3, 0.0]], dtype=torch.float64))


def test_grpo_normalises_by_max_len_not_by_tokens():
    logp = _leaf([[0.0, 0.0]])
    zeros = torch.zeros(1, 2, dtype=torch.float64)
    a = torch.tensor([1.0], dtype=torch.float64)
    short, _ = grpo_loss(logp, zeros, zeros, a, torch.tensor([[1.0, 0.0]]), clip=CLIP, max_len=8)
    long, _ = grpo_loss(logp, zeros, zeros, a, torch.tensor([[1.0, 1.0]]), clip=CLIP, max_len=8)
    assert short.item() == pytest.approx(-1 / 8) and long.item() == pytest.approx(-2 / 8)


def test_gspo_sequence_ratio_clip_tis_by_hand():
    # seq 0: A=+1, ratio exp(mean(ln1.2, ln1.2)) = 1.2 (inside), TIS exp(mean(ln1.5)) = 1.5
    # seq 1: A=-1, one valid token of ratio 0.5 (floored at 0.8), the second token is padding
    logp = _leaf([[math.log(1.2), math.log(1.2)], [math.log(0.5), 5.0]])
    old = torch.zeros(2, 2, dtype=torch.float64)
    behav = torch.tensor([[-math.log(1.5)] * 2, [0.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss, stats = gspo_loss(logp, old, behav, torch.tensor([1.0, -1.0], dtype=torch.float64), mask,
                            clip=CLIP, tis_cap=2.0)
    assert loss.item() == pytest.approx(-(1.2 * 1.5 - 0.8) / 2)
    loss.backward()
    # d/d logp_t of exp(mean) = ratio / len = 0.6, times TIS 1.5, over 2 sequences, negated
    assert torch.allclose(logp.grad, torch.tensor([[-0.45, -0.45], [0.0, 0.0]], dtype=torch.float64))
    assert stats["clip_frac"] == pytest.approx(0.5)


def test_clipped_objective_bounds():
    r = torch.tensor([0.1, 0.9, 1.2, 1.3, 2.5, 3.5])
    pos = clipped_objective(r, torch.ones(6), CLIP)
    neg = clipped_objective(r, -torch.ones(6), CLIP)
    assert torch.allclose(pos, torch.tensor([0.1, 0.9, 1.2, 1.28, 1.28, 1.28]))
    assert torch.allclose(neg, -torch.tensor([0.8, 0.9, 1.2, 1.3, 2.5, 3.0]))


def test_bad_input_names_the_argument():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="old_logp"):
        grpo_loss(x, torch.zeros(2, 2), x, torch.zeros(2), x, clip=CLIP, max_len=3)
    with pytest.raises(ValueError, match="advantages"):
        gspo_loss(x, x, x, torch.zeros(3), x, clip=CLIP)
    with pytest.raises(ValueError, match="eps_neg_low"):
        TripletClip(eps_neg_low=1.5)
