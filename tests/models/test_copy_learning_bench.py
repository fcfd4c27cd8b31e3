"""`longcat bench copy_learning`'s optimizers: which weights Muon trains, a short run of each, and
bad arguments."""
import math

import pytest
import torch

from longcat.bench import copy_learning as cl
from longcat.models import LongcatFlashForCausalLM
from longcat.models.config import LongcatFlashConfig


def _split(model):
    opt = cl.make_optimizer(model, "muon", 1e-3)
    muon, adamw = opt.opts
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    names = {id(p): n for n, p in model.named_parameters()}
    return ({names[id(p)] for g in muon.param_groups for p in g["params"]},
            {names[id(p)] for g in adamw.param_groups for p in g["params"]}, muon)


def test_muon_trains_the_matrices_and_adamw_the_rest():
    model = LongcatFlashForCausalLM(LongcatFlashConfig.from_preset("tiny"), dtype=torch.float32)
    muon, adamw, opt = _split(model)
    assert muon.isdisjoint(adamw) and muon | adamw == {n for n, _ in model.named_parameters()}
    assert "model.layers.0.self_attn.0.q_b_proj.weight" in muon
    assert "model.layers.1.mlps.1.down_proj.weight" in muon
    for name in ("model.embed_tokens.weight", "lm_head.weight", "model.layers.0.mlp.router_weight",
                 "model.layers.0.mlp.w13", "model.norm.weight"):
        assert name in adamw, name
    assert all(p.dim() == 2 for g in opt.param_groups for p in g["params"])
    assert opt.param_groups[0]["lr"] == pytest.approx(cl.MUON_LR_RATIO * 1e-3)

    plain = cl.PlainTransformer(4096, 64, 2, 2, 128, 80)
    muon, adamw, _ = _split(plain)
    assert {"embed.weight", "pos.weight", "head.weight"} <= adamw
    assert "body.layers.0.self_attn.in_proj_weight" in muon


@pytest.mark.parametrize("optimizer", cl.OPTIMIZERS)
def test_short_run_changes_the_loss(optimizer):
    result = cl.run(quick=True, optimizer=optimizer, steps=3)
    assert result.context["optimizer"] == optimizer and result.context["steps"] == 3
    by_model = {}
    for row in result.rows:
        assert math.isfinite(row["loss"])
        by_model.setdefault((row["task"], row["model"]), {})[row["step"]] = row["loss"]
    assert len(by_model) == 6
    for losses in by_model.values():
        assert set(losses) == {0, 3}
        assert losses[3] != losses[0]    # the optimizer stepped every model


def test_bad_arguments():
    with pytest.raises(ValueError, match="optimizer: expected one of"):
        cl.run(quick=True, optimizer="sgd")
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="steps: expected an int >= 1"):
            cl.run(quick=True, steps=bad)
    with pytest.raises(ValueError, match="optimizer: expected one of"):
        cl.make_optimizer(torch.nn.Linear(2, 2), "lion", 1e-3)
