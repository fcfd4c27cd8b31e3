"""The presets' init schemes: transformers' N(0, initializer_range) ("normal") and the small
presets' fan-in init ("fan_in"), which is what lets the tiny preset learn to copy."""
import pytest
import torch

from longcat.models import LongcatFlashForCausalLM
from longcat.models.config import PRESETS, LongcatFlashConfig


def _model(**overrides):
    torch.manual_seed(0)
    return LongcatFlashForCausalLM(LongcatFlashConfig.from_preset("tiny", **overrides))


def test_presets_schemes():
    assert PRESETS["tiny"].init_scheme == PRESETS["small"].init_scheme == "fan_in"
    assert PRESETS["longcat-flash"].init_scheme == "normal"


def test_fan_in_init_scales():
    m = _model()
    attn = m.model.layers[0].self_attn[0]
    moe = m.model.layers[0].mlp
    for w, fan_in in ((attn.q_a_proj.weight, 128), (attn.kv_b_proj.weight, 512), (attn.o_proj.weight, 64),
                      (m.lm_head.weight, 128), (moe.w13, 128), (moe.w2, 64)):
        assert float(w.std()) == pytest.approx((3 * fan_in) ** -0.5, rel=0.05)
    assert float(m.model.embed_tokens.weight[1:].std()) == pytest.approx(0.02, rel=0.05)
    assert float(moe.router_weight.std()) == pytest.approx(0.02, rel=0.1)
    assert float(m.model.embed_tokens.weight[0].abs().max()) == 0.0   # padding row


def test_normal_init_and_explicit_std():
    m = _model(init_scheme="normal")
    assert float(m.model.layers[0].self_attn[0].kv_b_proj.weight.std()) == pytest.approx(0.02, rel=0.05)
    m = _model()
    m.reset_parameters(0.1)   # an explicit std overrides the scheme
    assert float(m.model.layers[0].self_attn[0].kv_b_proj.weight.std()) == pytest.approx(0.1, rel=0.05)


def test_init_scheme_round_trip_and_bad_value(tmp_path):
    c = PRESETS["tiny"]
    c.save(tmp_path)
    assert LongcatFlashConfig.from_json_file(tmp_path).init_scheme == "fan_in"
    with pytest.raises(ValueError, match="'init_scheme' must be 'normal' or 'fan_in'"):
        LongcatFlashConfig.from_preset("tiny", init_scheme="xavier")
    with pytest.raises(ValueError, match="'initializer_range' must be > 0"):
        LongcatFlashConfig.from_preset("tiny", initializer_range=0.0)
