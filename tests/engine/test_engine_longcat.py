"""The engine over the real LongcatFlashForCausalLM (tiny presets): paged continuous batching
gives the tokens of the model's plain full forward, run alone or with others."""
import math

import pytest
import torch
from conftest import make_char_tokenizer

from longcat.engine import LLM, EngineArgs, LLMEngine, SamplingParams
from longcat.models import LongcatFlashConfig, LongcatFlashForCausalLM


def _model(preset="tiny", seed=0):
    torch.manual_seed(seed)
    m = LongcatFlashForCausalLM(LongcatFlashConfig.from_preset(preset))
    m.reset_parameters(0.1)  # sharper logits than the 0.02 init: no near-ties in greedy decoding
    return m.eval()


@pytest.fixture(scope="module")
def tiny():
    return _model()


@torch.inference_mode()
def _full_logits(model, ids):
    return model(torch.tensor([ids]))[0].float()


def _greedy(model, prompt, n):
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(_full_logits(model, ids)[-1].argmax()))
    return ids[len(prompt):]


def _prompts(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 4096, (n,), generator=g).tolist() for n in lengths]


@pytest.mark.parametrize("preset", ["tiny", "tiny-zigzag"])
def test_continuous_batching_equals_each_request_alone_and_the_full_forward(preset):
    model = _model(preset)
    params = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    prompts = _prompts([60, 5, 33, 1], seed=1)  # 60 tokens: SSA windows (16 + 32) are active
    engine = LLMEngine(model, None, EngineArgs(page_size=16, num_pages=64, max_num_batched_tokens=40))
    reqs = []
    for p in prompts:  # arrivals at different steps; the 60-token prompt is chunked (budget 40)
        reqs.append(engine.add_request(p, params))
        engine.step()
    while engine.has_unfinished():
        engine.step()
    alone = LLM(model, page_size=16, num_pages=64)
    for p, r in zip(prompts, reqs):
        solo = alone.generate([p], params)[0].outputs[0].token_ids
        assert r.outputs[0].token_ids == solo == _greedy(model, p, 4)
    assert engine.allocator.num_free == engine.num_pages


def test_logprobs_and_n_samples(tiny):
    llm = LLM(tiny, page_size=16, num_pages=64)
    prompt = _prompts([20], seed=2)[0]
    out = llm.generate([prompt], SamplingParams(n=3, temperature=1.0, seed=5, max_tokens=5, logprobs=2,
                                                ignore_eos=True))[0]
    assert len(out.outputs) == 3
    for o in out.outputs:
        ref = _full_logits(tiny, prompt + o.token_ids).log_softmax(-1)[len(prompt) - 1:-1]
        for i, (tok, entry) in enumerate(zip(o.token_ids, o.logprobs)):
            assert math.isclose(entry[tok], float(ref[i, tok]), abs_tol=1e-3)
            top = ref[i].topk(2)
            assert all(math.isclose(entry[t], v, abs_tol=1e-3)
                       for t, v in zip(top.indices.tolist(), top.values.tolist()))


def test_update_weights_mid_flight():
    model = _model(seed=0)
    new = _model(seed=1)
    engine = LLMEngine(model, None, EngineArgs(page_size=16, num_pages=32))
    prompt = _prompts([9], seed=3)[0]
    req = engine.add_request(prompt, SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))
    for _ in range(3):
        engine.step()
    before = list(req.outputs[0].token_ids)
    old_head = model.lm_head.weight.clone()
    weights = new.hf_state_dict()
    with pytest.raises(ValueError, match="embed_tokens"):
        engine.update_weights({**weights, "model.embed_tokens.weight": torch.zeros(3, 3)}, version=1)
    with pytest.raises(ValueError, match="unexpected"):
        engine.update_weights({**weights, "model.layers.9.foo": torch.zeros(1)}, version=1)
    assert torch.equal(model.lm_head.weight, old_head)  # the bad updates touched nothing
    engine.update_weights(weights, version=1)
    while engine.has_unfinished():
        engine.step()
    o = req.outputs[0]
    k = len(before)
    assert o.token_ids[:k] == before and o.versions == [0] * k + [1] * (8 - k)
    assert o.token_ids[k:] == _greedy(new, prompt + before, 8 - k)


def test_llm_from_a_checkpoint_folder(tiny, tmp_path):
    tiny.save_pretrained(tmp_path)
    make_char_tokenizer().save_pretrained(tmp_path)
    llm = LLM(str(tmp_path), page_size=16, max_num_seqs=4)
    assert llm.engine.max_model_len == tiny.config.max_position_embeddings
    out = llm.generate("hello", SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))[0]
    ids = llm.tokenizer("hello")["input_ids"]
    assert out.prompt_token_ids == ids and out.outputs[0].token_ids == _greedy(tiny, ids, 4)
