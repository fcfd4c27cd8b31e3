"""Trajectories to model inputs, shared by SFT and evaluation so both see the same prompt.

``prompt_messages(messages, tools, tool_format)`` puts the tools where the model reads them:
``"json"`` passes the OpenAI schemas to the chat template (``# Tools`` block, one JSON object a
tool, ~100 tokens each); ``"compact"`` writes one line a tool into the system message
(``name(required, optional?): description``), which keeps a 27-tool environment near 600 tokens
instead of 3,000 -- what a small model trained on 2 CPU cores can afford; ``"names"`` keeps only
``name(required, optional?)`` a line (about 350 tokens for 27 tools): the shortest prompt, for
the demo's CPU budget, where attention's cost grows with the square of the conversation.

``encode(tokenizer, messages, tools, tool_format)`` renders the conversation once and returns
token ids plus a mask that is 1 on the tokens of assistant turns (content, tool calls and the
closing ``<|im_end|>``), 0 elsewhere: the SFT loss is taken on those tokens only.

``read_jsonl(path)`` reads a data file; a line that is not a JSON object (corrupt, or cut off by
an interrupted write) raises ``ValueError`` naming the file and the line.
"""
from __future__ import annotations

import json
import os
from typing import Iterator, Mapping, Sequence

from longcat.models.tokenizer import render_chat

__all__ = ["TOOL_FORMATS", "compact_tools", "prompt_messages", "encode", "layout", "assistant_mask", "render",
           "read_jsonl", "check_trajectory"]

TOOL_FORMATS = ("compact", "names", "json")


def compact_tools(tools: Sequence[Mapping], descriptions: bool = True) -> str:
    lines = []
    for t in tools:
        fn = t["function"]
        params = fn.get("parameters", {}) or {}
        req = params.get("required", [])
        names = [p for p in req] + [f"{p}?" for p in params.get("properties", {}) if p not in req]
        desc = (fn.get("description") or "").strip().split(". ")[0].rstrip(".")
        lines.append(f"{fn['name']}({', '.join(names)})" + (f": {desc}" if descriptions else ""))
    return ("# Tools\n" + "\n".join(lines) + "\nCall a tool as <tool_call>{\"name\": ..., \"arguments\": {...}}"
            "</tool_call>.")


def prompt_messages(messages: Sequence[Mapping], tools: Sequence[Mapping] | None,
                    tool_format: str = "compact") -> tuple[list[dict], list[dict] | None]:
    """(messages, tools) to hand to the chat template for ``tool_format``."""
    if tool_format not in TOOL_FORMATS:
        raise ValueError(f"tool_format: expected one of {TOOL_FORMATS}, got {tool_format!r}")
    msgs = [dict(m) for m in messages]
    if tool_format == "json" or not tools:
        return msgs, (list(tools) if tools else None)
    block = compact_tools(tools, descriptions=tool_format == "compact")
    if msgs and msgs[0]["role"] == "system":
        msgs[0]["content"] = (msgs[0].get("content") or "") + "\n\n" + block
    else:
        msgs.insert(0, {"role": "system", "content": block})
    return msgs, None


def render(messages: Sequence[Mapping], tools: Sequence[Mapping] | None, tool_format: str = "compact",
           add_generation_prompt: bool = False) -> str:
    msgs, tl = prompt_messages(messages, tools, tool_format)
    return render_chat(msgs, tl, add_generation_prompt=add_generation_prompt)


def layout(tokenizer, messages: Sequence[Mapping], tools: Sequence[Mapping] | None,
           tool_format: str = "compact") -> dict:
    """The rendered conversation and where its parts are: ``text``, the token ``ids`` and
    their character ``offsets``, and ``spans``: per message after the system one, ``(role,
    start, end)`` of its rendered piece in ``text``, with ``messages`` as rendered."""
    msgs, tl = prompt_messages(messages, tools, tool_format)
    # The template is append-only: the system/tools header, then each turn rendered on its own
    # (rendering every prefix instead would cost O(turns^2)).
    head = 1 if msgs and msgs[0]["role"] == "system" else 0
    parts = [render_chat(msgs[:head], tl) if (head or tl) else render_chat([], None)]
    bos = len(render_chat([], None))
    parts += [render_chat([m], None)[bos:] for m in msgs[head:]]
    text = "".join(parts)
    spans, at = [], len(parts[0])
    for m, piece in zip(msgs[head:], parts[1:]):
        spans.append((m["role"], at, at + len(piece)))
        at += len(piece)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return {"text": text, "ids": list(enc["input_ids"]), "offsets": [tuple(o) for o in enc["offset_mapping"]],
            "spans": spans, "messages": msgs[head:]}


def encode(tokenizer, messages: Sequence[Mapping], tools: Sequence[Mapping] | None,
           tool_format: str = "compact") -> tuple[list[int], list[int]]:
    """(token ids, assistant mask) of a whole conversation."""
    return assistant_mask(layout(tokenizer, messages, tools, tool_format))


def assistant_mask(lay: Mapping) -> tuple[list[int], list[int]]:
    """(token ids, assistant mask) of a ``layout``."""
    opener = len(render_chat([], None, add_generation_prompt=True)) - len(render_chat([], None))
    # an assistant turn's tokens: after its role header, up to <|im_end|> (not the newline)
    spans = [(a + opener, b - 1) for role, a, b in lay["spans"] if role == "assistant"]
    ids, offsets = lay["ids"], lay["offsets"]
    mask = [0] * len(ids)
    j = 0
    for k, (a, b) in enumerate(offsets):
        while j < len(spans) and spans[j][1] <= a:
            j += 1
        if j < len(spans) and a >= spans[j][0] and b <= spans[j][1] and b > a:
            mask[k] = 1
    return list(ids), mask


def check_trajectory(obj, where: str) -> None:
    if not isinstance(obj, dict) or not isinstance(obj.get("messages"), list) or not obj["messages"]:
        raise ValueError(f"{where}: expected an object with a non-empty 'messages' list (OpenAI chat "
                         f"format), got {str(obj)[:80]!r}")
    if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in obj["messages"]):
        raise ValueError(f"{where}: the conversation has no assistant turn to learn from")
    if obj.get("tools") is not None and not isinstance(obj["tools"], list):
        raise ValueError(f"{where}: 'tools' must be a list of OpenAI function tools, got "
                         f"{type(obj['tools']).__name__}")


def read_jsonl(path: str | os.PathLike, check=None) -> Iterator[dict]:
    """Objects of a JSON-lines file; ``check(obj, where)`` validates each (``where`` is
    ``file:line``)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data: no such file {path!r}")
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                cut = "" if line.endswith("\n") else " (the line is cut off: a truncated file?)"
                raise ValueError(f"{path}:{n}: not valid JSON{cut}: {e}") from None
            if check is not None:
                check(obj, f"{path}:{n}")
            yield obj
