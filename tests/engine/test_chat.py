"""Chat messages -> prompt through the tokenizer's template, and generated text -> content +
OpenAI tool calls (round trips, several calls, malformed output, any streaming split)."""
import itertools
import json

import pytest

from longcat.engine.chat import (ToolCallParser, chat_stop_token_ids, normalize_messages, normalize_tools,
                                 parse_assistant_text, render_prompt)
from longcat.models.tokenizer import render_chat, train_tokenizer

TOOLS = [{"type": "function", "function": {
    "name": "get_order", "description": "Look up an order.",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}},
    {"type": "function", "function": {"name": "cancel_order", "parameters": {"type": "object", "properties": {}}}}]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(train_tokenizer(tmp_path_factory.mktemp("tok"), domains=["retail"]))


def ids():
    counter = itertools.count()
    return lambda: f"call_{next(counter)}"


def assistant_text(calls, content=""):
    """What the template writes for an assistant turn (without the turn markers)."""
    text = render_chat([{"role": "assistant", "content": content, "tool_calls": calls}])
    return text.split("<|im_start|>assistant\n", 1)[1].rsplit("<|im_end|>", 1)[0]


def call(name, args, cid="call_x"):
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


def test_render_prompt(tok):
    messages = [{"role": "system", "content": "Be kind."},
                {"role": "user", "content": [{"type": "text", "text": "Where is "}, {"type": "text", "text": "O-1?"}]},
                {"role": "assistant", "content": None, "tool_calls": [call("get_order", {"order_id": "O-1"})]},
                {"role": "tool", "tool_call_id": "call_x", "content": '{"status": "shipped"}'}]
    text = render_prompt(tok, messages, TOOLS)
    assert text.startswith("<s><|im_start|>system\nBe kind.\n\n# Tools")
    assert json.dumps(TOOLS[0], ensure_ascii=False) in text
    assert "<|im_start|>user\nWhere is O-1?<|im_end|>" in text
    assert text.endswith('<tool_response>\n{"status": "shipped"}\n</tool_response><|im_end|>\n'
                         "<|im_start|>assistant\n")
    assert "# Tools" not in render_prompt(tok, messages[1:2])
    assert chat_stop_token_ids(tok) == [tok.convert_tokens_to_ids("<|im_end|>")]


@pytest.mark.parametrize("bad, match", [
    ([], "messages: expected a non-empty list"),
    ([{"role": "wizard", "content": "x"}], r"messages\[0\]\.role"),
    ([{"role": "user", "content": 5}], r"messages\[0\]\.content"),
    ([{"role": "user", "content": [{"type": "image_url"}]}], r"messages\[0\]\.content\[0\]"),
    ([{"role": "tool", "content": "x"}], r"messages\[0\]\.tool_call_id"),
    ([{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}]}],
     r"messages\[0\]\.tool_calls\[0\]\.function\.arguments"),
    ([{"role": "assistant", "tool_calls": [{"function": {}}]}], r"messages\[0\]\.tool_calls\[0\]"),
])
def test_bad_messages(bad, match):
    with pytest.raises(ValueError, match=match):
        normalize_messages(bad)


def test_bad_tools():
    assert normalize_tools(None) is None and normalize_tools([]) is None
    with pytest.raises(ValueError, match=r"tools\[1\]"):
        normalize_tools([TOOLS[0], {"type": "function", "function": {"description": "no name"}}])
    with pytest.raises(ValueError, match=r"tools\[0\]\.function\.parameters"):
        normalize_tools([{"type": "function", "function": {"name": "f", "parameters": "x"}}])


@pytest.mark.parametrize("content", ["", "Let me check."])
def test_round_trip(content):
    calls = [call("get_order", {"order_id": "O-1", "note": "日本 \"q\""}),
             call("cancel_order", {}), call("get_order", {"order_id": "O-2", "n": [1, 2.5, None]})]
    parsed = parse_assistant_text(assistant_text(calls, content), ids())
    assert parsed.content == (content or None)
    assert [c["function"]["name"] for c in parsed.tool_calls] == ["get_order", "cancel_order", "get_order"]
    for got, want in zip(parsed.tool_calls, calls):
        assert json.loads(got["function"]["arguments"]) == json.loads(want["function"]["arguments"])
        assert got["type"] == "function" and got["id"].startswith("call_")
    assert [c["id"] for c in parsed.tool_calls] == ["call_0", "call_1", "call_2"]


def test_plain_text_and_unclosed_call():
    assert parse_assistant_text("Hello <tool_ there").content == "Hello <tool_ there"
    assert parse_assistant_text("  two  spaces \n").content == "  two  spaces \n"   # without calls: exact
    assert parse_assistant_text("").content == ""
    # generation stopped at <|im_end|> before </tool_call>: a complete JSON object is still a call
    parsed = parse_assistant_text('<tool_call>\n{"name": "cancel_order", "arguments": {}}\n')
    assert parsed.content is None and parsed.tool_calls[0]["function"] == {"name": "cancel_order", "arguments": "{}"}
    # arguments written as a JSON string are accepted too
    parsed = parse_assistant_text('<tool_call>{"name": "f", "arguments": "{\\"a\\": 1}"}</tool_call>')
    assert json.loads(parsed.tool_calls[0]["function"]["arguments"]) == {"a": 1}


@pytest.mark.parametrize("block", [
    "{not json}", '["name", "f"]', '{"arguments": {}}', '{"name": 3, "arguments": {}}',
    '{"name": "f", "arguments": [1]}', '{"name": "f", "arguments": "{bad"}', ""])
def test_malformed_blocks_stay_content(block):
    good = '<tool_call>{"name": "ok", "arguments": {"x": 1}}</tool_call>'
    text = f"Before <tool_call>{block}</tool_call> after {good}"
    parsed = parse_assistant_text(text, ids())      # never raises
    assert [c["function"]["name"] for c in parsed.tool_calls] == ["ok"]
    assert parsed.content == f"Before <tool_call>{block}</tool_call> after"
    unclosed = parse_assistant_text(f"x <tool_call>{block}")
    assert unclosed.tool_calls == [] and unclosed.content == f"x <tool_call>{block}"


def test_streaming_any_split_matches_one_shot():
    text = ("I will look. " + assistant_text([call("get_order", {"order_id": "O-1"}), call("cancel_order", {})])
            + " <tool_call>{bad}</tool_call> done <tool")
    want = parse_assistant_text(text, ids())
    for cut in range(len(text) + 1):
        for step in (1, 7):
            parser = ToolCallParser(ids())
            events = parser.feed(text[:cut])
            for i in range(cut, len(text), step):
                events += parser.feed(text[i:i + step])
            events += parser.finish()
            calls = [e for e in events if isinstance(e, dict)]
            content = "".join(e for e in events if isinstance(e, str))
            assert calls == want.tool_calls
            assert content == want.content
            # no piece of a tag leaks out as content before the tag completes
            assert all("<tool_call" not in e or "<tool_call>" in e for e in events if isinstance(e, str))
