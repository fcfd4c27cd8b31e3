"""A model that has served decode steps can still be copied, pickled and saved whole: the RL
trainers deep-copy it, Ray and torch.distributed pickle it. Its cached inference weights (which
hold C++ objects that cannot be pickled) stay behind and are rebuilt by the copy on first use."""
import copy
import io
import pickle

import pytest
import torch

from longcat.engine import LLM, SamplingParams
from longcat.models import LongcatFlashConfig, LongcatFlashForCausalLM


def _greedy(model):
    out = LLM(model, max_model_len=64).generate([[5, 6, 7], [9, 10]], SamplingParams(temperature=0, max_tokens=4))
    return [c.outputs[0].token_ids for c in out]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_a_served_model_copies_pickles_and_saves(dtype):
    torch.manual_seed(0)
    model = LongcatFlashForCausalLM(LongcatFlashConfig.from_preset("tiny"), dtype=dtype)
    want = _greedy(model)
    assert any("_derived_cache" in m.__dict__ for m in model.modules())  # the caches exist now
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    copies = [copy.deepcopy(model), pickle.loads(pickle.dumps(model)), torch.load(buf, weights_only=False)]
    for c in copies:
        assert not any("_derived_cache" in m.__dict__ for m in c.modules())
        assert _greedy(c) == want
    assert any("_derived_cache" in m.__dict__ for m in model.modules())  # the original keeps its own
