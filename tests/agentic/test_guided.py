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
    # outside a block the guide leaves the logits alone, but for </tool_call>: no block to close
    free = torch.randn(len(tok))
    closed = tok('<tool_call>\n{"name": "x", "arguments": {}}\n</tool_call> ok', add_special_tokens=False)["input_ids"]
    for before in (tok("hello", add_special_tokens=False)["input_ids"], closed):
        out = guide(before, free)
        assert out[guide.end_id] == float("-inf")
        keep = torch.ones(len(tok), dtype=torch.bool)
        keep[guide.end_id] = False
        assert torch.equal(out[keep], free[keep])
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
    copying = EvalConfig(conditions=("clean",), max_tasks=1, max_turns=2, max_tokens=24, copy_values=True,
                         tool_format="names")
    assert copying.guided     # copying values is a kind of guided decoding
    r = evaluate(envs, tasks, model=str(tiny_ckpt), cfg=copying, progress=False)
    assert r["copy_values"] is True and r["conditions"]["clean"]["all"]["episodes"] == 1
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


# ---- copying free string values from the conversation (longcat.engine.copying) -----------------

def test_value_spans():
    from longcat.engine.copying import value_spans

    spans = value_spans(['My email is kaylee53@example.net, and the title is "Of tree nice."',
                         json.dumps({"courses": [{"id": "CO-000001", "title": "A b"}], "n": 3})], max_words=3)
    for s in ("kaylee53@example.net", "Of tree nice.", "Of tree nice", "CO-000001", "A b", "My email is"):
        assert s in spans, s
    assert "My email is kaylee53@example.net" not in spans           # four words: past max_words
    assert len(spans) == len(set(spans)) and "" not in spans and "CO-000001 A" not in spans   # JSON: whole strings
    assert value_spans([]) == []
    cut = value_spans(["Hi there. This is Lisa Gomez (name: Brandy Burns)? Thanks!"])
    assert "Brandy Burns" in cut and "Lisa Gomez" in cut and "there." in cut and "there" in cut
    assert not any(s.startswith(("Hi there. This", "Burns)? Thanks")) for s in cut)   # no run past a sentence's end
    dots = value_spans(["My title is Of tree nice.."])      # a title ending "." said at a sentence's end
    assert {"Of tree nice..", "Of tree nice.", "Of tree nice"} <= set(dots)
    with pytest.raises(ValueError, match="max_words"):
        value_spans(["a"], max_words=0)
    with pytest.raises(TypeError, match="texts"):
        value_spans([3])


@pytest.mark.parametrize("prefix_len", [1, 15, 16, 37])
def test_span_scorer_matches_the_training_forward(tiny_ckpt, prefix_len):
    """Each score is the log-likelihood that a plain forward over prefix + continuation gives,
    plus the log-probability of closing after it; across page boundaries and candidate batches."""
    from longcat.engine.copying import SpanScorer
    from longcat.models.modeling import LongcatFlashForCausalLM

    model = LongcatFlashForCausalLM.from_pretrained(str(tiny_ckpt)).eval()
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(prefix_len)
    prefix = torch.randint(3, vocab, (prefix_len,), generator=g).tolist()
    conts = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in (1, 5, 2, 17, 3)]
    conts += [conts[3][:4], conts[1][:1], list(conts[3])]     # prefixes of others, and a duplicate
    end = torch.zeros(vocab, dtype=torch.bool)
    end[torch.randint(3, vocab, (7,), generator=g)] = True
    got = SpanScorer(model, page_size=16, max_batch=2).score(prefix, conts, end)
    with torch.no_grad():
        for c, s in zip(conts, got):
            lp = torch.log_softmax(model(torch.tensor([prefix + c]))[0].float(), -1)
            want = sum(float(lp[prefix_len - 1 + j, t]) for j, t in enumerate(c))
            want += float(torch.logsumexp(lp[-1][end], 0))
            assert s == pytest.approx(want, abs=2e-3)


def test_span_scorer_bad_input(tiny_ckpt):
    from longcat.engine.copying import SpanScorer
    from longcat.models.modeling import LongcatFlashForCausalLM

    model = LongcatFlashForCausalLM.from_pretrained(str(tiny_ckpt)).eval()
    vocab = model.config.vocab_size
    end = torch.zeros(vocab, dtype=torch.bool)
    s = SpanScorer(model)
    assert s.score([5], [], end) == []
    for args, match in [(([], [[1]], end), "prefix"), (([5], [[]], end), "continuations"),
                        (([5], [[vocab]], end), "token ids"), (([-1], [[1]], end), "token ids"),
                        (([5], [[1]], end[:-1]), "end_mask"), (([5], [[1]], end.float()), "end_mask"),
                        (([5] * model.config.max_position_embeddings, [[1]], end), "max_position_embeddings")]:
        with pytest.raises(ValueError, match=match):
            s.score(*args)
    with pytest.raises(ValueError, match="page_size"):
        SpanScorer(model, page_size=0)
    with pytest.raises(TypeError, match="copier"):
        ToolCallGuide(object.__new__(type("T", (), {})), TOOLS, copier=object())


class _FixedCopier:
    """A copier that always picks one value (the guide's side of the contract)."""

    def __init__(self, value):
        self.value, self.calls = value, []

    def choose(self, ids, typed, pieces):
        self.calls.append((list(ids), typed))
        return self.value if self.value is not None and self.value.startswith(typed) else None

    def fits(self, typed, whole=False):
        return self.value is None or (typed == self.value if whole else self.value.startswith(typed))


def test_guide_spells_the_copied_value(tok):
    """With a copier, a free string value is exactly the chosen text, whatever the logits favour;
    enums, numbers and the rest of the call stay the grammar's and the model's."""
    from longcat.engine.chat import parse_assistant_text

    copier = _FixedCopier("kaylee53@example.net")
    guide = ToolCallGuide(tok, TOOLS, copier=copier)
    start = tok.convert_tokens_to_ids("<tool_call>")
    head = tok('\n{"name": "get_order", "arguments": {"order_id": "', add_special_tokens=False)["input_ids"]
    gen = [start] + head
    g = torch.Generator().manual_seed(1)
    for _ in range(60):
        out = guide(gen, torch.randn(len(tok), generator=g))
        gen.append(int(out.argmax()))
        if gen[-1] == guide.end_id:
            break
    call = parse_assistant_text(tok.decode(gen)).tool_calls[0]["function"]
    assert json.loads(call["arguments"]) == {"order_id": "kaylee53@example.net"}
    assert copier.calls and all(ids == gen[:len(ids)] for ids, _ in copier.calls)
    # The token that opens the string cannot start it with anything but the value ('"+' is out).
    key = tok('\n{"name": "get_order", "arguments": {"order_id":', add_special_tokens=False)["input_ids"]
    state = guide._state([start] + key)
    opening = guide.allowed(state, range(len(tok)))
    assert opening
    for t in opening:
        body = '"order_id":' + guide.pieces[t]
        typed = body.split('"order_id": "', 1)[1] if '"order_id": "' in body else ""
        assert copier.value.startswith(typed), repr(guide.pieces[t])
    # No candidate fits: the string is left to the model under the grammar alone.
    free = ToolCallGuide(tok, TOOLS, copier=_FixedCopier(None))
    logits = torch.randn(len(tok), generator=g)
    assert torch.equal(free([start] + head, logits), ToolCallGuide(tok, TOOLS)([start] + head, logits))


def test_copier_picks_the_best_scored_span(tiny_ckpt, tok, lead_to):
    """ContextCopier's choice is the candidate SpanScorer scores highest, and the engine writes it."""
    from longcat.engine import LLM, SamplingParams
    from longcat.engine.chat import parse_assistant_text
    from longcat.engine.copying import ContextCopier, SpanScorer, value_spans

    llm = LLM(str(tiny_ckpt))
    user = "Please look up order O-7731 for kaylee53@example.net today."
    prompt = tok(f"<s><|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    scorer = SpanScorer(llm.engine.model)
    copier = ContextCopier(scorer, tok, prompt, [user], max_words=2)
    guide = ToolCallGuide(tok, TOOLS, required=True, copier=copier)
    forced = tok('\n{"name": "get_order", "arguments": {"order_id": "', add_special_tokens=False)["input_ids"]

    out = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=40, logits_processors=[lead_to(forced), guide]))[0]
    text = out.outputs[0].text
    spans = value_spans([user], max_words=2)
    prefix = prompt + out.outputs[0].token_ids[:1 + len(forced)]
    conts = [tok(json.dumps(s)[1:-1], add_special_tokens=False)["input_ids"] for s in spans]
    scores = scorer.score(prefix, conts, copier.end_mask(guide.pieces))
    mean = [s / (len(c) + 1) for s, c in zip(scores, conts)]     # the copier's rule: per token, closing counted
    best = spans[max(range(len(spans)), key=mean.__getitem__)]
    got = text.split('"order_id": "', 1)[1]
    assert got.startswith(json.dumps(best)[1:-1] + '"'), (got, best)
    if guide.end_id in out.outputs[0].token_ids:
        assert json.loads(parse_assistant_text(text).tool_calls[0]["function"]["arguments"])["order_id"] == best


def test_copier_ranks_by_mean_log_probability_per_token(tok):
    """A plain sum would favour the shortest span; the copier divides by the tokens, closing counted."""
    from longcat.engine.copying import ContextCopier
    from longcat.engine.guided import _token_pieces

    class Scorer:                    # the email: -0.5 a token (closing counted); "Hi": -2 in all
        model = type("M", (), {"config": type("C", (), {"vocab_size": len(tok)})()})()
        calls = []

        def score(self, prefix, conts, end_mask):
            self.calls.append((list(prefix), [list(c) for c in conts]))
            return [-2.0 if tok.decode(c) == "Hi" else -0.5 * (len(c) + 1) for c in conts]

    scorer = Scorer()
    copier = ContextCopier(scorer, tok, [1, 2], ["Hi kaylee53@example.net"], max_words=1)
    best = copier.choose([3], "", _token_pieces(tok))
    n = len(tok("kaylee53@example.net", add_special_tokens=False)["input_ids"])
    assert -0.5 * (n + 1) < -2.0     # by the sum "Hi" would win: per token (-1 against -0.5) it loses
    assert best == "kaylee53@example.net" and scorer.calls[0][0] == [1, 2, 3]
    assert copier.choose([3], "", _token_pieces(tok)) == best and len(scorer.calls) == 1   # remembered
    assert copier.choose([3], "kay", _token_pieces(tok)) == best                          # only what fits
    assert copier.choose([3], "zz", _token_pieces(tok)) is None
    assert copier.fits("kay") and copier.fits("Hi", whole=True) and not copier.fits("Hi ", whole=True)
