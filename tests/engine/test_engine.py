"""The engine over a small paged test model (real cache kernels): outputs against the model's
plain full-forward loop, batching, sharing, stopping, weights, aborts and bad input."""
import math

import pytest
import torch
from toy_model import ToyPagedModel, greedy_reference

from longcat.engine import LLM, EngineArgs, LLMEngine, SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)


def _prompts(n, lengths, seed=0, vocab=64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (lengths[i % len(lengths)],), generator=g).tolist() for i in range(n)]


def _engine(model, tokenizer=None, **kw):
    kw.setdefault("page_size", 4)
    kw.setdefault("num_pages", 96)
    kw.setdefault("max_num_batched_tokens", 24)
    return LLMEngine(model, tokenizer, EngineArgs(**kw))


def _run(engine, max_steps=1000):
    for _ in range(max_steps):
        if not engine.has_unfinished():
            return
        engine.step()
    raise AssertionError("engine did not finish")


def _assert_no_leak(engine):
    assert engine.allocator.num_free == engine.num_pages
    assert all(r == 0 for r in engine.allocator.refcount)
    assert not engine.scheduler.running and not engine.scheduler.waiting


def test_greedy_equals_full_forward_with_requests_arriving_at_different_steps(toy):
    engine = _engine(toy)
    prompts = _prompts(6, [3, 9, 17, 5, 30, 1])
    reqs = []
    for p in prompts:  # one new request per step, joining those already decoding
        reqs.append(engine.add_request(p, GREEDY))
        engine.step()
    _run(engine)
    for p, r in zip(prompts, reqs):
        assert r.outputs[0].token_ids == greedy_reference(toy, p, 8)
        assert r.outputs[0].finish_reason == "length"
    _assert_no_leak(engine)


def test_chunked_prefill_mixes_with_decodes_under_the_budget(toy):
    engine = _engine(toy, max_num_batched_tokens=6, max_num_seqs=3)
    prompts = _prompts(5, [20, 2, 13])
    reqs = [engine.add_request(p, GREEDY) for p in prompts]
    mixed = False
    while engine.has_unfinished():
        sched_running = len(engine.scheduler.running)
        engine.step()
        assert len(engine.scheduler.running) <= 3
        mixed |= sched_running > 0 and any(0 < s.num_computed < s.num_prompt for s in engine.scheduler.running)
    assert mixed
    for p, r in zip(prompts, reqs):
        assert r.outputs[0].token_ids == greedy_reference(toy, p, 8)
    _assert_no_leak(engine)


def test_step_budgets(toy):
    engine = _engine(toy, max_num_batched_tokens=7, max_num_seqs=2)
    for p in _prompts(4, [10, 3]):
        engine.add_request(p, GREEDY)
    for _ in range(30):
        step = engine.scheduler.schedule()
        if not step.seqs:
            break
        assert step.total_tokens <= 7 and len(step.seqs) <= 2
        # Decodes of running sequences come before new prompt chunks.
        kinds = [s.num_computed >= s.num_prompt for s in step.seqs]
        assert kinds == sorted(kinds, reverse=True)
        for s, n in zip(step.seqs, step.num_tokens):  # pretend the model ran, as LLMEngine.step does
            s.num_computed += n
            if s.num_computed == len(s.token_ids):
                s.token_ids.append(5)
        for s in list(engine.scheduler.running):
            if len(s.token_ids) - s.num_prompt >= 3:
                engine.scheduler.finish(s)
    assert engine.allocator.num_free == engine.num_pages


def test_preemption_when_pages_run_out(toy):
    # 12 pages of 4 tokens: four requests that each need up to 6 pages cannot all stay resident.
    engine = _engine(toy, num_pages=12, max_num_batched_tokens=64)
    prompts = _prompts(4, [10, 13, 7, 12], seed=3)
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    reqs = [engine.add_request(p, params) for p in prompts]
    preempted = 0
    while engine.has_unfinished():
        before = {s.seq_id for s in engine.scheduler.running}
        engine.step()
        preempted += len(before & {s.seq_id for s in engine.scheduler.waiting})
    assert preempted > 0
    for p, r in zip(prompts, reqs):
        assert r.outputs[0].token_ids == greedy_reference(toy, p, 12)
    _assert_no_leak(engine)


def test_logprobs_equal_log_softmax_of_the_full_forward(toy):
    engine = _engine(toy)
    prompt = _prompts(1, [11], seed=4)[0]
    req = engine.add_request(prompt, SamplingParams(temperature=0.8, seed=3, max_tokens=6, logprobs=3,
                                                    ignore_eos=True))
    _run(engine)
    out = req.outputs[0]
    ref = toy.forward(torch.tensor(prompt + out.token_ids)).log_softmax(-1)[len(prompt) - 1:-1]
    assert len(out.logprobs) == 6
    for i, (tok, entry) in enumerate(zip(out.token_ids, out.logprobs)):
        assert list(entry)[0] == tok
        assert math.isclose(entry[tok], float(ref[i, tok]), abs_tol=1e-4)
        top = ref[i].topk(3)
        for tid, lp in zip(top.indices.tolist(), top.values.tolist()):
            assert math.isclose(entry[tid], lp, abs_tol=1e-4)
        assert len(entry) in (3, 4)
    assert math.isclose(out.cumulative_logprob, sum(e[t] for t, e in zip(out.token_ids, out.logprobs)),
                        abs_tol=1e-4)


def test_seeded_sampling_is_reproducible_and_batch_independent(toy):
    params = SamplingParams(temperature=1.0, top_p=0.9, seed=123, max_tokens=10, ignore_eos=True)
    prompt = _prompts(1, [6], seed=5)[0]
    alone = _engine(toy)
    r = alone.add_request(prompt, params)
    _run(alone)
    crowded = _engine(toy)
    others = [crowded.add_request(p, SamplingParams(temperature=1.0, max_tokens=10)) for p in _prompts(5, [4, 9])]
    crowded.step()
    r2 = crowded.add_request(prompt, params)
    _run(crowded)
    assert r.outputs[0].token_ids == r2.outputs[0].token_ids
    assert all(o.finished for o in others)
    unseeded = _engine(toy, seed=0)
    r3 = unseeded.add_request(prompt, SamplingParams(temperature=1.0, max_tokens=10, ignore_eos=True))
    _run(unseeded)
    assert r3.outputs[0].token_ids != r.outputs[0].token_ids  # another stream (not the same seed)


def test_n_samples_share_the_prompt_pages_with_copy_on_write(toy):
    engine = _engine(toy, enable_prefix_caching=False)
    prompt = _prompts(1, [10], seed=6)[0]  # 2.5 pages: the partial third page is shared, then copied
    req = engine.add_request(prompt, SamplingParams(n=4, temperature=1.0, seed=9, max_tokens=6, logprobs=0,
                                                    ignore_eos=True))
    engine.step()  # the prompt is prefilled once, then forked
    assert len(req.seqs) == 4
    first = req.seqs[0].pages
    assert all(s.pages == first for s in req.seqs)
    assert all(engine.allocator.refcount[p] == 4 for p in first)
    assert engine.allocator.num_free == engine.num_pages - 3
    engine.step()  # every sample appends to the shared last page: three copy it, the last owns it
    assert len({s.pages[-1] for s in req.seqs}) == 4
    assert all(engine.allocator.refcount[p] == 4 for p in first[:2])
    _run(engine)
    outs = req.outputs
    assert [o.index for o in outs] == [0, 1, 2, 3]
    assert len({tuple(o.token_ids) for o in outs}) > 1
    for o in outs:  # every sample's logprobs match the full forward of its own context
        ref = toy.forward(torch.tensor(prompt + o.token_ids)).log_softmax(-1)[len(prompt) - 1:-1]
        got = torch.tensor([e[t] for t, e in zip(o.token_ids, o.logprobs)])
        assert torch.allclose(got, ref[torch.arange(6), torch.tensor(o.token_ids)], atol=1e-4)
    _assert_no_leak(engine)


def test_prefix_cache_reuses_pages_across_requests(toy):
    engine = _engine(toy)
    prompt = _prompts(1, [14], seed=7)[0]
    r1 = engine.add_request(prompt, GREEDY)
    _run(engine)
    assert engine.allocator.num_cached >= 3
    r2 = engine.add_request(prompt + [5], GREEDY)
    step = engine.scheduler.schedule()
    assert step.seqs[0].num_computed == 12 and step.num_tokens == [3]  # 3 full pages reused
    engine.scheduler.preempt(step.seqs[0])
    _run(engine)
    assert r1.outputs[0].token_ids == greedy_reference(toy, prompt, 8)
    assert r2.outputs[0].token_ids == greedy_reference(toy, prompt + [5], 8)
    _assert_no_leak(engine)


def test_stop_token_ids_eos_and_max_tokens(toy):
    engine = _engine(toy)
    prompt = _prompts(1, [5], seed=8)[0]
    ref = greedy_reference(toy, prompt, 8)
    stop_tok = ref[3]
    first = ref.index(stop_tok)
    r1 = engine.add_request(prompt, SamplingParams(temperature=0, max_tokens=8, stop_token_ids=[stop_tok]))
    r2 = engine.add_request(prompt, SamplingParams(temperature=0, max_tokens=3, ignore_eos=True))
    _run(engine)
    o = r1.outputs[0]
    assert o.token_ids == ref[:first + 1] and o.finish_reason == "stop" and o.stop_reason == stop_tok
    assert r2.outputs[0].token_ids == ref[:3] and r2.outputs[0].finish_reason == "length"
    # EOS ends a sample unless ignore_eos.
    eos_model = ToyPagedModel(vocab_size=72, eos_token_id=ref[1])
    engine = _engine(eos_model)
    r3 = engine.add_request(prompt, SamplingParams(temperature=0, max_tokens=8))
    r4 = engine.add_request(prompt, SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))
    _run(engine)
    assert r3.outputs[0].token_ids == ref[:ref.index(ref[1]) + 1]
    assert r3.outputs[0].finish_reason == "stop" and r3.outputs[0].stop_reason is None
    assert r4.outputs[0].token_ids == ref


def test_stop_strings_with_incremental_detokenization(toy, char_tokenizer):
    engine = _engine(toy, char_tokenizer)
    prompt = "hello world"
    base = engine.add_request(prompt, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))
    _run(engine)
    text = base.outputs[0].text
    assert text == char_tokenizer.decode(base.outputs[0].token_ids, skip_special_tokens=True)
    assert len(text) >= 6
    stop = text[3:5]
    cut = text.index(stop)
    r1 = engine.add_request(prompt, SamplingParams(temperature=0, max_tokens=12, stop=[stop, "#"],
                                                   ignore_eos=True))
    r2 = engine.add_request(prompt, SamplingParams(temperature=0, max_tokens=12, stop=[stop],
                                                   include_stop_str_in_output=True, ignore_eos=True))
    _run(engine)
    assert r1.outputs[0].text == text[:cut] and r1.outputs[0].finish_reason == "stop"
    assert r1.outputs[0].stop_reason == stop
    assert r2.outputs[0].text == text[:cut + len(stop)]
    ids = r1.outputs[0].token_ids  # generation ends on the token that completes the stop string
    assert ids == base.outputs[0].token_ids[:len(ids)]
    assert stop in char_tokenizer.decode(ids, skip_special_tokens=True)
    assert stop not in char_tokenizer.decode(ids[:-1], skip_special_tokens=True)
    assert r1.prompt == prompt and r1.prompt_token_ids == char_tokenizer(prompt)["input_ids"]


def test_update_weights_mid_flight(toy):
    model = ToyPagedModel(vocab_size=64, seed=0)
    new = ToyPagedModel(vocab_size=64, seed=1)
    new_state = {k: v.clone() for k, v in new.state_dict().items()}
    engine = _engine(model)
    prompts = _prompts(3, [6, 11, 3], seed=9)
    params = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)
    reqs = [engine.add_request(p, params) for p in prompts]
    for _ in range(4):
        engine.step()
    queued = engine.add_request(_prompts(1, [8], seed=10)[0], params)
    old_outputs = [list(r.outputs[0].token_ids) for r in reqs]
    assert all(len(o) >= 1 for o in old_outputs)
    # A bad update raises and the old weights keep serving.
    bad = dict(new_state)
    bad["w_o"] = torch.zeros(3)
    with pytest.raises(ValueError, match="w_o"):
        engine.update_weights(bad, version=1)
    with pytest.raises(ValueError, match="unexpected"):
        engine.update_weights({**new_state, "nope": torch.zeros(1)}, version=1)
    with pytest.raises(ValueError, match="missing"):
        engine.update_weights({"w_o": new_state["w_o"]}, version=1)
    assert torch.equal(model.w_o, ToyPagedModel(vocab_size=64, seed=0).w_o) and engine.version == 0
    engine.update_weights(new_state, version=7)
    assert engine.version == 7
    _run(engine)
    for p, r, old in zip(prompts, reqs, old_outputs):
        o = r.outputs[0]
        assert o.finish_reason == "length" and len(o.token_ids) == 10
        k = len(old)
        assert o.token_ids[:k] == old and o.versions == [0] * k + [7] * (10 - k)
        # After the switch: exactly the new weights' greedy continuation of that context.
        assert o.token_ids[k:] == greedy_reference(new, p + old, 10 - k)
    assert queued.outputs[0].versions == [7] * 10
    assert queued.outputs[0].token_ids == greedy_reference(new, queued.prompt_token_ids, 10)
    _assert_no_leak(engine)


def test_update_weights_from_a_safetensors_file(toy, tmp_path):
    from safetensors.torch import save_file

    model = ToyPagedModel(vocab_size=64, seed=0)
    new = ToyPagedModel(vocab_size=64, seed=2)
    save_file({k: v.contiguous() for k, v in new.state_dict().items()}, str(tmp_path / "w.safetensors"))
    llm = LLM(model, page_size=4, num_pages=32)
    llm.update_weights(tmp_path, version=3)
    prompt = _prompts(1, [5], seed=11)[0]
    out = llm.generate([prompt], GREEDY)[0].outputs[0]
    assert out.versions == [3] * 8 and out.token_ids == greedy_reference(new, prompt, 8)


def test_abort_frees_pages_and_others_continue(toy):
    engine = _engine(toy)
    prompts = _prompts(3, [7, 15, 4], seed=12)
    reqs = [engine.add_request(p, GREEDY, request_id=f"r{i}") for i, p in enumerate(prompts)]
    engine.step()
    engine.step()
    aborted = engine.abort("r1")
    assert aborted is reqs[1] and aborted.finished and aborted.outputs[0].finish_reason == "abort"
    assert engine.abort("r1") is None and engine.abort("unknown") is None
    _run(engine)
    for i in (0, 2):
        assert reqs[i].outputs[0].token_ids == greedy_reference(toy, prompts[i], 8)
    _assert_no_leak(engine)


def test_bad_input_affects_only_that_request(toy):
    llm = LLM(toy, page_size=4, num_pages=8, max_model_len=24)  # 32 tokens of cache, 24 per sequence
    prompts = _prompts(2, [5, 9], seed=13)
    outs = llm.generate([prompts[0], list(range(3, 40)), [], prompts[1], [1, 999]], GREEDY)
    assert [o.error is None for o in outs] == [True, False, False, True, False]
    assert "max_model_len" in outs[1].error and outs[1].finished and outs[1].outputs[0].token_ids == []
    assert "empty" in outs[2].error and "999" in outs[4].error
    assert outs[0].outputs[0].token_ids == greedy_reference(toy, prompts[0], 8)
    assert outs[3].outputs[0].token_ids == greedy_reference(toy, prompts[1], 8)
    small_cache = LLM(toy, page_size=4, num_pages=3, max_model_len=100)
    out = small_cache.generate([list(range(3, 20))], GREEDY)[0]
    assert "KV cache" in out.error
    # A sequence reaching the cache's capacity stops with "length" instead of failing.
    out = small_cache.generate([[5, 6, 7]], SamplingParams(temperature=0, max_tokens=50, ignore_eos=True))[0]
    assert out.outputs[0].finish_reason == "length" and len(out.outputs[0].token_ids) == 12 - 3
    with pytest.raises(ValueError, match="SamplingParams.top_p"):
        llm.generate([prompts[0]], SamplingParams(top_p=0))
    with pytest.raises(ValueError, match="tokenizer"):
        llm.generate("text without a tokenizer")
    with pytest.raises(ValueError, match="EngineArgs.page_size"):
        LLM(toy, page_size=0)
    _assert_no_leak(llm.engine)


def test_llm_generate_orders_and_chat(toy, char_tokenizer):
    llm = LLM(toy, tokenizer=char_tokenizer, page_size=4, num_pages=64)
    char_tokenizer.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                                    "{% if add_generation_prompt %}assistant:{% endif %}")
    outs = llm.generate(["ab", "hello", "x"], SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))
    assert [o.prompt for o in outs] == ["ab", "hello", "x"]
    chat = llm.chat([{"role": "user", "content": "hi"}], SamplingParams(temperature=0, max_tokens=4,
                                                                         ignore_eos=True))
    expected = llm.generate("user: hi\nassistant:", SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))
    assert chat[0].outputs[0].token_ids == expected[0].outputs[0].token_ids


def test_llm_chat_stops_at_the_end_of_turn_token(toy, char_tokenizer, monkeypatch):
    from longcat.engine import chat as chat_module

    llm = LLM(toy, tokenizer=char_tokenizer, page_size=4, num_pages=64)
    char_tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    free = llm.generate("hi", SamplingParams(temperature=0, max_tokens=6))[0].outputs[0]
    end_of_turn = free.token_ids[2]          # pretend the third greedy token is <|im_end|>
    monkeypatch.setattr(chat_module, "chat_stop_token_ids", lambda tok: [end_of_turn])
    reply = llm.chat([{"role": "user", "content": "hi"}], SamplingParams(temperature=0, max_tokens=6))[0].outputs[0]
    stop_at = free.token_ids.index(end_of_turn)
    assert reply.finish_reason == "stop" and reply.token_ids == free.token_ids[:stop_at + 1]


def test_text_matches_a_full_decode_with_leading_spaces(toy):
    """A sentencepiece-style tokenizer (Metaspace: "▁" marks a space, dropped at the start of a
    decode): the streamed text is the full decode's continuation, leading space included."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for i in range(68):
        vocab[f"\u2581w{i}"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>")
    engine = _engine(toy, tokenizer)
    prompt = [7, 8, 9]
    req = engine.add_request(prompt, SamplingParams(temperature=0, max_tokens=10, ignore_eos=True))
    _run(engine)
    ids = req.outputs[0].token_ids
    full = tokenizer.decode(prompt + ids, skip_special_tokens=True)
    head = tokenizer.decode(prompt, skip_special_tokens=True)
    assert full.startswith(head) and req.outputs[0].text == full[len(head):]
    assert req.outputs[0].text.startswith(" ")


def test_no_page_leaks_after_many_mixed_requests(toy):
    """Random arrivals, n > 1, sampling, prefix hits, preemption (a small cache) and aborts: at
    the end every page is free again and every refcount is zero."""
    import random

    rng = random.Random(0)
    engine = _engine(toy, num_pages=12, max_num_batched_tokens=16, max_num_seqs=6)
    shared = _prompts(1, [9], seed=20)[0]
    reqs = []
    for i in range(20):
        prompt = shared + [rng.randrange(3, 64)] if i % 3 == 0 else _prompts(1, [rng.randrange(1, 14)], seed=i)[0]
        params = SamplingParams(n=rng.choice([1, 1, 2, 3]), temperature=rng.choice([0, 0.8]), seed=i,
                                max_tokens=rng.randrange(1, 12), ignore_eos=True)
        reqs.append(engine.add_request(prompt, params, request_id=f"q{i}"))
        if i % 7 == 3:
            engine.abort(f"q{i - 2}")
        engine.step()
    _run(engine)
    assert engine.scheduler.num_preemptions > 0
    assert all(r.finished for r in reqs)
    assert sum(o.finish_reason == "abort" for r in reqs for o in r.outputs) > 0
    for r in reqs:
        for o in r.outputs:
            if o.finish_reason == "length":
                assert len(o.token_ids) == r.params.max_tokens
    _assert_no_leak(engine)


def test_update_weights_keeping_the_old_cache(toy):
    """recompute_kv=False: running requests keep their cached latents (no re-prefill) and go on
    under the new weights; their pages never enter the prefix cache of the new version."""
    model = ToyPagedModel(vocab_size=64, seed=0)
    new_state = {k: v.clone() for k, v in ToyPagedModel(vocab_size=64, seed=1).state_dict().items()}
    engine = _engine(model)
    prompt = _prompts(1, [12], seed=14)[0]
    req = engine.add_request(prompt, SamplingParams(temperature=0, max_tokens=10, ignore_eos=True))
    for _ in range(3):
        engine.step()
    computed = req.seqs[0].num_computed
    engine.update_weights(new_state, version=2, recompute_kv=False)
    engine.step()
    assert req.seqs[0].num_computed == computed + 1  # no re-prefill
    _run(engine)
    o = req.outputs[0]
    k = o.versions.index(2)
    assert o.versions == [0] * k + [2] * (10 - k) and len(o.token_ids) == 10
    assert engine.allocator.num_cached == 0
    _assert_no_leak(engine)
