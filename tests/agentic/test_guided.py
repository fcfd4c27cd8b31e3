"""Schema-constrained tool calls (longcat.engine.guided) and the train/eval parity they rely on."""
import json

import pytest
import torch

from longcat.engine.guided import CallGrammar, ToolCallGuide

TOOLS = [{"type": "function", "function": {"name": "get_order", "parameters": {
    "type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}},
    {"type": "function", "function": {"name": "set_status", "parameters": {
        "type": "object", "required": ["order_id", "status"],
        "properties": {"order_id": {"type": "string"}, "status": {"type": "string", "enum": ["open", "closed"]},
                       "count": {"type": ["integer", "null"]}, "price": {"type": "number"},
                       "urgent": {"type": "boolean"}}}}}]


def _body(name, args):
    return '\n{"name": ' + json.dumps(name) + ', "arguments": ' + json.dumps(args) + "}\n"


@pytest.mark.parametrize("name,args", [
    ("get_order", {"order_id": "O-1"}),
    ("set_status", {"order_id": "O-1", "status": "closed"}),
    ("set_status", {"status": "open", "order_id": "a \"quoted\" \\ id", "count": 12, "price": 3.5, "urgent": False}),
    ("set_status", {"order_id": "x", "status": "open", "count": None, "price": -7, "urgent": True}),
])
def test_grammar_accepts_template_calls(name, args):
    g = CallGrammar(TOOLS)
    state = g.feed(CallGrammar.START, _body(name, args))
    assert CallGrammar.complete(state)
    # every proper prefix is a live, incomplete state
    text = _body(name, args)
    assert all(g.feed(CallGrammar.START, text[:k]) is not None for k in range(len(text)))


@pytest.mark.parametrize("text", [
    '\n{"name": "get_orders"',                                              # not a tool
    '\n{"name": "get_order", "arguments": {"status',                        # not its key
    '\n{"name": "set_status", "arguments": {"order_id": "a"}',              # required status missing
    '\n{"name": "set_status", "arguments": {"order_id": "a", "order_id"',   # key twice
    '\n{"name": "set_status", "arguments": {"status": "opened',             # not in the enum
    '\n{"name": "set_status", "arguments": {"count": 01',                   # leading zero
    '\n{"name": "set_status", "arguments": {"count": 1.5',                  # integer only
    '\n{"name": "set_status", "arguments": {"urgent": "yes',                # boolean
    '\n{"name": "get_order", "arguments": {"order_id": 7',                  # string
    '\n{"name": "get_order", "arguments": {"order_id": "a"}}\n}',           # after the end
    '\n{"name": "get_order", "arguments": {"order_id": "a",',               # a comma with no key left
    '{"name"',                                                              # the template's newline first
])
def test_grammar_rejects(text):
    assert CallGrammar(TOOLS).feed(CallGrammar.START, text) is None


def test_grammar_bad_input():
    with pytest.raises(ValueError, match="tools"):
        CallGrammar([])


@pytest.fixture(scope="module")
def tok(tiny_ckpt):
    from longcat.engine.llm import load_tokenizer

    return load_tokenizer(None, str(tiny_ckpt))


def test_guide_never_blocks_a_training_call(built, tok):
    """Every token of every tool call the SFT data teaches is allowed by the guide at its place."""
    from longcat.data.format import read_jsonl, render

    root, _ = built
    guide = None
    checked = 0
    for obj in read_jsonl(root / "data" / "train.jsonl"):
        if guide is None or guide.grammar.schemas.keys() != {t["function"]["name"] for t in obj["tools"]}:
            guide = ToolCallGuide(tok, obj["tools"])
        for k, m in enumerate(obj["messages"]):
            if m["role"] != "assistant" or not m.get("tool_calls"):
                continue
            head = render(obj["messages"][:k], obj["tools"], "names", add_generation_prompt=True)
            full = render(obj["messages"][:k + 1], obj["tools"], "names")
            ids = tok(full[len(head):].split("<|im_end|>")[0], add_special_tokens=False)["input_ids"]
            for j in range(len(ids)):
                state = guide._state(ids[:j])
                if state is not None:
                    assert guide.allowed(state, [ids[j]]) == [ids[j]], (tok.decode(ids[:j + 1]), j)
            checked += 1
        if checked >= 60:
            break
    assert checked >= 20


def test_guide_masks_logits_to_the_best_valid_token(tok):
    guide = ToolCallGuide(tok, TOOLS)
    start = tok.convert_tokens_to_ids("<tool_call>")
    gen = [start]
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        logits = torch.randn(len(tok), generator=g)
        out = guide(gen, logits)
        best = int(out.argmax())
        assert torch.isfinite(out).sum() >= 1 and out[best] == logits[best]
        gen.append(best)
        if best == guide.end_id:
            break
        assert guide._state(gen) is not None        # always a live prefix of a valid call
    text = tok.decode(gen)
    # outside a block the guide leaves the logits alone
    free = torch.randn(len(tok))
    assert torch.equal(guide(tok("hello", add_special_tokens=False)["input_ids"], free), free)
    assert text.startswith('<tool_call>\n{"name": "')


def test_engine_applies_logits_processors(tiny_ckpt, tok):
    from longcat.engine import LLM, SamplingParams
    from longcat.engine.chat import parse_assistant_text

    llm = LLM(str(tiny_ckpt))
    start = tok.convert_tokens_to_ids("<tool_call>")
    guide = ToolCallGuide(tok, TOOLS)

    def open_call(generated, logits):          # a random model: open the block ourselves
        if not generated:
            logits = torch.full_like(logits, float("-inf"))
            logits[start] = 0.0
        return logits

    def closer(generated, logits):             # favour quotes and braces so the call can finish
        logits = logits.clone()
        for t in ('"', '"}}', "}}", '",', "}", "\n"):
            tid = tok.convert_tokens_to_ids(tok.tokenize(t))
            if len(tid) == 1:
                logits[tid[0]] += 4.0
        return logits

    prompt = tok("<s><|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    out = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=60,
                                                logits_processors=[open_call, closer, guide]))[0].outputs[0]
    required = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=60, logits_processors=[
        closer, ToolCallGuide(tok, TOOLS, required=True)]))[0].outputs[0]
    assert required.token_ids == out.token_ids      # `required` opens the block as open_call did
    ids = out.token_ids
    assert ids[0] == start
    end = ids.index(guide.end_id) if guide.end_id in ids else len(ids)
    assert guide._state(ids[:end]) is not None
    if end < len(ids):
        call = parse_assistant_text(out.text).tool_calls[0]["function"]
        assert call["name"] in {"get_order", "set_status"}
    with pytest.raises(ValueError, match="logits_processors"):
        llm.generate([prompt], SamplingParams(logits_processors=["not callable"]))

    # A processor that raises or returns the wrong shape ends only its own request.
    def boom(generated, logits):
        if len(generated) == 2:
            raise RuntimeError("boom")
        return logits

    plain = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    alone = llm.generate([prompt], plain)[0].outputs[0].token_ids
    done = llm.generate([prompt, prompt, prompt], [
        plain, SamplingParams(temperature=0, max_tokens=6, ignore_eos=True, logits_processors=[boom]),
        SamplingParams(temperature=0, max_tokens=6, ignore_eos=True, logits_processors=[lambda g, x: x[:3]])])
    assert done[0].error is None and done[0].outputs[0].token_ids == alone
    assert "logits_processors[0] raised RuntimeError: boom" in done[1].error
    assert len(done[1].outputs[0].token_ids) == 2 and done[1].outputs[0].finish_reason == "abort"
    assert "expected a tensor of shape" in done[2].error and done[2].outputs[0].token_ids == []


def test_eval_and_sft_see_the_same_tokens(built, tok):
    """The evaluation prompt of a training task's first turn is the token prefix SFT trained on,
    with the loss mask starting right after it; and a model writing exactly the trained text of
    each reference turn, parsed back by the engine's tool-call parser, solves held-out tasks."""
    from longcat.data import envs_adapter as ea
    from longcat.data.format import encode, read_jsonl, render
    from longcat.data.synth import ReferencePolicy, policy_rules
    from longcat.engine.chat import parse_assistant_text
    from longcat.evaluate import load_heldout
    from longcat.evaluate.runner import apply_reply

    root, _ = built
    envs, tasks = ea.load_build(root / "envs")
    by_id = {t["task_id"]: t for t in tasks}
    n = 0
    for obj in read_jsonl(root / "data" / "train.jsonl"):
        if obj["variant"] != "grounded":
            continue
        t = by_id[obj["task_id"]]
        conv = ea.Conversation(ea.make_env(envs[t["env_id"]]), t)
        prompt = tok(render(conv.messages, conv.tools, "names", add_generation_prompt=True),
                     add_special_tokens=False)["input_ids"]
        ids, mask = encode(tok, obj["messages"], obj["tools"], "names")
        assert ids[:len(prompt)] == prompt and not any(mask[:len(prompt)]) and mask[len(prompt)] == 1
        # every later turn too, as `longcat eval --diagnose` renders its teacher-forced prefixes
        for k, m in enumerate(obj["messages"]):
            if m["role"] == "assistant":
                head = tok(render(obj["messages"][:k], obj["tools"], "names", add_generation_prompt=True),
                           add_special_tokens=False)["input_ids"]
                assert ids[:len(head)] == head and mask[len(head) - 1] == 0 and mask[len(head)] == 1
        n += 1
        if n >= 10:
            break
    assert n >= 5
    henvs, htasks = load_heldout(root / "data")
    solved = 0
    for t in htasks[:6]:
        env = ea.make_env(henvs[t["env_id"]])
        policy = ReferencePolicy(t, "grounded", env.tools, policy_rules(ea.domain_policy(t["domain"])))
        conv = ea.Conversation(env, t)
        while not conv.done:
            m = dict(policy(conv.messages, {"env": env, "task": t, "tools": conv.tools, "last": conv.last}),
                     role="assistant")
            head = render(conv.messages, conv.tools, "names", add_generation_prompt=True)
            text = render(conv.messages + [m], conv.tools, "names")[len(head):].split("<|im_end|>")[0]
            p = parse_assistant_text(text)
            apply_reply(conv, {"role": "assistant", "content": p.content, **({"tool_calls": p.tool_calls}
                                                                             if p.tool_calls else {})})
        solved += conv.result().reward == 1.0
    # the reference agent is verified on these environments, so the text path must not lose any
    assert solved == min(6, len(htasks))


def test_evaluate_guided(built, tiny_ckpt):
    from longcat.evaluate import EvalConfig, evaluate, load_heldout

    root, _ = built
    envs, tasks = load_heldout(root / "data")
    cfg = EvalConfig(conditions=("clean",), max_tasks=1, max_turns=2, max_tokens=24, guided=True, tool_format="names")
    r = evaluate(envs, tasks, model=str(tiny_ckpt), cfg=cfg, progress=False)
    assert r["guided"] is True and r["conditions"]["clean"]["all"]["episodes"] == 1
    with pytest.raises(ValueError, match="guided"):
        evaluate(envs, tasks, endpoint="http://127.0.0.1:9/v1", cfg=cfg, progress=False)


def test_no_repeat_ngram():
    from longcat.engine.repetition import NoRepeatNGram

    g = NoRepeatNGram(3)
    assert g.banned([5, 6, 7, 5, 6]) == [7] and g.banned([5, 6, 7, 8]) == [] and g.banned([1]) == []
    assert g.banned([4, 4, 4]) == [4]
    logits = torch.zeros(10)
    logits[7] = 5.0
    out = g([5, 6, 7, 5, 6], logits)
    assert out[7] == float("-inf") and int(out.argmax()) != 7 and torch.isfinite(out).sum() == 9
    assert torch.equal(g([1, 2], logits), logits)
    for bad in (1, 0, True, "3"):
        with pytest.raises(ValueError, match="n:"):
            NoRepeatNGram(bad)
    from longcat.evaluate import EvalConfig

    with pytest.raises(ValueError, match="no_repeat_ngram"):
        EvalConfig(no_repeat_ngram=1)
