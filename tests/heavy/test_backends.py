"""The two backends: the built-in engine (n=K shares the prompt's pages: one prefill) and an
OpenAI-compatible server (one n=K request; failures and timeouts of some samples are counted,
not fatal), against a stub server and against ``longcat serve`` in-process."""
import importlib.util
import os
import sys

import pytest

from longcat.heavy import BudgetError, Candidate, EndpointError, EngineBackend, HeavyThinker, OpenAIBackend, SampleRequest
from longcat.tasks.arith import parse_answer

ENGINE_TESTS = os.path.join(os.path.dirname(__file__), "..", "engine")
sys.path.insert(0, ENGINE_TESTS)


def make_char_tokenizer():
    spec = importlib.util.spec_from_file_location("engine_conftest", os.path.join(ENGINE_TESTS, "conftest.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_char_tokenizer()


@pytest.fixture(scope="module")
def toy_llm():
    from toy_model import ToyPagedModel

    from longcat.engine import LLM

    return LLM(ToyPagedModel(vocab_size=72), tokenizer=make_char_tokenizer(), page_size=16, max_num_seqs=16,
               max_model_len=512)


def count_model_tokens(llm):
    """Wraps the model's forward_paged; returns the list of token counts per call."""
    model, calls = llm.engine.model, []
    inner = model.forward_paged

    def counting(batch, caches):
        calls.append(int(batch.input_ids.numel()))
        return inner(batch, caches)

    model.forward_paged = counting
    return calls, lambda: setattr(model, "forward_paged", inner)


def test_engine_width_prefills_the_prompt_once(toy_llm):
    backend = EngineBackend(toy_llm)
    prompt = "the quick brown fox jumps over the lazy dog " * 3  # 132 tokens
    k, max_tokens = 8, 4
    calls, restore = count_model_tokens(toy_llm)
    try:
        (batch,) = backend.sample([SampleRequest(prompt, n=k, temperature=1.0, seed=3, max_tokens=max_tokens,
                                                 logprobs=2)])
    finally:
        restore()
    assert len(batch.candidates) == k and batch.prompt_tokens == len(prompt)
    generated = sum(c.num_tokens for c in batch.candidates)
    # one prefill of the prompt, then one token per sample per decode step (the last token of
    # each sample is sampled but never fed back)
    assert sum(calls) == len(prompt) + generated - k
    assert sum(calls) < 2 * len(prompt) < k * len(prompt)
    texts = [c.text for c in batch.candidates]
    assert len(set(texts)) > 1  # K different samples, not one repeated
    assert all(c.token_logprobs and len(c.token_logprobs) == c.num_tokens for c in batch.candidates)


def test_engine_summary_rounds_and_episodes(toy_llm):
    heavy = HeavyThinker(EngineBackend(toy_llm), k=4, rounds=2, template="compact", summary_max_tokens=5, seed=1)
    given = [[Candidate("ab"), Candidate("ac", num_tokens=2), Candidate("cut", finish_reason="length")]]
    (res,) = heavy.think_batch(["abc="], given)
    assert [len(r) for r in res.rounds] == [3, 4, 1] and res.num_dropped >= 1
    ep = res.episodes[-1]
    assert ep.prompt_token_ids and ep.completion_token_ids == res.rounds[-1][0].token_ids
    assert len(ep.completion_logprobs) == len(ep.completion_token_ids) > 0  # the RL loop needs them
    assert res.episodes[0].candidates == ["ab", "ac"] or res.episodes[0].candidates == ["ac", "ab"]
    again = heavy.think_batch(["abc="], given)[0]
    assert again.answer_text == res.answer_text  # seeded: reproducible


def test_engine_rejects_a_prompt_it_cannot_serve(toy_llm):
    with pytest.raises(ValueError, match="prompt"):
        EngineBackend(toy_llm).sample([SampleRequest("x" * 600, n=2, max_tokens=2)])


def test_endpoint_one_batched_request(stub_server):
    backend = OpenAIBackend(stub_server.url)
    assert backend.model == "stub-model"
    (batch,) = backend.sample([SampleRequest("12+7=", n=4, seed=10, max_tokens=8, logprobs=1)])
    assert len(stub_server.bodies) == 1 and stub_server.bodies[0]["n"] == 4
    assert [c.text for c in batch.candidates] == ["19"] * 4 and batch.num_failed == 0
    assert batch.candidates[0].token_logprobs == [[-0.5, -1.5]]


def test_endpoint_failures_of_some_samples_are_counted(stub_server):
    stub_server.behaviour = {"fail_batched": True, "fail_seeds": {11}, "slow_seeds": {12}}
    stub_server.delay = 1.5
    backend = OpenAIBackend(stub_server.url, timeout=0.5)
    (batch,) = backend.sample([SampleRequest("12+7=", n=4, seed=10, max_tokens=8)])
    assert len(batch.candidates) == 2 and batch.num_failed == 2
    assert any("HTTP 500" in e for e in batch.errors) and any("imeout" in e or "timed out" in e for e in batch.errors)
    res = HeavyThinker(backend, k=4, seed=10, template="compact", answer_fn=parse_answer).think("12+7=")
    assert res.num_failed == 2 and res.answer == 19


def test_endpoint_all_failing_is_an_error(stub_server):
    stub_server.behaviour = {"fail_batched": True, "fail_seeds": {0, 1}}
    with pytest.raises(EndpointError, match="no candidate"):
        OpenAIBackend(stub_server.url, model="m").sample([SampleRequest("q", n=2, seed=0)])
    with pytest.raises(EndpointError, match="URLError|refused"):
        OpenAIBackend("http://127.0.0.1:9", model="m", timeout=2).sample([SampleRequest("q", n=1)])
    with pytest.raises(ValueError, match="endpoint"):
        OpenAIBackend("localhost:8000")


def test_endpoint_chat_and_tools_round_trip(stub_server):
    stub_server.answer = lambda body: (lambda i: "It is 19." if "Thinker" in body["messages"][-1]["content"]
                                       else f"maybe {18 + i % 2}")
    backend = OpenAIBackend(stub_server.url)
    res = HeavyThinker(backend, k=3, logprobs=1, answer_fn=parse_answer).think(
        [{"role": "user", "content": "12+7?"}])
    first, summary = stub_server.bodies[0], stub_server.bodies[-1]
    assert first["n"] == 3 and first["logprobs"] is True and first["top_logprobs"] == 1
    assert summary["n"] == 1 and "maybe 18" in summary["messages"][-1]["content"]
    assert res.answer == 19 and res.candidates[0].token_logprobs == [[-0.5, -1.5]]


def test_against_longcat_serve(tmp_path):
    """The real server on a random ``tiny`` checkpoint: n=K in one request, logprobs, chat."""
    from longcat.engine import AsyncEngine
    from longcat.models.random_init import init_checkpoint
    from longcat.serve import ServerThread, build_app

    ckpt = init_checkpoint(tmp_path / "tiny", preset="tiny", seed=0, max_position_embeddings=256)
    engine = AsyncEngine.from_pretrained(str(ckpt), max_model_len=256, max_num_seqs=8)
    with ServerThread(build_app(engine, "tiny")) as server:
        backend = OpenAIBackend(server.base_url)
        text, chat = backend.sample([SampleRequest("12+7=", n=4, seed=0, max_tokens=6, logprobs=2),
                                     SampleRequest([{"role": "user", "content": "hi"}], n=2, seed=0, max_tokens=6)])
        assert backend.model == "tiny"
        assert len(text.candidates) == 4 and text.num_failed == 0 and text.prompt_tokens > 0
        assert all(c.num_tokens == len(c.token_logprobs) > 0 for c in text.candidates)
        assert all(len(lp) >= 1 for c in text.candidates for lp in c.token_logprobs)
        assert len(chat.candidates) == 2
        res = HeavyThinker(backend, k=2, summary_max_tokens=6, logprobs=1).think("1+1=", [Candidate("2")])
        assert len(res.rounds) == 2 and res.generated_tokens > 1 and res.episodes[0].completion_logprobs
        with pytest.raises(BudgetError, match="max_tokens"):  # random weights: no sample ends in 1 token
            HeavyThinker(backend, k=2, max_tokens=1, seed=0).think("1+1=")


def test_endpoint_tool_calls_run_through_the_tool_loop(stub_server):
    from longcat.heavy import FunctionTools, HeavyChat

    def answer(body):
        last = body["messages"][-1]
        if last["role"] == "tool":
            return "It is 5."
        if "Thinker" in last["content"]:
            return "5"
        assert body["tools"][0]["function"]["name"] == "add"
        return lambda i: ({"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}]}
            if i == 0 else "6")

    stub_server.answer = answer
    tools = FunctionTools({"add": lambda a, b: a + b},
                          [{"type": "function", "function": {"name": "add", "parameters": {}}}])
    chat = HeavyChat(HeavyThinker(OpenAIBackend(stub_server.url), k=2), tools=tools)
    res = chat.send("2+3?")
    assert res.candidates[0].tool_results == ['add({"a": 2, "b": 3}) -> 5']
    assert res.candidates[0].text == "It is 5." and res.answer_text == "5"
    follow_up = stub_server.bodies[1]["messages"]
    assert follow_up[-1] == {"role": "tool", "tool_call_id": follow_up[-2]["tool_calls"][0]["id"], "content": "5"}
    assert 'add({"a": 2, "b": 3}) -> 5' in stub_server.bodies[-1]["messages"][-1]["content"]


def test_engine_constrained_summary_writes_only_shown_answers(toy_llm):
    backend = EngineBackend(toy_llm)
    choices = ["abc", "abd", "x"]
    (batch,) = backend.sample([SampleRequest("q=", n=12, temperature=1.5, seed=2, max_tokens=8, choices=choices)])
    texts = [c.text for c in batch.candidates]
    assert all(t in choices and c.finish_reason == "stop" for t, c in zip(texts, batch.candidates))
    heavy = HeavyThinker(backend, k=3, template="choose", summary_max_tokens=8, seed=0)
    (res,) = heavy.think_batch(["q="], [[Candidate("ab"), Candidate("ab"), Candidate("ba")]])
    assert res.answer_text in ("ab", "ba") and res.episodes[0].prompt == "[ab*2][ba*1]q="
    with pytest.raises(ValueError, match="choices: constrained decoding"):
        OpenAIBackend("http://127.0.0.1:9", model="m").sample([SampleRequest("q=", choices=["a"])])
