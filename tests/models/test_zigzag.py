"""Zig-Zag schedule: config parsing and validation, layer selection, calibration."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from longcat.models import ZigZagConfig, layer_importance, select_ssa_layers
from longcat.ops import SsaWindow

LONGCAT = {"sink_size": 128, "recent_size": 896, "sparsity": 0.5, "layer_type": "01" * 28}


def test_parse_longcat_config():
    cfg = ZigZagConfig.from_dict(LONGCAT, num_attention_sublayers=56)
    assert cfg.ssa_layers == list(range(1, 56, 2))
    assert cfg.is_ssa(1) and not cfg.is_ssa(0)
    assert cfg.window() == SsaWindow(sink=1, local=7, block_size=128)
    assert cfg.window_kwargs() == {"window": cfg.window()}
    assert cfg.to_dict() == LONGCAT
    odd = ZigZagConfig(sink_size=4, recent_size=100, layer_type="1")
    assert odd.window() == SsaWindow(sink=4, local=100, tokens=True)


@pytest.mark.parametrize("change,match", [
    ({"layer_type": "012"}, "found '2' at index 2"),
    ({"layer_type": "01" * 27}, "one character per attention sublayer \\(56\\), got 54"),
    ({"sparsity": 1.5}, "'sparsity' must be a number in \\[0, 1\\]"),
    ({"sink_size": -1}, "'sink_size' must be >= 0"),
    ({"recent_size": 0}, "'recent_size' must be >= 1"),
    ({"bogus": 1}, "unknown key 'bogus'"),
])
def test_bad_configs(change, match):
    d = dict(LONGCAT, **change)
    with pytest.raises(ValueError, match=match):
        ZigZagConfig.from_dict(d, num_attention_sublayers=56)


def test_missing_key_and_types():
    d = dict(LONGCAT)
    del d["layer_type"]
    with pytest.raises(ValueError, match="missing key 'layer_type'"):
        ZigZagConfig.from_dict(d)
    with pytest.raises(TypeError, match="'sink_size' must be an int"):
        ZigZagConfig.from_dict(dict(LONGCAT, sink_size="128"))
    with pytest.raises(TypeError, match="must be a dict"):
        ZigZagConfig.from_dict([1, 2])


def test_from_hf_config():
    from transformers.models.longcat_flash import modeling_longcat_flash as m

    hf = m.LongcatFlashConfig(num_layers=3)
    assert ZigZagConfig.from_hf_config(hf) is None
    hf.streaming_sparse_attention = dict(LONGCAT, layer_type="010011")
    assert ZigZagConfig.from_hf_config(hf).ssa_layers == [1, 4, 5]
    hf.streaming_sparse_attention = dict(LONGCAT, layer_type="0100")
    with pytest.raises(ValueError, match="\\(6\\), got 4"):
        ZigZagConfig.from_hf_config(hf)


def test_visible_keys_flat_beyond_window():
    cfg = ZigZagConfig.from_dict(LONGCAT)
    assert cfg.visible_keys(0) == 0
    assert cfg.visible_keys(100) == 100
    assert cfg.visible_keys(1024) == 1024              # exactly sink + local blocks
    assert cfg.visible_keys(1025) == 128 + 6 * 128 + 1  # block 8 starts: block 1 drops out
    assert {cfg.visible_keys(c) for c in (4096 * 32, 4096 * 256)} == {128 + 7 * 128}


def test_select_least_important():
    assert select_ssa_layers([0.9, 0.1, 0.5, 0.2], 0.5) == "0101"
    assert select_ssa_layers([1.0, 1.0, 1.0, 1.0], 0.5) == "1100"  # ties: lower index first
    assert select_ssa_layers(torch.tensor([3.0, 2.0, 1.0]), 0.0) == "000"
    assert select_ssa_layers([3.0, 2.0, 1.0], 1.0) == "111"
    with pytest.raises(ValueError, match="NaN at layer 1"):
        select_ssa_layers([1.0, float("nan")], 0.5)


@settings(max_examples=50, deadline=None)
@given(scores=st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=64), sparsity=st.floats(0, 1))
def test_select_property(scores, sparsity):
    lt = select_ssa_layers(scores, sparsity)
    chosen = [i for i, c in enumerate(lt) if c == "1"]
    assert len(lt) == len(scores) and len(chosen) == int(sparsity * len(scores) + 0.5)
    rest = [i for i in range(len(scores)) if i not in chosen]
    if chosen and rest:
        assert max(scores[i] for i in chosen) <= min(scores[i] for i in rest)


def _masked_attention(q, k, v, cu_q, cu_k, mq, mk, sink_tokens=None, window_tokens=None):
    # One sequence, causal, optional token-exact sink + window; enough to drive calibration.
    s = (q.float() @ k.float().T) / q.shape[-1] ** 0.5
    i, j = torch.arange(q.shape[0])[:, None], torch.arange(k.shape[0])[None, :]
    mask = j <= i
    if window_tokens is not None:
        mask &= (j < sink_tokens) | (j > i - window_tokens)
    return torch.softmax(s.masked_fill(~mask, float("-inf")), -1) @ v.float()


def test_layer_importance_ranks_local_layers_as_unimportant():
    g = torch.Generator().manual_seed(0)
    T, d = 256, 32
    cu = torch.tensor([0, T], dtype=torch.int32)
    q = torch.randn(T, d, generator=g)
    far_v = torch.randn(T, d, generator=g)
    # Layer 0 attends to its diagonal only (a local layer); layer 1 spreads attention everywhere.
    local = (q * 8, q * 8, far_v, cu, cu, T, T)
    spread = (torch.zeros(T, d), torch.zeros(T, d), far_v, cu, cu, T, T)
    scores = layer_importance([[local, spread]], full=_masked_attention, sparse=_masked_attention,
                              sink_tokens=4, window_tokens=16)
    assert scores.shape == (2,) and scores[0] < 0.01 < scores[1]
    assert select_ssa_layers(scores, 0.5) == "10"
    with pytest.raises(ValueError, match="empty"):
        layer_importance([], full=_masked_attention, sparse=_masked_attention)
