"""Schema-constrained decoding of tool calls (like vLLM's guided decoding for ``tool_choice``).

``ToolCallGuide(tokenizer, tools)`` is a logits processor (``SamplingParams.logits_processors``):
called with the tokens generated so far and the next token's logits, it leaves text outside a
``<tool_call>`` block alone and, inside one, allows only tokens that keep the block a prefix of

    <tool_call>\\n{"name": "<a tool of the request>", "arguments": {<keys of that tool's schema>}}\\n</tool_call>

written the way the chat template writes a call (``", "`` and ``": "`` separators). Each key is a
property of the chosen tool's JSON schema, used once; the object closes only when every required
key is there; a value follows its property's schema: an ``enum`` is one of its values, a string a
JSON string, an integer / number digits (no leading zero, at most 16), a boolean ``true`` / ``false``, ``null`` where the type
allows it. What the values are (which id to copy) stays the model's choice, unless the guide has a
``copier`` (``longcat.engine.copying.ContextCopier``, one request's): then each free string value
is the span of the conversation that the copier ranks highest, spelled out token by token, and
each integer / number value (a schema without ``string`` or ``enum``) one of its numbers.

The check runs on characters, so a token that spans several parts (``"}}``) is judged as a whole.
Outside a block the text is the model's, except ``</tool_call>``, which has no block to close there.
With ``required=True`` (OpenAI's ``tool_choice="required"``) the turn must open with
``<tool_call>``. Candidates are tried in the order of their logits: the first ``top`` tokens, then the rest of the
vocabulary only when none of those fits; the allowed ones keep their logits, all others get
-inf. Greedy decoding therefore picks the model's best valid token; sampling draws among the valid
tokens of the first ``top``.
"""
from __future__ import annotations

import json
import weakref
from typing import Mapping, Sequence

import torch

from longcat.models.tokenizer import TOOL_CALL_END, TOOL_CALL_START

__all__ = ["ToolCallGuide", "CallGrammar"]

_DIGITS = "0123456789"
_MAX_DIGITS = 16     # a longer number is a runaway repetition, not a value (int64 has 19 digits)


class CallGrammar:
    """A character automaton for the body of one tool call (the text between ``<tool_call>``
    and ``</tool_call>``). States are tuples, so they can be kept and fed again. ``feed(state,
    text)`` returns the state after ``text`` or None when ``text`` cannot continue a valid body;
    ``complete(state)`` says whether the body may end there."""

    START = ("lit", "\n{\"name\": \"", ("name", ""))

    def __init__(self, tools: Sequence[Mapping]):
        self.schemas: dict[str, dict] = {}
        for t in tools:
            fn = t.get("function", t)
            self.schemas[fn["name"]] = fn.get("parameters") or {}
        if not self.schemas:
            raise ValueError("tools: expected at least one OpenAI function tool to guide calls to, got none")

    # ---- values ------------------------------------------------------------------------------
    @staticmethod
    def _kinds(schema: Mapping) -> set[str]:
        if "enum" in schema:
            return {"enum"}
        kind = schema.get("type")
        kinds = set(kind) if isinstance(kind, list) else {kind} if kind else set()
        return kinds or {"string", "integer", "number", "boolean", "null"}

    def _prop(self, name: str, key: str) -> Mapping:
        return (self.schemas[name].get("properties") or {}).get(key, {})

    def _value_start(self, name: str, used: tuple, key: str, ch: str):
        schema = self._prop(name, key)
        kinds = self._kinds(schema)
        nxt = ("after", name, used)
        if "enum" in kinds:
            options = tuple(json.dumps(v, ensure_ascii=False) for v in schema["enum"])
            return self._feed_char(("options", options, "", nxt), ch)
        if ch == '"' and "string" in kinds:
            return ("string", False, nxt)
        if ch in _DIGITS + "-" and kinds & {"integer", "number"}:
            return ("number", ch, "number" in kinds, nxt)
        words = tuple(w for k, w in (("boolean", "true"), ("boolean", "false"), ("null", "null")) if k in kinds)
        if words:
            return self._feed_char(("options", words, "", nxt), ch)
        return None

    # ---- one character -----------------------------------------------------------------------
    def _feed_char(self, state, ch: str):
        kind = state[0]
        if kind == "lit":
            text, nxt = state[1], state[2]
            if ch != text[0]:
                return None
            return ("lit", text[1:], nxt) if len(text) > 1 else nxt
        if kind == "name":
            part = state[1]
            if ch == '"':
                return ("lit", ", \"arguments\": {", ("open", part, ())) if part in self.schemas else None
            part += ch
            return ("name", part) if any(n.startswith(part) for n in self.schemas) else None
        if kind in ("open", "after"):
            name, used = state[1], state[2]
            if ch == "}":
                required = self.schemas[name].get("required") or []
                return ("lit", "}\n", ("end",)) if all(k in used for k in required) else None
            if kind == "open" and ch == '"':
                return ("key", name, used, "")
            if kind == "after" and ch == ",":   # only when a key is left to write: no dead end
                free = [k for k in (self.schemas[name].get("properties") or {}) if k not in used]
                return ("lit", " \"", ("key", name, used, "")) if free else None
            return None
        if kind == "key":
            name, used, part = state[1], state[2], state[3]
            free = [k for k in (self.schemas[name].get("properties") or {}) if k not in used]
            if ch == '"':
                return ("lit", ": ", ("value", name, used + (part,), part)) if part in free else None
            part += ch
            return ("key", name, used, part) if any(k.startswith(part) for k in free) else None
        if kind == "value":
            return self._value_start(state[1], state[2], state[3], ch)
        if kind == "string":
            escaped, nxt = state[1], state[2]
            if escaped:
                return ("string", False, nxt) if ch in '"\\/bfnrtu' else None
            if ch == "\\":
                return ("string", True, nxt)
            if ch == '"':
                return nxt
            return ("string", False, nxt) if ch >= " " and ch != "\ufffd" else None
        if kind == "number":
            text, real, nxt = state[1], state[2], state[3]
            digits = text.lstrip("-")
            if ch in _DIGITS and digits != "0" and len(digits) < _MAX_DIGITS:   # JSON: no leading zeros
                return ("number", text + ch, real, nxt)
            if ch == "." and real and "." not in text and text[-1] in _DIGITS:
                return ("number", text + ch, real, nxt)
            if text[-1] in _DIGITS:           # the number ends here: the character belongs to what follows
                return self._feed_char(nxt, ch)
            return None
        if kind == "options":
            options, part, nxt = state[1], state[2], state[3]
            if part in options and not any(o.startswith(part + ch) for o in options):
                return self._feed_char(nxt, ch)
            part += ch
            return ("options", options, part, nxt) if any(o.startswith(part) for o in options) else None
        return None                             # "end": nothing may follow inside the block

    def feed(self, state, text: str):
        for ch in text:
            state = self._feed_char(state, ch)
            if state is None:
                return None
        return state

    @staticmethod
    def complete(state) -> bool:
        return state == ("end",)


_PIECES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _token_pieces(tokenizer) -> list:
    """The text of every token id (None for marker and special tokens, which never appear inside
    a call's JSON), decoded once per tokenizer: every guide of that tokenizer shares it."""
    pieces = _PIECES.get(tokenizer)
    if pieces is None:
        special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
        pieces = _PIECES[tokenizer] = [None if i in special else tokenizer.decode([i]) for i in range(len(tokenizer))]
    return pieces


class ToolCallGuide:
    """Logits processor constraining ``<tool_call>`` blocks to ``tools`` (OpenAI function tools);
    see the module docstring. One guide serves any number of requests with the same tools (one
    with a ``copier`` serves the one request the copier was made for)."""

    def __init__(self, tokenizer, tools: Sequence[Mapping], top: int = 256, required: bool = False,
                 copier=None):
        if not isinstance(top, int) or top < 1:
            raise ValueError(f"top: expected an int >= 1, got {top!r}")
        if copier is not None and not callable(getattr(copier, "choose", None)):
            raise TypeError(f"copier: expected None or a longcat.engine.copying.ContextCopier, got {type(copier).__name__}")
        self.copier = copier    # one request's: free string values are copied from its conversation
        self.grammar = CallGrammar(tools)
        self.top = top
        self.required = bool(required)    # OpenAI tool_choice="required": the turn opens with a call
        self.start_id = tokenizer.convert_tokens_to_ids(TOOL_CALL_START)
        self.end_id = tokenizer.convert_tokens_to_ids(TOOL_CALL_END)
        if self.start_id is None or self.end_id is None or self.start_id == tokenizer.unk_token_id:
            raise ValueError(f"tokenizer: has no {TOOL_CALL_START} / {TOOL_CALL_END} tokens to guide")
        self.pieces = _token_pieces(tokenizer)
        self._cache: tuple[tuple, object] | None = None

    def _state(self, generated: Sequence[int]):
        """The grammar state after ``generated``: None outside a call block."""
        ids = list(generated)
        try:
            start = len(ids) - 1 - ids[::-1].index(self.start_id)
        except ValueError:
            return None
        if self.end_id in ids[start:]:
            return None
        body = tuple(ids[start + 1:])
        if self._cache is not None and self._cache[0] == body:
            return self._cache[1]
        state = CallGrammar.START
        for t in body:
            piece = self.pieces[t] if t < len(self.pieces) else None
            state = self.grammar.feed(state, piece) if piece is not None and state is not None else None
        self._cache = (body, state)
        return state

    def _copy_target(self, generated: Sequence[int], state) -> str | None:
        """Inside a string value with a copier: what is left to write of the chosen value and its
        closing quote (None when there is no choice to follow)."""
        ids = list(generated)
        start = len(ids) - 1 - ids[::-1].index(self.start_id)
        body = ids[start + 1:]
        # Walk the body to the token that opened this string.
        g, opened, typed, first = CallGrammar.START, None, "", ""
        for k, t in enumerate(body):
            g, opens, _, part = self._feed_tracking(g, self.pieces[t])
            if opens:
                opened, typed, first = k, part, part   # first: the string's characters in its opening token
            else:
                typed += part
        if opened is None:
            return None
        head = body[:opened + 1]
        value = self.copier.choose(ids[:start + 1] + head, first, self.pieces)
        if value is None or not (value + '"').startswith(typed):
            return None
        return (value + '"')[len(typed):]

    def _number_target(self, generated: Sequence[int], state):
        """With a copier, at an integer / number value (its schema allows neither a string nor
        an enum): ``(what is left to write of the chosen number, with the separator before it)``;
        None when there is no choice to follow. The pointer's query is the token that holds the
        key's colon, as in training (``longcat.models.copy_head.value_sites``)."""
        if state[0] == "lit" and state[1] == " " and state[2][0] == "value":
            name, key, written = state[2][1], state[2][3], ""
        elif state[0] == "value":
            name, key, written = state[1], state[3], ""
        elif state[0] == "number":
            name, key, written = state[3][1], state[3][2][-1], state[1]
        else:
            return None
        kinds = self.grammar._kinds(self.grammar._prop(name, key))
        if kinds & {"string", "enum"} or not kinds & {"integer", "number"}:
            return None
        kind = "number" if "number" in kinds else "integer"
        ids = list(generated)
        start = len(ids) - 1 - ids[::-1].index(self.start_id)
        body = ids[start + 1:]
        text = "".join(self.pieces[t] for t in body)
        colon = text.rfind(":")
        at, query = 0, len(body) - 1
        for k, t in enumerate(body):       # the token that holds the colon
            at += len(self.pieces[t])
            if at > colon:
                query = k
                break
        typed = text[colon + 1:at].lstrip(" ") if at > colon + 1 else ""
        value = self.copier.choose(ids[:start + 1] + body[:query + 1], typed, self.pieces, kind)
        if value is None or not value.startswith(written):
            return None
        return (" " if state[0] == "lit" else "") + value[len(written):]

    def _feed_tracking(self, state, text: str):
        """``(state after text, whether a string value opened in it, whether that one closed
        in it, the characters written inside a string)``; ``text`` must be valid from ``state``."""
        opened, closed, typed = False, False, ""
        for ch in text:
            was_string = state[0] == "string"
            state = self.grammar.feed(state, ch)
            if state[0] == "string" and not was_string:
                opened, closed, typed = True, False, ""
            elif state[0] == "string":
                typed += ch
            elif was_string:
                closed = True
        return state, opened, closed, typed

    def _opens_a_copy(self, state, piece: str) -> bool:
        """With a copier, a token that opens a string value must begin one of its candidates
        (``"+`` would leave no candidate to copy), and one that also closes it must be one."""
        _, opened, closed, typed = self._feed_tracking(state, piece)
        return not opened or self.copier.fits(typed, whole=closed)

    def allowed(self, state, candidates: Sequence[int], target: str | None = None) -> list[int]:
        ok = []
        copying = self.copier is not None and target is None and state[0] != "string"
        number = target is not None and state[0] != "string"   # a copied number must end where it ends
        for t in candidates:
            piece = self.pieces[t] if t < len(self.pieces) else None
            if target is not None and not (piece and (target.startswith(piece) or (
                    piece.startswith(target) and not (number and piece[len(target):len(target) + 1] in
                                                      tuple(_DIGITS + ".eE"))))):
                continue
            if t == self.end_id:
                if CallGrammar.complete(state):
                    ok.append(t)
                continue
            if piece and self.grammar.feed(state, piece) is not None and \
                    (not copying or self._opens_a_copy(state, piece)):
                ok.append(t)
        return ok

    def __call__(self, generated: Sequence[int], logits: torch.Tensor) -> torch.Tensor:
        if self.required and not generated:
            out = torch.full_like(logits, float("-inf"))
            out[self.start_id] = logits[self.start_id]
            return out
        state = self._state(generated)
        if state is None:     # outside a call block: text is free, but there is no block to close
            out = logits.clone()
            out[self.end_id] = float("-inf")
            return out
        target = None
        if self.copier is not None:
            target = self._copy_target(generated, state) if state[0] == "string" else \
                self._number_target(generated, state)
        order = logits.argsort(descending=True).tolist()
        ok = self.allowed(state, order[:self.top], target) or self.allowed(state, order[self.top:], target)
        out = torch.full_like(logits, float("-inf"))
        if ok:
            idx = torch.tensor(ok, device=logits.device)
            out[idx] = logits[idx]
        else:   # no token continues the call (a value the vocabulary cannot spell): leave it unguided
            out = logits
        return out
