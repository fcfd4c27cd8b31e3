"""A pointer head that says which span of the conversation a tool-call argument copies.

A small model trained for a few minutes learns *which* argument a call needs long before it
learns to spell a value seen only in this conversation, and it cannot tell two names of one
message apart by their tokens alone ("I'm Nicole Rivers ... (name: Lisa Gomez)"). Extractive
readers solve that with start / end pointers over the context (BERT on SQuAD); pointer-generator
networks (See et al., 2017) copy that way. ``CopyHead`` is that pointer on top of the model's
final hidden states: the state at the token that opens a string argument (``"name": "``; a
number's: the token of the key's colon) is the query, the states of the user's and the tools'
message tokens are the keys, and two bilinear maps give each source token a start and an end
logit.

* ``value_sites(layout)`` -- the string and number arguments of a rendered conversation's calls
  whose values occur in its earlier user or tool messages, and where;
* ``copy_events(tokenizer, messages, tools, tool_format)`` -- the SFT targets of a conversation:
  per such argument the query token and the tokens where the value's occurrences start and end;
* ``source_regions(text, contents)`` / ``occurrences(text, regions, value)`` -- where the
  messages' contents and a value's occurrences are, shared by training and decoding so both
  point at the same tokens;
* ``CopyHead.save(folder)`` / ``CopyHead.load(folder)`` -- ``copy_head.safetensors`` and
  ``copy_head.json`` beside a checkpoint's weights (the model's own files stay the Hugging Face
  layout).
"""
from __future__ import annotations

import bisect
import json
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

__all__ = ["CopyHead", "copy_events", "value_sites", "source_regions", "source_tokens", "occurrences", "token_at",
           "WEIGHTS", "CONFIG"]

WEIGHTS, CONFIG = "copy_head.safetensors", "copy_head.json"
SOURCE_ROLES = ("user", "tool")


class CopyHead(nn.Module):
    """Start / end logits over source positions for each query: ``forward(queries [n, H], keys
    [L, H]) -> (start [n, L], end [n, L])``."""

    def __init__(self, hidden_size: int, dim: int = 64, dtype=None, device=None):
        super().__init__()
        for name, v in (("hidden_size", hidden_size), ("dim", dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"CopyHead: '{name}' must be an int >= 1, got {v!r}")
        self.hidden_size, self.dim = hidden_size, dim
        self.query = nn.Linear(hidden_size, 2 * dim, bias=False, dtype=dtype, device=device)
        self.key = nn.Linear(hidden_size, 2 * dim, bias=False, dtype=dtype, device=device)
        bound = 1.0 / math.sqrt(hidden_size)
        for lin in (self.query, self.key):
            nn.init.uniform_(lin.weight, -bound, bound)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if queries.dim() != 2 or keys.dim() != 2 or queries.shape[1] != self.hidden_size \
                or keys.shape[1] != self.hidden_size:
            raise ValueError(f"CopyHead: expected queries [n, {self.hidden_size}] and keys [L, {self.hidden_size}], "
                             f"got {list(queries.shape)} and {list(keys.shape)}")
        dtype = self.query.weight.dtype     # the model's states may come in another dtype than the head's
        q = self.query(queries.to(dtype)).float().view(-1, 2, self.dim)
        k = self.key(keys.to(dtype)).float().view(-1, 2, self.dim)
        scale = 1.0 / math.sqrt(self.dim)
        return (q[:, 0] @ k[:, 0].T) * scale, (q[:, 1] @ k[:, 1].T) * scale

    def save(self, folder: str | os.PathLike) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        save_file({k: v.detach().float().contiguous().cpu() for k, v in self.state_dict().items()}, folder / WEIGHTS)
        (folder / CONFIG).write_text(json.dumps({"hidden_size": self.hidden_size, "dim": self.dim}))

    @classmethod
    def load(cls, folder: str | os.PathLike, hidden_size: int | None = None, dtype=None,
             device=None) -> "CopyHead | None":
        """The head saved in ``folder``; None when it has none. ``hidden_size``, when given,
        must match the head's (a head of another model is refused)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / WEIGHTS).is_file():
            return None
        try:
            cfg = json.loads((folder / CONFIG).read_text())
            head = cls(int(cfg["hidden_size"]), int(cfg["dim"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{folder / CONFIG}: expected {{'hidden_size': int, 'dim': int}} beside {WEIGHTS}: "
                             f"{e}") from None
        if hidden_size is not None and head.hidden_size != hidden_size:
            raise ValueError(f"{folder / WEIGHTS}: a copy head of hidden size {head.hidden_size}, but the model's is "
                             f"{hidden_size}")
        head.load_state_dict(load_file(str(folder / WEIGHTS)))
        return head.to(dtype=dtype, device=device)


def source_regions(text: str, contents: Sequence[str], start: int = 0) -> list[tuple[int, int]]:
    """Character spans of ``contents`` found in ``text`` one after another from ``start`` (a
    content not found is skipped)."""
    out, at = [], start
    for c in contents:
        if not c:
            continue
        k = text.find(c, at)
        if k >= 0:
            out.append((k, k + len(c)))
            at = k + len(c)
    return out


def _word_char(ch: str) -> bool:
    return ch.isalnum() or ch in "_@"


def occurrences(text: str, regions: Sequence[tuple[int, int]], value: str) -> list[tuple[int, int]]:
    """Character spans where ``value`` (or its JSON-escaped form, as inside a tool's result)
    occurs in ``regions`` of ``text`` as whole words."""
    forms = {value, json.dumps(value, ensure_ascii=False)[1:-1]}
    out = set()
    for a, b in regions:
        for form in forms:
            if not form:
                continue
            k = text.find(form, a)
            while 0 <= k and k + len(form) <= b:
                end = k + len(form)
                before = text[k - 1] if k > 0 else " "
                after = text[end] if end < len(text) else " "
                inside_a_word = (_word_char(form[0]) and _word_char(before)) or \
                    (_word_char(form[-1]) and _word_char(after))
                if not inside_a_word:
                    out.add((k, end))
                k = text.find(form, k + 1)
    return sorted(out)


def token_at(starts: Sequence[int], char: int) -> int:
    """The index of the token whose characters hold ``char``, given each token's first
    character (sorted, as a tokenizer's offsets)."""
    return max(0, bisect.bisect_right(starts, char) - 1)


def value_sites(lay: Mapping) -> list[dict]:
    """Every string or number argument of the calls of a ``longcat.data.format.layout`` whose
    value occurs in an earlier user or tool message: ``{"message", "key", "value", "query",
    "spans"}`` with the index of the assistant message, the character of ``lay["text"]`` whose
    token is the pointer's query (a string's opening quote, a number's colon) and the character
    spans of the value's occurrences in those messages."""
    text = lay["text"]
    sites: list[dict] = []
    seen: list[str] = []
    base = lay["spans"][0][1] if lay["spans"] else 0
    for n, (m, (role, a, b)) in enumerate(zip(lay["messages"], lay["spans"])):
        if role in SOURCE_ROLES and isinstance(m.get("content"), str):
            seen.append(m["content"])
            continue
        if role != "assistant" or not m.get("tool_calls"):
            continue
        regions = source_regions(text, seen, base)
        cursor = a
        for call in m["tool_calls"]:
            args = call.get("function", {}).get("arguments")
            if isinstance(args, str):
                try:
                    args = json.loads(args)
                except ValueError:
                    continue
            if not isinstance(args, dict):
                continue
            for key, value in args.items():
                number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                if not (isinstance(value, str) and value) and not number:
                    continue
                written = json.dumps(value, ensure_ascii=False)
                needle = json.dumps(key, ensure_ascii=False) + ": " + written
                k = text.find(needle, cursor, b)
                if k < 0:
                    continue
                cursor = k + len(needle)
                spans = occurrences(text, regions, written if number else value)
                if spans:
                    # the query: a string's opening quote; a number's colon (its value has no quote,
                    # and the space before it may share a token with its first digits)
                    at = cursor - len(written) - (2 if number else 0)
                    sites.append({"message": n, "key": key, "value": value, "query": at, "spans": spans})
    return sites


def copy_events(tokenizer, messages: Sequence[Mapping], tools: Sequence[Mapping] | None,
                tool_format: str = "compact") -> tuple[list[int], list[int], list[tuple[int, list[int], list[int]]],
                                                       list[int]]:
    """``(ids, assistant mask, events, sources)`` of a conversation. Each event is ``(query,
    starts, ends)``: the query token of a string or number argument of a call (``value_sites``),
    and the first and last tokens of each occurrence of its value in the user's and tools'
    messages before the call. ``sources``: the tokens of those messages' contents (what a pointer
    chooses among)."""
    from longcat.data.format import assistant_mask, layout

    lay = layout(tokenizer, messages, tools, tool_format)
    ids, mask = assistant_mask(lay)
    starts = [a for a, _ in lay["offsets"]]
    events = [(token_at(starts, site["query"]), [token_at(starts, a) for a, _ in site["spans"]],
               [token_at(starts, b - 1) for _, b in site["spans"]]) for site in value_sites(lay)]
    contents = [m["content"] for m, (role, _, _) in zip(lay["messages"], lay["spans"])
                if role in SOURCE_ROLES and isinstance(m.get("content"), str)]
    regions = source_regions(lay["text"], contents, lay["spans"][0][1] if lay["spans"] else 0)
    return ids, mask, events, source_tokens(starts, regions)


def source_tokens(starts: Sequence[int], regions: Sequence[tuple[int, int]]) -> list[int]:
    """The tokens (by their first characters ``starts``) that hold characters of ``regions``."""
    out: set[int] = set()
    for a, b in regions:
        out.update(range(token_at(starts, a), token_at(starts, b - 1) + 1))
    return sorted(out)
