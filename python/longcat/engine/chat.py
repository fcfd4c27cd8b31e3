"""OpenAI chat messages to a prompt, and generated text back to ``content`` + ``tool_calls``.

``render_prompt(tokenizer, messages, tools)`` checks OpenAI-shaped messages (system / user /
assistant with ``tool_calls`` / tool with ``tool_call_id``; content as a string or a list of text
parts) and renders them with the tokenizer's chat template (``apply_chat_template``; the
longcat template is ``longcat.models.tokenizer.CHAT_TEMPLATE``).

The model writes a tool call as ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``.
``ToolCallParser`` reads generated text incrementally (``feed(delta)`` while streaming,
``finish()`` at the end) and returns events: text for ``content`` and OpenAI tool calls
``{"id": "call_...", "type": "function", "function": {"name", "arguments": JSON string}}``. It
never raises: a block that is not a JSON object with a string ``name`` and object ``arguments``
(or an unclosed block at the end that does not parse) stays in the content as the model wrote
it. ``parse_assistant_text(text)`` is the one-shot form, so a streamed and a non-streamed
response agree.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence, Union

from longcat.models.tokenizer import CHAT_STOP_TOKEN, TOOL_CALL_END, TOOL_CALL_START

__all__ = ["normalize_messages", "normalize_tools", "render_prompt", "chat_stop_token_ids",
           "ToolCallParser", "ParsedMessage", "parse_assistant_text", "new_tool_call_id"]

ROLES = ("system", "user", "assistant", "tool")


def new_tool_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _text(content: Any, where: str) -> str:
    """OpenAI content (None, a string, or a list of ``{"type": "text", "text"}`` parts) as text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if not (isinstance(part, Mapping) and part.get("type") == "text"
                    and isinstance(part.get("text"), str)):
                raise ValueError(f"{where}[{j}]: expected a text part {{'type': 'text', 'text': str}}, "
                                 f"got {part!r:.80}")
            parts.append(part["text"])
        return "".join(parts)
    raise ValueError(f"{where}: expected a string or a list of text parts, got {type(content).__name__}")


def _tool_call(tc: Any, where: str) -> dict:
    fn = tc.get("function") if isinstance(tc, Mapping) else None
    if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise ValueError(f"{where}: expected {{'type': 'function', 'function': {{'name': str, "
                         f"'arguments': str}}}}, got {tc!r:.120}")
    args = fn.get("arguments", "{}")
    if isinstance(args, str):
        try:
            json.loads(args or "{}")
        except ValueError:
            raise ValueError(f"{where}.function.arguments: expected a JSON string, got {args!r:.80}") from None
        args = args or "{}"
    elif isinstance(args, Mapping):
        args = json.dumps(args, ensure_ascii=False)
    else:
        raise ValueError(f"{where}.function.arguments: expected a JSON string, got {type(args).__name__}")
    return {"id": str(tc.get("id") or new_tool_call_id()), "type": "function",
            "function": {"name": fn["name"], "arguments": args}}


def normalize_messages(messages: Any) -> list[dict]:
    """Checks OpenAI chat messages and returns them as plain dicts with string ``content``
    (and, for assistant turns, ``tool_calls`` whose ``arguments`` are JSON strings). Raises
    ``ValueError`` naming ``messages[i].<field>``."""
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)) or not messages:
        raise ValueError(f"messages: expected a non-empty list of messages, got {messages!r:.80}")
    out = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, Mapping):
            raise ValueError(f"{where}: expected an object with 'role' and 'content', got {type(m).__name__}")
        role = m.get("role")
        if role not in ROLES:
            raise ValueError(f"{where}.role: expected one of {', '.join(ROLES)}, got {role!r}")
        msg = {"role": role, "content": _text(m.get("content"), f"{where}.content")}
        if role == "assistant" and m.get("tool_calls"):
            if not isinstance(m["tool_calls"], list):
                raise ValueError(f"{where}.tool_calls: expected a list, got {type(m['tool_calls']).__name__}")
            msg["tool_calls"] = [_tool_call(tc, f"{where}.tool_calls[{j}]")
                                 for j, tc in enumerate(m["tool_calls"])]
        if role == "tool":
            if not isinstance(m.get("tool_call_id"), str):
                raise ValueError(f"{where}.tool_call_id: expected the id of the call this answers, "
                                 f"got {m.get('tool_call_id')!r}")
            msg["tool_call_id"] = m["tool_call_id"]
        if role in ("user", "system") and m.get("content") is None:
            raise ValueError(f"{where}.content: expected text for a {role} message, got None")
        out.append(msg)
    return out


def normalize_tools(tools: Any) -> list[dict] | None:
    """Checks OpenAI function tools ``[{"type": "function", "function": {"name", "description"?,
    "parameters"?}}]``; None or [] gives None."""
    if tools is None or tools == []:
        return None
    if not isinstance(tools, list):
        raise ValueError(f"tools: expected a list of function tools, got {type(tools).__name__}")
    for i, t in enumerate(tools):
        fn = t.get("function") if isinstance(t, Mapping) else None
        if not (isinstance(t, Mapping) and t.get("type", "function") == "function"
                and isinstance(fn, Mapping) and isinstance(fn.get("name"), str) and fn["name"]):
            raise ValueError(f"tools[{i}]: expected {{'type': 'function', 'function': {{'name': str, "
                             f"'description': str, 'parameters': object}}}}, got {t!r:.120}")
        if "parameters" in fn and not isinstance(fn["parameters"], Mapping):
            raise ValueError(f"tools[{i}].function.parameters: expected a JSON Schema object, "
                             f"got {type(fn['parameters']).__name__}")
    return [dict(t, type="function") for t in tools]


def render_prompt(tokenizer, messages: Any, tools: Any = None, add_generation_prompt: bool = True) -> str:
    """The prompt text for ``messages`` (and ``tools``) through the tokenizer's chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("tokenizer: has no chat_template (train it with longcat.models.tokenizer)")
    return tokenizer.apply_chat_template(normalize_messages(messages), tools=normalize_tools(tools),
                                         add_generation_prompt=add_generation_prompt, tokenize=False)


def chat_stop_token_ids(tokenizer) -> list[int]:
    """Token ids that end an assistant turn besides EOS (``<|im_end|>`` when the vocabulary has it)."""
    tid = tokenizer.convert_tokens_to_ids(CHAT_STOP_TOKEN)
    return [] if tid is None or tid == tokenizer.unk_token_id else [int(tid)]


# -------------------------------------------------------------------------- tool-call parsing
def _parse_call(body: str, make_id: Callable[[], str]) -> dict | None:
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):   # some models write the arguments as a JSON string already
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    return {"id": make_id(), "type": "function",
            "function": {"name": obj["name"], "arguments": json.dumps(args, ensure_ascii=False)}}


Event = Union[str, dict]


class ToolCallParser:
    """Incremental reader of generated text: ``feed(delta)`` and ``finish()`` return events,
    each either content text (str) or a complete OpenAI tool call (dict). Text that may be the
    start of a ``<tool_call>`` tag is held back until it is known not to be. Whitespace next to
    a call is the template's formatting, not content: trailing whitespace of text waits for
    more text and is dropped when a call follows, as is whitespace right after a call (so the
    streamed content equals the one-shot content)."""

    def __init__(self, make_id: Callable[[], str] = new_tool_call_id):
        self.make_id = make_id
        self.buffer = ""
        self.in_call = False
        self.pending_space = ""
        self.after_call = False
        self.calls = 0

    def feed(self, delta: str) -> list[Event]:
        return self._tidy(self._scan(delta))

    def _tidy(self, events: list[Event]) -> list[Event]:
        out: list[Event] = []
        for e in events:
            if isinstance(e, dict):
                self.pending_space, self.after_call = "", True
                self.calls += 1
                out.append(e)
                continue
            if self.after_call:
                e = e.lstrip()
                if not e:
                    continue
                self.after_call = False
            text = self.pending_space + e
            body = text.rstrip()
            self.pending_space = text[len(body):]
            if body:
                out.append(body)
        return out

    def _scan(self, delta: str) -> list[Event]:
        self.buffer += delta
        events: list[Event] = []
        while True:
            if not self.in_call:
                start = self.buffer.find(TOOL_CALL_START)
                if start < 0:
                    keep = _partial_suffix(self.buffer, TOOL_CALL_START)
                    text, self.buffer = self.buffer[:len(self.buffer) - keep], self.buffer[len(self.buffer) - keep:]
                    if text:
                        events.append(text)
                    return events
                if start:
                    events.append(self.buffer[:start])
                self.buffer = self.buffer[start:]
                self.in_call = True
            end = self.buffer.find(TOOL_CALL_END)
            if end < 0:
                return events
            block = self.buffer[:end + len(TOOL_CALL_END)]
            self.buffer = self.buffer[end + len(TOOL_CALL_END):]
            self.in_call = False
            call = _parse_call(block[len(TOOL_CALL_START):-len(TOOL_CALL_END)], self.make_id)
            events.append(call if call is not None else block)

    def finish(self) -> list[Event]:
        """The rest: an unclosed block that parses is a call (generation stopped at the end of
        the turn), anything else is content."""
        rest, self.buffer = self.buffer, ""
        events: list[Event] = [rest] if rest else []
        if self.in_call:
            self.in_call = False
            call = _parse_call(rest[len(TOOL_CALL_START):], self.make_id)
            if call is not None:
                events = [call]
        events = self._tidy(events)
        if self.pending_space and not self.calls:   # plain text keeps its exact ending
            events.append(self.pending_space)
        self.pending_space = ""
        return events


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that is a proper prefix of ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


@dataclass
class ParsedMessage:
    content: str | None
    tool_calls: list[dict] = field(default_factory=list)


def parse_assistant_text(text: str, make_id: Callable[[], str] = new_tool_call_id) -> ParsedMessage:
    """``content`` (None when only tool calls were written) and ``tool_calls`` of generated text."""
    parser = ToolCallParser(make_id)
    events = parser.feed(text) + parser.finish()
    calls = [e for e in events if isinstance(e, dict)]
    content = "".join(e for e in events if isinstance(e, str))
    if calls:
        content = content.strip()
    return ParsedMessage(content or (None if calls else ""), calls)
