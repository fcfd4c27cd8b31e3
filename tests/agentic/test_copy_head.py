"""The copy head (``longcat.models.copy_head``): its SFT targets, its loss, its training in
``longcat sft --copy-head``, and the copier that ranks spans with it (``--copy-values``)."""
import json

import pytest
import torch

from longcat.models.copy_head import CopyHead, copy_events, occurrences, source_regions, source_tokens, token_at

USER = "I'm Nicole Rivers. Please register a learner (name: Lisa Gomez; email: lg@example.net)."
TOOL_RESULT = json.dumps({"learner_id": "LR-000007", "name": "Lisa Gomez", "note": 'says "hi"'})


def _call(name, args, cid="c1"):
    return {"role": "assistant", "content": None, "tool_calls": [
        {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]}


def _conversation(name="Lisa Gomez"):
    return [{"role": "system", "content": "You help learners."},
            {"role": "user", "content": USER.replace("Lisa Gomez", name)},
            _call("register_learner", {"name": name, "email": "lg@example.net", "country": "PE"}),
            {"role": "tool", "tool_call_id": "c1", "content": TOOL_RESULT.replace("Lisa Gomez", name)},
            _call("suspend_learner", {"learner_id": "LR-000007", "reason": 'says "hi"'}, "c2"),
            {"role": "tool", "tool_call_id": "c2", "content": "{}"},
            {"role": "assistant", "content": "Done."}]


@pytest.fixture(scope="module")
def tok(tiny_ckpt):
    from longcat.engine.llm import load_tokenizer

    return load_tokenizer(None, str(tiny_ckpt))


def test_copy_events_point_at_the_values_in_earlier_messages(tok):
    ids, mask, events, sources = copy_events(tok, _conversation(), None, "names")
    from longcat.data.format import encode

    assert (ids, mask) == encode(tok, _conversation(), None, "names")     # the same tokens SFT trains on
    got = {}
    for q, starts, ends in events:
        before = tok.decode(ids[:q + 1])
        key = before.rsplit('"', 3)[-3]          # ... "key": "  -> key
        assert before.endswith(f'"{key}": "'), before[-30:]
        got[key] = [tok.decode(ids[s:e + 1]).strip() for s, e in zip(starts, ends)]
        assert all(s < q and e < q for s, e in zip(starts, ends))
        assert set(starts) <= set(sources) and set(ends) <= set(sources)
    # country "PE" occurs in no earlier message: no event; the id and the quoted text come from
    # the tool's result, escaped there as JSON
    assert got == {"name": ["Lisa Gomez"], "email": ["lg@example.net"], "learner_id": ["LR-000007"],
                   "reason": ['says \\"hi\\"']}
    text = tok.decode(ids)
    src_text = "".join(tok.decode([ids[t]]) for t in sources)
    assert "You help learners" not in src_text and "register_learner" not in src_text
    assert "Nicole Rivers" in src_text and "LR-000007" in src_text and "Nicole" in text


def test_occurrences_are_whole_words_and_json_escaped():
    text = "AT ATtention cAT AT. x"
    assert occurrences(text, [(0, len(text))], "AT") == [(0, 2), (17, 19)]
    assert occurrences(text, [(3, len(text))], "AT") == [(17, 19)]     # only inside the regions
    assert occurrences(text, [(0, 10)], "AT.") == []                   # "AT." is past the region
    js = json.dumps({"note": 'says "hi"'})
    assert occurrences(js, [(0, len(js))], 'says "hi"') == [(js.index("says"), js.index("says") + 11)]
    assert source_regions("a b a c", ["a", "c", "zz"]) == [(0, 1), (6, 7)]
    assert source_regions("a b a c", ["a", "a"]) == [(0, 1), (4, 5)]   # one after another
    starts = [0, 3, 6, 10]
    assert [token_at(starts, c) for c in (0, 2, 3, 9, 10, 50)] == [0, 0, 1, 2, 3, 3]
    assert source_tokens(starts, [(4, 7), (11, 12)]) == [1, 2, 3]


def test_copy_head_shapes_save_load_and_bad_input(tmp_path):
    torch.manual_seed(0)
    head = CopyHead(16, dim=4)
    q, k = torch.randn(3, 16), torch.randn(7, 16)
    start, end = head(q, k)
    assert start.shape == end.shape == (3, 7) and not torch.equal(start, end)
    head.save(tmp_path)
    back = CopyHead.load(tmp_path, 16)
    for a, b in zip(head(q, k), back(q, k)):
        torch.testing.assert_close(a, b)
    assert CopyHead.load(tmp_path / "nothing") is None
    half = CopyHead.load(tmp_path, 16, dtype=torch.bfloat16)        # float32 states into a bf16 head
    torch.testing.assert_close(half(q, k)[0], start, rtol=0.05, atol=0.1)
    with pytest.raises(ValueError, match="hidden size 16, but the model's is 32"):
        CopyHead.load(tmp_path, 32)
    (tmp_path / "copy_head.json").write_text("{")
    with pytest.raises(ValueError, match="copy_head.json"):
        CopyHead.load(tmp_path)
    with pytest.raises(ValueError, match="dim"):
        CopyHead(16, dim=0)
    with pytest.raises(ValueError, match=r"queries \[n, 16\]"):
        head(torch.randn(3, 8), k)


def test_copy_loss_is_the_pointer_cross_entropy():
    """Each event: -log of the start probability mass on its gold starts, over the source tokens
    of its own document before it, plus the same for the ends."""
    from longcat.sft.trainer import _copy_loss

    torch.manual_seed(1)
    head = CopyHead(8, dim=4)
    hidden = torch.randn(20, 8)
    bounds = [(0, 12), (12, 20)]
    copies = [([(9, [2, 5], [3, 6]), (11, [10], [10])], [1, 2, 3, 5, 6, 10]),    # 10 is after query 9
              ([(7, [0], [1])], [0, 1, 4])]                                       # 4 is in the doc, < 7
    got, n = _copy_loss(head, hidden, bounds, copies)
    expected = 0.0
    for off, q, cands, gs, ge in [(0, 9, [1, 2, 3, 5, 6], [2, 5], [3, 6]), (0, 11, [1, 2, 3, 5, 6, 10], [10], [10]),
                                  (12, 7, [0, 1, 4], [0], [1])]:
        s, e = head(hidden[[off + q]], hidden[[off + c for c in cands]])
        for logits, gold in ((s[0], gs), (e[0], ge)):
            p = torch.softmax(logits, 0)
            expected -= torch.log(sum(p[cands.index(g)] for g in gold))
    assert n == 3
    torch.testing.assert_close(got, expected)
    none, zero = _copy_loss(head, hidden, bounds, [([], [1]), ([], [])])
    assert zero == 0 and float(none) == 0.0


@pytest.fixture(scope="module")
def copy_data(tmp_path_factory):
    """Conversations whose register call copies one of the two names of the user's message."""
    from faker import Faker

    fake = Faker()
    Faker.seed(0)
    root = tmp_path_factory.mktemp("copyhead")
    lines = [json.dumps({"messages": _conversation(fake.name())}) for _ in range(16)]
    (root / "train.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_sft_trains_the_copy_head_and_resumes_it(tiny_ckpt, copy_data):
    from safetensors.torch import load_file

    from longcat.sft import SFTConfig, train

    cfg = dict(seq_len=512, grad_accum=1, lr=3e-3, warmup_steps=2, dtype="float32", save_every=5,
               tool_format="names", copy_head=True)
    data = copy_data / "train.jsonl"
    run = train(data, tiny_ckpt, copy_data / "straight", SFTConfig(**cfg, max_steps=30), progress=False)
    final = run.checkpoint_dir
    assert (final / "copy_head.safetensors").is_file() and json.loads((final / "sft_meta.json").read_text())["copy_head"]
    losses = [h["copy_loss"] for h in run.history]
    assert all(x is not None and x > 0 for x in losses)
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses     # the pointer learns
    # interrupted after 3 steps and resumed: the head trains on as in one run
    train(data, tiny_ckpt, copy_data / "resumed", SFTConfig(**cfg, max_steps=3), progress=False)
    again = train(data, tiny_ckpt, copy_data / "resumed", SFTConfig(**cfg, max_steps=4), progress=False)
    straight4 = train(data, tiny_ckpt, copy_data / "straight4", SFTConfig(**cfg, max_steps=4), progress=False)
    assert again.resumed_from == 3
    a, b = load_file(str(again.checkpoint_dir / "copy_head.safetensors")), \
        load_file(str(straight4.checkpoint_dir / "copy_head.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    with pytest.raises(ValueError, match="context_weight"):
        SFTConfig(copy_head=True, context_weight=0.5)
    with pytest.raises(ValueError, match="copy_weight"):
        SFTConfig(copy_weight=-1.0)


class _PointingHead(torch.nn.Module):
    """Puts the start and end pointers on fixed key columns (the copier's side of the contract)."""

    def __init__(self, start_col, end_col):
        super().__init__()
        self.start_col, self.end_col, self.calls = start_col, end_col, []

    def forward(self, queries, keys):
        self.calls.append((queries.shape[0], keys.shape[0]))
        start = torch.zeros(1, keys.shape[0])
        end = torch.zeros(1, keys.shape[0])
        start[0, self.start_col] = 10.0
        end[0, self.end_col] = 10.0
        return start, end


def test_copier_with_a_head_writes_the_span_it_points_at(tiny_ckpt, tok, lead_to):
    """The copier maps the head's start / end columns back to the span of the user's message they
    bound, and the engine writes that span; the likelihood ranking is not consulted."""
    from longcat.engine import LLM, SamplingParams
    from longcat.engine.copying import ContextCopier, SpanScorer
    from longcat.engine.guided import ToolCallGuide

    tools = [{"type": "function", "function": {"name": "register_learner", "parameters": {
        "type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}}}]
    text = f"<s><|im_start|>system\nYou help.<|im_end|>\n<|im_start|>user\n{USER}<|im_end|>\n<|im_start|>assistant\n"
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    prompt, offsets = enc["input_ids"], enc["offset_mapping"]
    a = text.index(USER)
    keys = [i for i, (x, y) in enumerate(offsets) if y > a and x < a + len(USER)]      # the user's tokens
    start_tok = next(i for i, (x, y) in enumerate(offsets) if x <= text.index("Lisa") < y)
    end_tok = next(i for i, (x, y) in enumerate(offsets) if x <= text.index("Gomez") + 4 < y)
    head = _PointingHead(keys.index(start_tok), keys.index(end_tok))

    llm = LLM(str(tiny_ckpt))

    class NoLikelihood(SpanScorer):
        def score(self, *a, **k):
            raise AssertionError("the head ranks the spans")

    copier = ContextCopier(NoLikelihood(llm.engine.model), tok, prompt, [USER], max_words=3, head=head)
    guide = ToolCallGuide(tok, tools, required=True, copier=copier)
    forced = tok('\n{"name": "register_learner", "arguments": {"name": "', add_special_tokens=False)["input_ids"]

    out = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=30, logits_processors=[lead_to(forced), guide]))[0]
    assert out.outputs[0].text.split('"name": "', 2)[2].startswith('Lisa Gomez"'), out.outputs[0].text
    assert head.calls and head.calls[0] == (1, len(keys))
    # pointing at "Nicole" .. "Rivers" picks the other name
    start_tok = next(i for i, (x, y) in enumerate(offsets) if x <= text.index("Nicole") < y)
    end_tok = next(i for i, (x, y) in enumerate(offsets) if x <= text.index("Rivers") + 5 < y)
    other = ContextCopier(NoLikelihood(llm.engine.model), tok, prompt, [USER], max_words=3,
                          head=_PointingHead(keys.index(start_tok), keys.index(end_tok)))
    ids = [tok.convert_tokens_to_ids("<tool_call>")] + forced
    assert other.choose(ids, "", guide.pieces) == "Nicole Rivers"


def test_eval_reports_the_copy_ranker(built, tiny_ckpt, tmp_path):
    import shutil

    from longcat.evaluate import EvalConfig, evaluate, load_heldout

    ckpt = tmp_path / "with_head"
    shutil.copytree(tiny_ckpt, ckpt)
    CopyHead(json.loads((ckpt / "config.json").read_text())["hidden_size"], dim=8).save(ckpt)
    envs, tasks = load_heldout(built[0] / "data")
    cfg = EvalConfig(conditions=("clean",), max_tasks=2, max_turns=2, max_tokens=24, copy_values=True)
    with_head = evaluate(envs, tasks, model=str(ckpt), cfg=cfg, progress=False)
    plain = evaluate(envs, tasks, model=str(tiny_ckpt), cfg=cfg, progress=False)
    assert with_head["copy_ranker"] == "head" and plain["copy_ranker"] == "likelihood"
    assert evaluate(envs, tasks, model=str(ckpt), cfg=EvalConfig(conditions=("clean",), max_tasks=1, max_turns=1,
                                                               max_tokens=8), progress=False)["copy_ranker"] is None


class _KindCopier:
    """Picks one value per JSON kind; records what the guide asked."""

    def __init__(self, values):
        self.values, self.calls = values, []

    def choose(self, ids, typed, pieces, kind="string"):
        self.calls.append((list(ids), typed, kind))
        v = self.values.get(kind)
        return v if v is not None and v.startswith(typed) else None

    def fits(self, typed, whole=False):
        v = self.values["string"]
        return typed == v if whole else v.startswith(typed)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_guide_copies_numbers_and_stops_where_they_end(tok, seed):
    """An integer argument is the copier's number, spelled exactly (no digit appended after it),
    asked for at the token that holds the key's colon; strings and booleans as before."""
    from longcat.engine.chat import parse_assistant_text
    from longcat.engine.guided import ToolCallGuide

    tools = [{"type": "function", "function": {"name": "add_lesson", "parameters": {
        "type": "object", "properties": {"minutes": {"type": "integer"}, "title": {"type": "string"},
                                         "required": {"type": "boolean"}},
        "required": ["minutes", "title", "required"]}}}]
    copier = _KindCopier({"string": "Of tree nice.", "integer": "277"})
    guide = ToolCallGuide(tok, tools, copier=copier)
    gen = [tok.convert_tokens_to_ids("<tool_call>")]
    g = torch.Generator().manual_seed(seed)
    for _ in range(80):
        logits = torch.randn(len(tok), generator=g)
        logits[[i for i, p in enumerate(guide.pieces) if p and p[:1].isdigit()]] += 5.0   # digits tempt it
        gen.append(int(guide(gen, logits).argmax()))
        if gen[-1] == guide.end_id:
            break
    call = parse_assistant_text(tok.decode(gen)).tool_calls[0]["function"]
    args = json.loads(call["arguments"])
    assert args["minutes"] == 277 and args["title"] == "Of tree nice." and isinstance(args["required"], bool)
    asked = [(tok.decode(ids), kind) for ids, _, kind in copier.calls if kind == "integer"]
    assert asked and all(text.rstrip(" ").endswith('"minutes":') for text, _ in asked), asked
    # no number to copy: the grammar alone
    free = ToolCallGuide(tok, tools, copier=_KindCopier({"string": "Of tree nice.", "integer": None}))
    body = tok('\n{"name": "add_lesson", "arguments": {"minutes":', add_special_tokens=False)["input_ids"]
    logits = torch.randn(len(tok), generator=g)
    assert torch.equal(free(gen[:1] + body, logits), ToolCallGuide(tok, tools)(gen[:1] + body, logits))


def test_copy_sources_are_the_user_and_the_tools_data_not_their_errors():
    from longcat.engine.copying import copy_sources

    msgs = [{"role": "system", "content": "Policy: never copy me."}, {"role": "user", "content": "Hi, I'm Lisa."},
            {"role": "assistant", "content": "Which course?"}, {"role": "tool", "content": '{"id": "CO-1"}'},
            {"role": "tool", "content": "Error: invalid arguments: country: 4 characters exceeds maxLength 3"},
            {"role": "tool", "content": '"a bare JSON string"'}, {"role": "user", "content": None},
            {"role": "tool", "content": "[1, 2]"}]
    assert copy_sources(msgs) == ["Hi, I'm Lisa.", '{"id": "CO-1"}', "[1, 2]"]
