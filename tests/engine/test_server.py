"""The OpenAI-compatible server, driven with the official ``openai`` client: one in-process server
(uvicorn in a thread) over a ``tiny`` checkpoint made by ``longcat models init``, plus a second one
over a scripted engine that replays a fixed text, for deterministic tool-call responses."""
import json
import time
from dataclasses import replace
from types import SimpleNamespace

import httpx
import openai
import pytest

from longcat.cli import main as longcat_main
from longcat.engine import AsyncEngine, Completion, CompletionOutput, EngineDeadError
from longcat.engine.chat import render_prompt
from longcat.serve import ServerThread, build_app

MODEL = "tiny-test"
USER = [{"role": "user", "content": "What is 12 + 30?"}]
TOOLS = [{"type": "function", "function": {
    "name": "get_order", "description": "Look up an order.",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}}]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt")
    assert longcat_main(["models", "init", "--preset", "tiny", "--out", str(out), "--seed", "0"]) == 0
    return out


@pytest.fixture(scope="module")
def server(checkpoint):
    engine = AsyncEngine.from_pretrained(str(checkpoint), max_model_len=256, max_num_seqs=8)
    with ServerThread(build_app(engine, MODEL)) as s:
        s.engine = engine
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0, timeout=60)


def chat(client, **kw):
    return client.chat.completions.create(model=MODEL, **{"messages": USER, "max_tokens": 8, **kw})


def test_models_and_health(server, client):
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL]
    assert models[0].max_model_len == 256 and models[0].policy_version == server.engine.version
    health = httpx.get(server.base_url + "/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"


def test_chat_usage_and_seed(server, client):
    r = chat(client, seed=7, temperature=1.0)
    choice = r.choices[0]
    assert r.object == "chat.completion" and choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length") and isinstance(choice.message.content, str)
    prompt = render_prompt(server.engine.tokenizer, USER)
    assert r.usage.prompt_tokens == len(server.engine.tokenizer(prompt)["input_ids"])
    assert 1 <= r.usage.completion_tokens <= 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert choice.policy_version == server.engine.version
    assert chat(client, seed=7, temperature=1.0).choices[0].message.content == choice.message.content


def test_logprobs(client):
    r = chat(client, temperature=0, logprobs=True, top_logprobs=3, max_tokens=6,
             extra_body={"ignore_eos": True, "return_token_ids": True})
    choice = r.choices[0]
    entries = choice.logprobs.content
    assert len(entries) == r.usage.completion_tokens == len(choice.token_ids) == 6
    for e in entries:
        tops = [t.logprob for t in e.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True)
        assert e.logprob <= 0 and e.logprob == pytest.approx(tops[0])   # greedy: the sampled token is the top one
        assert e.top_logprobs[0].token == e.token and bytes(e.bytes).decode("utf-8", "replace") == e.token
        assert e.policy_version == choice.policy_version
    assert "".join(e.token for e in entries) == choice.message.content


def test_n_choices(client):
    r = chat(client, n=3, seed=1, max_tokens=5, extra_body={"ignore_eos": True})
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert r.usage.completion_tokens == 15
    assert len({c.message.content for c in r.choices}) > 1    # independent samples


def test_streaming_matches_non_streaming(client):
    kw = dict(n=2, seed=3, temperature=1.0, max_tokens=10, logprobs=True, extra_body={"ignore_eos": True})
    full = chat(client, **kw)
    text, finish, n_logprobs, usage, ids = {0: "", 1: ""}, {}, {0: 0, 1: 0}, None, set()
    for chunk in chat(client, stream=True, stream_options={"include_usage": True}, **kw):
        ids.add(chunk.id)
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usage = chunk.usage
            assert chunk.choices == []
        for c in chunk.choices:
            text[c.index] += c.delta.content or ""
            n_logprobs[c.index] += len(c.logprobs.content) if c.logprobs else 0
            if c.finish_reason:
                finish[c.index] = c.finish_reason
    assert len(ids) == 1
    assert [text[i] for i in (0, 1)] == [c.message.content for c in full.choices]
    assert finish == {0: "length", 1: "length"} and n_logprobs == {0: 10, 1: 10}
    assert usage.completion_tokens == 20 and usage.prompt_tokens == full.usage.prompt_tokens


def test_stream_ends_with_done(server):
    body = {"model": MODEL, "messages": USER, "max_tokens": 3, "stream": True}
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body, timeout=60) as r:
        lines = [ln for ln in r.iter_lines() if ln]
    assert r.headers["content-type"].startswith("text/event-stream")
    assert all(ln.startswith("data: ") for ln in lines) and lines[-1] == "data: [DONE]"
    assert json.loads(lines[0][6:])["choices"][0]["delta"]["role"] == "assistant"


def test_chat_with_tools(server, client):
    plain = chat(client, max_tokens=4)
    r = chat(client, tools=TOOLS, tool_choice="auto", max_tokens=4)
    assert r.usage.prompt_tokens > plain.usage.prompt_tokens + 20      # the schemas are in the prompt
    msg = r.choices[0].message
    assert msg.content is not None or msg.tool_calls
    assert chat(client, tools=TOOLS, tool_choice="none", max_tokens=4).choices[0].message.tool_calls is None


TWO_TOOLS = TOOLS + [{"type": "function", "function": {
    "name": "cancel_order", "parameters": {"type": "object", "properties": {
        "order_id": {"type": "string"}, "reason": {"type": "string", "enum": ["late", "damaged"]}},
        "required": ["order_id", "reason"]}}}]


@pytest.mark.parametrize("tool_choice,names", [
    ("required", {"get_order", "cancel_order"}),
    ({"type": "function", "function": {"name": "cancel_order"}}, {"cancel_order"}),
])
def test_forced_tool_choice(client, tool_choice, names):
    """A forced choice makes even the random model open a call, to an allowed tool, in its schema."""
    for seed in range(3):
        r = chat(client, tools=TWO_TOOLS, tool_choice=tool_choice, max_tokens=48, seed=seed, temperature=1.0)
        choice = r.choices[0]
        if choice.message.tool_calls:
            assert choice.finish_reason == "tool_calls"
            for call in choice.message.tool_calls:
                assert call.function.name in names
                args = json.loads(call.function.arguments)
                assert set(args) <= {"order_id", "reason"} and args.get("reason", "late") in ("late", "damaged")
        else:   # the call did not close within max_tokens: the raw block is the content
            assert choice.finish_reason == "length" and choice.message.content.startswith("<tool_call>")
            name = choice.message.content.split('"name": "', 1)[1].split('"', 1)[0] if '"name": "' in \
                choice.message.content else ""
            assert any(n.startswith(name) for n in names), choice.message.content


def test_completions(client):
    for prompt in ("The order O-1 is", [1, 17, 99, 250]):
        kw = dict(model=MODEL, prompt=prompt, max_tokens=6, seed=5, logprobs=2, extra_body={"ignore_eos": True})
        r = client.completions.create(**kw)
        c = r.choices[0]
        assert r.object == "text_completion" and c.finish_reason == "length" and r.usage.completion_tokens == 6
        assert len(c.logprobs.tokens) == 6 and all(len(t) <= 3 for t in c.logprobs.top_logprobs)
        assert "".join(c.logprobs.tokens) == c.text and c.logprobs.text_offset[0] == 0
        streamed = "".join(ch.choices[0].text for ch in client.completions.create(stream=True, **kw) if ch.choices)
        assert streamed == c.text
    assert r.usage.prompt_tokens == 4


def test_update_weights_changes_policy_version(server, client, checkpoint, tmp_path):
    from safetensors.torch import load_file, save_file

    url = server.base_url + "/v1/update_weights"
    greedy = dict(temperature=0, max_tokens=4, logprobs=True, extra_body={"ignore_eos": True, "return_token_ids": True})
    before = chat(client, **greedy).choices[0]
    r = httpx.post(url, json={"path": str(checkpoint), "version": 5}, timeout=60)
    assert r.status_code == 200 and r.json()["success"] and r.json()["policy_version"] == 5
    after = chat(client, **greedy).choices[0]
    assert after.policy_version == 5 and after.policy_versions == [5] * 4
    assert {e.policy_version for e in after.logprobs.content} == {5}
    assert after.token_ids == before.token_ids          # the same weights reloaded
    assert client.models.list().data[0].policy_version == 5
    # other weights (lm_head negated) give other greedy tokens
    flipped = {k: -v if k == "lm_head.weight" else v for k, v in load_file(checkpoint / "model.safetensors").items()}
    save_file(flipped, str(tmp_path / "flipped.safetensors"))
    r = httpx.post(url, json={"path": str(tmp_path / "flipped.safetensors"), "version": 6}, timeout=60)
    assert r.status_code == 200
    other = chat(client, **greedy).choices[0]
    assert other.policy_version == 6 and other.token_ids != before.token_ids
    # SGLang's route and names bring the original back
    r = httpx.post(server.base_url + "/update_weights_from_disk",
                   json={"model_path": str(checkpoint), "weight_version": 7}, timeout=60)
    assert r.status_code == 200 and r.json()["policy_version"] == 7
    assert chat(client, **greedy).choices[0].token_ids == before.token_ids
    # a bad update is refused and the old weights keep serving
    r = httpx.post(url, json={"path": str(checkpoint / "missing"), "version": 8}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "path"
    r = httpx.post(url, json={"path": str(checkpoint)}, timeout=60)
    assert r.status_code == 400 and "version" in r.json()["error"]["message"]
    r = httpx.post(url, content="{oops", headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    last = chat(client, **greedy).choices[0]
    assert last.policy_version == 7 and last.token_ids == before.token_ids


def test_update_during_a_stream_shows_in_token_versions(server, client, checkpoint):
    import threading

    v0 = server.engine.version
    body = {"model": MODEL, "messages": USER, "max_tokens": 200, "stream": True, "ignore_eos": True,
            "logprobs": True}
    update = threading.Thread(target=httpx.post, args=(server.base_url + "/v1/update_weights",),
                              kwargs={"json": {"path": str(checkpoint), "version": v0 + 1}, "timeout": 60})
    versions = []
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body, timeout=60) as r:
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            for c in json.loads(line[6:])["choices"]:
                versions += [e["policy_version"] for e in (c.get("logprobs") or {}).get("content", [])]
            if versions and not update.is_alive() and update.ident is None:
                update.start()
    update.join()
    assert len(versions) == 200 and versions == sorted(versions)
    assert versions[0] == v0 and versions[-1] == v0 + 1


@pytest.mark.parametrize("body, status, param", [
    ("{not json", 400, None),
    ('[1, 2]', 400, None),
    ('{"model": "tiny-test"}', 400, "messages"),
    ('{"model": "tiny-test", "messages": []}', 400, "messages"),
    ('{"model": "tiny-test", "messages": [{"role": "wizard", "content": "x"}]}', 400, "messages[0].role"),
    ('{"model": "tiny-test", "messages": [{"role": "user", "content": "x"}], "temperature": -1}', 400, "temperature"),
    ('{"model": "tiny-test", "messages": [{"role": "user", "content": "x"}], "top_p": 0}', 400, "top_p"),
    ('{"model": "tiny-test", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}', 400, "max_tokens"),
    ('{"model": "tiny-test", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 21, "logprobs": true}',
     400, "top_logprobs"),
    ('{"model": "tiny-test", "messages": [{"role": "user", "content": "x"}], "tool_choice": "required"}',
     400, "tool_choice"),
    ('{"model": "tiny-test", "messages": [{"role": "user", "content": "x"}], "tool_choice": "sometimes", '
     '"tools": [{"type": "function", "function": {"name": "f"}}]}', 400, "tool_choice"),
    ('{"model": "tiny-test", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", '
     '"function": {"name": "f"}}], "tool_choice": {"type": "function", "function": {"name": "g"}}}', 400, "tool_choice"),
    ('{"model": "tiny-test", "messages": [{"role": "user", "content": "x"}], "frequency_penalty": 1}',
     400, "frequency_penalty"),
    ('{"model": "other", "messages": [{"role": "user", "content": "x"}]}', 404, "model"),
])
def test_bad_requests_get_openai_errors(server, client, body, status, param):
    r = httpx.post(server.base_url + "/v1/chat/completions", content=body,
                   headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == status
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"] and err["param"] == param
    assert chat(client, max_tokens=1).choices[0].finish_reason in ("stop", "length")   # still serving


def test_client_exceptions(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=USER)
    with pytest.raises(openai.BadRequestError, match="max_model_len"):
        client.completions.create(model=MODEL, prompt=" order" * 300, max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="max_model_len"):
        chat(client, messages=[{"role": "user", "content": " order" * 300}], stream=True)
    with pytest.raises(openai.BadRequestError, match="prompt"):
        client.completions.create(model=MODEL, prompt=[1, 99999], max_tokens=2)
    r = httpx.get(str(client.base_url) + "nowhere")
    assert r.status_code == 404 and r.json()["error"]["message"]


def test_disconnect_aborts_the_request(server, client):
    engine = server.engine.engine
    aborted, abort = [], engine.abort
    engine.abort = lambda rid: (aborted.append(rid), abort(rid))[1]
    body = {"model": MODEL, "messages": USER, "max_tokens": 200, "stream": True, "ignore_eos": True}
    try:
        with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body, timeout=60) as r:
            lines = r.iter_lines()
            rid = json.loads(next(ln for ln in lines if ln)[6:])["id"]
            next(ln for ln in lines if '"content"' in ln and '"role"' not in ln)  # tokens are flowing
        deadline = time.monotonic() + 10
        while rid not in aborted and time.monotonic() < deadline:
            time.sleep(0.05)
        assert rid in aborted and rid not in engine.requests
    finally:
        engine.abort = abort
    assert chat(client, max_tokens=2).usage.completion_tokens >= 1


# ---- deterministic tool-call responses from a scripted engine ------------------------------------

class ScriptedEngine:
    """Stands in for AsyncEngine: replays ``script`` one token per step (text, ids, logprobs,
    versions as the engine reports them), ending with "stop"."""

    def __init__(self, tokenizer, script=""):
        self.tokenizer, self.script, self.version = tokenizer, script, 2
        self.die_after = None       # tokens after which the "step loop" fails
        self.engine = SimpleNamespace(max_len=256, vocab_size=len(tokenizer))

    async def start(self):
        pass

    async def shutdown(self):
        pass

    async def generate(self, prompt, params, request_id=None):
        tok = self.tokenizer
        self.last_params = params
        ids = tok(self.script)["input_ids"]
        outs = [CompletionOutput(index=i, logprobs=[] if params.logprobs is not None else None)
                for i in range(params.n)]
        for k in range(1, len(ids) + 1):
            if k == self.die_after:
                raise EngineDeadError("engine step failed: RuntimeError('scripted')")
            for o in outs:
                o.token_ids, o.versions = ids[:k], [self.version] * k
                o.text = tok.decode(ids[:k], skip_special_tokens=True)
                if o.logprobs is not None:
                    o.logprobs = [{t: -0.25} for t in ids[:k]]
                o.finish_reason = "stop" if k == len(ids) else None
            yield Completion(request_id, prompt, tok(prompt)["input_ids"], [replace(o) for o in outs],
                             finished=k == len(ids))


@pytest.fixture(scope="module")
def scripted(server):
    engine = ScriptedEngine(server.engine.tokenizer)
    with ServerThread(build_app(engine, "scripted", api_key="sk-test")) as s:
        s.engine = engine
        s.client = openai.OpenAI(base_url=s.base_url + "/v1", api_key="sk-test", max_retries=0)
        yield s


CALLS = ('Let me check.\n<tool_call>\n{"name": "get_order", "arguments": {"order_id": "O-1"}}\n</tool_call>\n'
         '<tool_call>\n{"name": "get_order", "arguments": {"order_id": "O-2"}}\n</tool_call>')


def test_scripted_tool_calls(scripted):
    scripted.engine.script = CALLS
    r = scripted.client.chat.completions.create(model="scripted", messages=USER, tools=TOOLS, n=2)
    for choice in r.choices:
        assert choice.finish_reason == "tool_calls" and choice.message.content == "Let me check."
        calls = choice.message.tool_calls
        assert [json.loads(c.function.arguments) for c in calls] == [{"order_id": "O-1"}, {"order_id": "O-2"}]
        assert all(c.id.startswith("call_") and c.type == "function" and c.function.name == "get_order"
                   for c in calls)
        assert choice.policy_version == 2
    assert len({c.id for ch in r.choices for c in ch.message.tool_calls}) == 4
    # with tool_choice none the text is returned as written
    r = scripted.client.chat.completions.create(model="scripted", messages=USER, tools=TOOLS, tool_choice="none")
    assert r.choices[0].message.content == CALLS and r.choices[0].finish_reason == "stop"


def test_scripted_tool_calls_streaming(scripted):
    scripted.engine.script = CALLS
    content, calls, finish = "", {}, None
    stream = scripted.client.chat.completions.create(model="scripted", messages=USER, tools=TOOLS, stream=True,
                                                     logprobs=True)
    n_logprobs = 0
    for chunk in stream:
        c = chunk.choices[0]
        content += c.delta.content or ""
        n_logprobs += len(c.logprobs.content) if c.logprobs else 0
        for tc in c.delta.tool_calls or []:
            calls[tc.index] = tc
        finish = c.finish_reason or finish
    assert content == "Let me check."
    assert [json.loads(calls[i].function.arguments) for i in (0, 1)] == [{"order_id": "O-1"}, {"order_id": "O-2"}]
    assert all(calls[i].id.startswith("call_") and calls[i].function.name == "get_order" for i in (0, 1))
    assert finish == "tool_calls"
    assert n_logprobs == len(scripted.engine.tokenizer(CALLS)["input_ids"])


def test_scripted_malformed_call_is_content(scripted):
    scripted.engine.script = 'Sure <tool_call>{"name": "get_order", "arguments": {oops}</tool_call>'
    r = scripted.client.chat.completions.create(model="scripted", messages=USER, tools=TOOLS)
    assert r.choices[0].message.tool_calls is None and r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content == scripted.engine.script
    streamed = "".join(ch.choices[0].delta.content or "" for ch in scripted.client.chat.completions.create(
        model="scripted", messages=USER, tools=TOOLS, stream=True))
    assert streamed == scripted.engine.script


def test_chat_stops_at_end_of_turn_unless_ignore_eos(scripted):
    scripted.engine.script = "Hello"
    im_end = scripted.engine.tokenizer.convert_tokens_to_ids("<|im_end|>")
    scripted.client.chat.completions.create(model="scripted", messages=USER, stop=["\n\n"])
    assert scripted.engine.last_params.stop_token_ids == [im_end] and scripted.engine.last_params.stop == ["\n\n"]
    scripted.client.chat.completions.create(model="scripted", messages=USER, extra_body={"ignore_eos": True})
    assert scripted.engine.last_params.stop_token_ids is None and scripted.engine.last_params.ignore_eos
    # the sampling fields reach the engine as given; max_completion_tokens wins over max_tokens
    scripted.client.chat.completions.create(model="scripted", messages=USER, temperature=0.5, top_p=0.9, seed=11,
                                            max_tokens=50, max_completion_tokens=7, n=2,
                                            extra_body={"top_k": 5, "min_p": 0.1})
    p = scripted.engine.last_params
    assert (p.temperature, p.top_p, p.seed, p.max_tokens, p.n, p.top_k, p.min_p) == (0.5, 0.9, 11, 7, 2, 5, 0.1)
    scripted.client.completions.create(model="scripted", prompt="Hi")
    assert scripted.engine.last_params.stop_token_ids is None


def test_engine_failure_mid_request(scripted):
    scripted.engine.script, scripted.engine.die_after = "one two three four", 3
    try:
        with pytest.raises(openai.InternalServerError):
            scripted.client.chat.completions.create(model="scripted", messages=USER)
        body = {"model": "scripted", "messages": USER, "stream": True}
        headers = {"authorization": "Bearer sk-test"}
        with httpx.stream("POST", scripted.base_url + "/v1/chat/completions", json=body, headers=headers) as r:
            lines = [ln for ln in r.iter_lines() if ln]
        assert r.status_code == 200 and lines[-1] == "data: [DONE]"
        assert json.loads(lines[-2][6:])["error"]["type"] == "server_error"
    finally:
        scripted.engine.die_after = None
    assert scripted.client.chat.completions.create(model="scripted", messages=USER).choices[0].message.content


def test_api_key(scripted):
    bad = openai.OpenAI(base_url=scripted.base_url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    r = httpx.post(scripted.base_url + "/v1/update_weights", json={"path": "x", "version": 1})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(scripted.base_url + "/health").status_code == 200
    assert scripted.client.models.list().data[0].id == "scripted"


# ---- the command line ------------------------------------------------------------------------------

def test_generate_command(checkpoint, capsys):
    from longcat.engine import LLM, SamplingParams

    args = ["generate", "--model", str(checkpoint), "--prompt", "What is 2 + 2?", "--max-tokens", "5",
            "--max-model-len", "128", "--max-num-seqs", "2"]
    assert longcat_main(args) == 0
    printed = capsys.readouterr().out
    llm = LLM(str(checkpoint), max_model_len=128, max_num_seqs=2)
    want = llm.generate("What is 2 + 2?", SamplingParams(temperature=0, max_tokens=5))[0].outputs[0].text
    assert printed == want + "\n"
    assert longcat_main(args + ["--chat", "--temperature", "0.7", "--seed", "3"]) == 0
    assert capsys.readouterr().out.strip() != ""


@pytest.mark.parametrize("argv, message", [
    (["serve", "--model", ".", "--port", "0"], "--port: expected a value in [1, 65535], got 0"),
    (["serve", "--model", ".", "--port", "http"], "--port: expected an integer, got 'http'"),
    (["generate", "--model", ".", "--prompt", "x", "--max-tokens", "0"], "--max-tokens: expected a value in [1, "),
    (["generate", "--model", ".", "--prompt", "x", "--max-tokens", "99999999999"],
     "--max-tokens: expected a value in [1, 16777216], got 99999999999"),
    (["generate", "--model", ".", "--prompt", "x", "--temperature", "-1"], "--temperature: expected a value in"),
    (["serve", "--model", ".", "--max-num-seqs", "0"], "--max-num-seqs: expected a value in [1, 65536], got 0"),
    (["models", "init", "--out", "x", "--dtype", "int8"], "--dtype: invalid choice"),
])
def test_command_line_bounds(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        longcat_main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_command_errors_name_the_argument(tmp_path, capsys):
    assert longcat_main(["serve", "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--model" in err and "no config.json" in err
    assert longcat_main(["models", "init", "--preset", "longcat-flash", "--out", str(tmp_path / "big")]) == 2
    assert "vocab_size 131072" in capsys.readouterr().err
    assert longcat_main(["models", "init", "--preset", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "preset: expected one of" in capsys.readouterr().err


def test_bench_serve_quick(tmp_path):
    from longcat.bench import AREAS
    from longcat.bench.common import report
    from longcat.bench.serve import run

    assert AREAS["serve"] == "longcat.bench.serve"
    result = run(quick=True)
    assert [r["concurrency"] for r in result.rows] == [1, 8]
    for r in result.rows:
        assert r["engine tok/s"] > 0 and r["http tok/s"] > 0 and r["http ttft ms"] > 0
        assert r["http/engine wall"] == pytest.approx(r["http wall"] / r["engine wall"])
    path = report(result, str(tmp_path))
    assert json.loads(open(path).read())["rows"] == result.rows
