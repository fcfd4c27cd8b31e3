"""Tool-call arguments copied from the conversation, chosen by the model (``--copy-values``).

A small model that has learned *which* argument a call needs often cannot spell a value of
several tokens that it has seen only in this conversation: it writes a plausible value of its
training set (``jones@example.net`` for the user's ``kelly28@example.org``). Greedy decoding
constrained to spans of the conversation does not fix that, because the first token is chosen
alone (``"email": "Can`` wins over the email's first piece). This module chooses the *whole*
value instead, the way extractive readers score answer spans:

* ``value_spans(texts)`` -- the candidate values: every string of a text that is JSON (a tool's
  result), and every run of 1..``max_words`` words of any other text (the user's messages) that
  does not run on past a sentence's end (surrounding quotes, brackets and commas stripped; a
  trailing ``.``/``!``/``?`` kept, dropped, and one of two dropped).
* ``SpanScorer(model).score(prefix, continuations, end_mask)`` -- the model's log-likelihood of
  each continuation after ``prefix`` plus that of closing it (a token in ``end_mask`` next). The
  prefix is run once into a private paged cache; the candidates then decode in lockstep over
  that shared prefix (each gets its own copy of the prefix's last, partly filled page), so the
  cost is one prefill plus ``max(len(continuation))`` batched decode steps; a continuation that
  is a prefix of another (the spans of one start word) reads its score off the longer one's.
* ``ContextCopier`` -- one request's copier: ``ToolCallGuide(..., copier=...)`` asks it for the
  value of each free string argument (no ``enum``) when the string opens, then allows only the
  tokens that spell the chosen value and close the string.
"""
from __future__ import annotations

import json
import math
import re
from typing import Iterable, Mapping, Sequence

import torch

from longcat.models.paged import PagedBatch

__all__ = ["value_spans", "copy_sources", "SpanScorer", "ContextCopier"]

_STRIP = "\"'`,;:()[]{}<>*"
# what a copied value may be, by the JSON schema type it fills (numbers as JSON writes them)
_KINDS = {"string": None, "integer": re.compile(r"-?(0|[1-9][0-9]{0,15})"),
          "number": re.compile(r"-?(0|[1-9][0-9]{0,15})(\.[0-9]+)?")}
_SENTENCE_END = ".!?"


def _json_strings(value, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for v in value.values():
            _json_strings(v, out)
    elif isinstance(value, list):
        for v in value:
            _json_strings(v, out)


def value_spans(texts: Iterable[str], max_words: int = 12) -> list[str]:
    """The candidate argument values found in ``texts`` (see the module docstring), each once,
    in order of first appearance."""
    if isinstance(max_words, bool) or not isinstance(max_words, int) or max_words < 1:
        raise ValueError(f"max_words: expected an int >= 1, got {max_words!r}")
    seen: dict[str, None] = {}

    def add(s: str) -> None:
        if s and s not in seen:
            seen[s] = None

    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"texts: expected strings, got {type(text).__name__}")
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, (dict, list)):   # a tool's result: its values are whole strings
            leaves: list[str] = []
            _json_strings(parsed, leaves)
            for leaf in leaves:
                add(leaf)
            continue
        words = text.split()
        for i in range(len(words)):
            for j in range(i + 1, min(len(words), i + max_words) + 1):
                span = " ".join(words[i:j]).strip(_STRIP)
                add(span)
                if span.endswith(tuple(_SENTENCE_END)):   # "federal.." ends a title that ends "federal."
                    add(span[:-1].strip(_STRIP))
                add(span.rstrip(_SENTENCE_END).strip(_STRIP))
                if words[j - 1].strip(_STRIP).endswith(tuple(_SENTENCE_END)):
                    break   # a value does not run on past the end of a sentence
    return list(seen)


def copy_sources(messages: Iterable[Mapping]) -> list[str]:
    """The texts a call's values may be copied from: the user's messages, and the tools' results
    that are JSON (an error message, such as ``Error: ... exceeds maxLength``, holds no value)."""
    out = []
    for m in messages:
        content = m.get("content")
        if not isinstance(content, str):
            continue
        if m.get("role") == "user":
            out.append(content)
        elif m.get("role") == "tool":
            try:
                parsed = json.loads(content)
            except ValueError:
                continue
            if isinstance(parsed, (dict, list)):
                out.append(content)
    return out


class SpanScorer:
    """Log-likelihoods of continuations under a ``PagedModel`` (see the module docstring).
    ``page_size`` is the private cache's page; ``max_batch`` the candidates decoded at once."""

    def __init__(self, model, page_size: int = 16, max_batch: int = 64):
        for name, v in (("page_size", page_size), ("max_batch", max_batch)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"SpanScorer: '{name}' must be an int >= 1, got {v!r}")
        self.model = model
        self.page_size = page_size
        self.max_batch = max_batch

    def _forward(self, caches, ids, positions, cu, seq_lens, table, rows, max_q) -> torch.Tensor:
        batch = PagedBatch.from_lists(ids, positions, cu, seq_lens, table, rows, max_q, self.model.device)
        return torch.log_softmax(self.model.forward_paged(batch, caches), dim=-1)

    @torch.inference_mode()
    def score(self, prefix: Sequence[int], continuations: Sequence[Sequence[int]],
              end_mask: torch.Tensor) -> list[float]:
        """``log p(continuation | prefix) + log p(next token in end_mask | prefix, continuation)``
        for each continuation (each at least one token); ``end_mask`` is a bool ``[vocab]``."""
        prefix = [int(t) for t in prefix]
        conts = [[int(t) for t in c] for c in continuations]
        vocab = int(self.model.config.vocab_size)
        if not prefix:
            raise ValueError("prefix: expected at least one token, got none")
        if any(not c for c in conts):
            raise ValueError("continuations: every continuation needs at least one token, got an empty one")
        if any(t < 0 or t >= vocab for t in prefix) or any(t < 0 or t >= vocab for c in conts for t in c):
            raise ValueError(f"prefix / continuations: token ids must lie in [0, {vocab}), got one outside")
        if not isinstance(end_mask, torch.Tensor) or end_mask.dtype != torch.bool or end_mask.shape != (vocab,):
            got = (end_mask.dtype, tuple(end_mask.shape)) if isinstance(end_mask, torch.Tensor) else type(end_mask)
            raise ValueError(f"end_mask: expected a bool tensor of shape ({vocab},), got {got}")
        if not conts:
            return []
        limit = int(getattr(self.model.config, "max_position_embeddings", 0) or 0)
        if limit and len(prefix) + max(len(c) for c in conts) > limit:
            raise ValueError(f"prefix / continuations: {len(prefix)} + {max(len(c) for c in conts)} tokens exceed the "
                             f"model's max_position_embeddings {limit}")
        # A continuation that is a prefix of another (the spans "Of tree" and "Of tree nice")
        # reads its score off that one's decode: only the leaves of their trie run.
        order = sorted(range(len(conts)), key=lambda i: conts[i])
        leaf_of = {}
        for pos in range(len(order) - 1, -1, -1):
            i = order[pos]
            nxt = order[pos + 1] if pos + 1 < len(order) else None
            prefix_of_next = nxt is not None and conts[nxt][:len(conts[i])] == conts[i]
            leaf_of[i] = leaf_of[nxt] if prefix_of_next else i
        leaves = sorted(set(leaf_of.values()))
        cum, ends = self._walk(prefix, [conts[i] for i in leaves], end_mask)
        at = {leaf: k for k, leaf in enumerate(leaves)}
        return [cum[at[leaf_of[i]]][len(c) - 1] + ends[at[leaf_of[i]]][len(c) - 1] for i, c in enumerate(conts)]

    def _walk(self, prefix: list[int], conts: list[list[int]], end_mask: torch.Tensor):
        """Per continuation and token j: the summed log-probability of its tokens 0..j, and the
        log-probability of closing right after token j."""
        ps, L = self.page_size, len(prefix)
        full, r = divmod(L, ps)
        n_prefix = full + (r > 0)
        longest = max(len(c) for c in conts)
        own = math.ceil((r + longest) / ps)      # each candidate's pages past the shared full ones
        batch = min(self.max_batch, len(conts))
        caches = self.model.make_kv_caches(n_prefix + batch * own, ps)
        end_mask = end_mask.to(self.model.device)
        first = self._forward(caches, prefix, range(L), [0, L], [L], [list(range(n_prefix))], [L - 1], L)[0]
        cum = [[x] for x in first[torch.tensor([c[0] for c in conts], device=first.device)].tolist()]
        ends: list[list[float]] = [[] for _ in conts]
        shared = list(range(full))
        for lo in range(0, len(conts), batch):
            group = list(range(lo, min(lo + batch, len(conts))))
            tables = []
            for k in range(len(group)):
                pages = list(range(n_prefix + k * own, n_prefix + (k + 1) * own))
                if r:   # the prefix's partly filled page, copied: each candidate appends to its own
                    for c in caches:
                        c[pages[0]] = c[full]
                tables.append(shared + pages)
            for j in range(max(len(conts[i]) for i in group)):
                live = [k for k, i in enumerate(group) if len(conts[i]) > j]
                n = len(live)
                lp = self._forward(caches, [conts[group[k]][j] for k in live], [L + j] * n, range(n + 1),
                                   [L + j + 1] * n, [tables[k] for k in live], range(n), 1)
                closing = torch.logsumexp(lp[:, end_mask], dim=1).tolist()
                nxt = [conts[group[k]][j + 1] if len(conts[group[k]]) > j + 1 else 0 for k in live]
                picked = lp[torch.arange(n, device=lp.device), torch.tensor(nxt, device=lp.device)].tolist()
                for row, k in enumerate(live):
                    i = group[k]
                    ends[i].append(closing[row])
                    if j + 1 < len(conts[i]):
                        cum[i].append(cum[i][-1] + picked[row])
        return cum, ends


class ContextCopier:
    """One request's copier for ``ToolCallGuide``: ``choose(ids, typed, pieces)`` returns the
    candidate of ``value_spans(sources)``, as written inside a JSON string, that starts with
    ``typed`` (the string's characters already written) and that the model scores highest after
    the token ids ``prompt_ids + ids``; None when no candidate fits. Choices are remembered."""

    def __init__(self, scorer: SpanScorer, tokenizer, prompt_ids: Sequence[int], sources: Iterable[str],
                 max_words: int = 12, head=None):
        self.scorer = scorer
        self.tokenizer = tokenizer
        self.prompt_ids = [int(t) for t in prompt_ids]
        self.sources = sources = list(sources)
        # a trained pointer (longcat.models.copy_head.CopyHead) ranks the spans instead of their
        # likelihood when given
        self.head = head
        self.candidates = value_spans(sources, max_words)
        self._texts = [json.dumps(v, ensure_ascii=False)[1:-1] for v in self.candidates]   # as inside a JSON string
        self._raw = dict(zip(self._texts, self.candidates))
        self._chosen: dict[tuple, str | None] = {}
        self._end_masks: dict[str, torch.Tensor] = {}
        self._layout = None     # the prompt's text and source tokens, for the head (_prompt_layout)

    def end_mask(self, pieces: Sequence[str | None], kind: str = "string") -> torch.Tensor:
        """Tokens that end a value: for a JSON string their text starts with ``"``, for a number
        with ``,`` or ``}``."""
        if kind not in self._end_masks:
            ends = ('"',) if kind == "string" else (",", "}")
            mask = torch.tensor([bool(p) and p.startswith(ends) for p in pieces], dtype=torch.bool)
            vocab = int(self.scorer.model.config.vocab_size)
            if mask.numel() < vocab:   # ids past the tokenizer (padded vocabularies) never close
                mask = torch.cat([mask, torch.zeros(vocab - mask.numel(), dtype=torch.bool)])
            self._end_masks[kind] = mask[:vocab]
        return self._end_masks[kind]

    def fits(self, typed: str, whole: bool = False) -> bool:
        """Whether a string value that starts with ``typed`` (is ``typed``, when ``whole``) can
        still be a candidate; True when there is no candidate at all (nothing to copy from)."""
        if not self._texts:
            return True
        return typed in self._texts if whole else any(t.startswith(typed) for t in self._texts)

    def choose(self, ids: Sequence[int], typed: str, pieces: Sequence[str | None], kind: str = "string") -> str | None:
        """The chosen value (see the class docstring); ``kind`` ``"integer"`` or ``"number"``
        chooses among the candidates that are JSON numbers of that kind instead."""
        if kind not in _KINDS:
            raise ValueError(f"kind: expected one of {sorted(_KINDS)}, got {kind!r}")
        key = (tuple(ids), typed, kind)
        if key in self._chosen:
            return self._chosen[key]
        options, conts = [], []
        for text in self._texts:
            if not text.startswith(typed) or len(text) == len(typed):
                continue
            if kind != "string" and not _KINDS[kind].fullmatch(text):
                continue
            toks = self.tokenizer(text[len(typed):], add_special_tokens=False)["input_ids"]
            if toks:
                options.append(text)
                conts.append(toks)
        best = None
        if options and self.head is not None:
            best = self._point(ids, options, pieces)
        if options and best is None:
            scores = self.scorer.score(self.prompt_ids + list(ids), conts, self.end_mask(pieces, kind))
            # per token (the closing one counted): a sum favours the shortest span, often the
            # key's own word ("email": "email")
            mean = [s / (len(c) + 1) for s, c in zip(scores, conts)]
            best = options[max(range(len(options)), key=mean.__getitem__)]
        self._chosen[key] = best
        return best

    def _prompt_layout(self, pieces: Sequence[str | None]):
        """The prompt's text spelled from its tokens, each token's first character, the source
        messages' character regions and their tokens (the head's keys); made once a request."""
        if self._layout is None:
            from longcat.models.copy_head import source_regions, source_tokens
            from longcat.models.tokenizer import IM_START

            texts, starts, at = [], [], 0
            for t in self.prompt_ids:
                piece = pieces[t] if t < len(pieces) and pieces[t] is not None else \
                    self.tokenizer.convert_ids_to_tokens(t)
                starts.append(at)
                texts.append(piece)
                at += len(piece)
            text = "".join(texts)
            regions = source_regions(text, self.sources, max(text.find(IM_START + "user"), 0))
            self._layout = (text, starts, regions, source_tokens(starts, regions))
        return self._layout

    def _point(self, ids: Sequence[int], options: Sequence[str], pieces: Sequence[str | None]) -> str | None:
        """The option the copy head points at: the best start + end log-probability over the
        option's occurrences in the prompt's user and tool messages (None when no option occurs
        there, e.g. text the token pieces do not spell back)."""
        from longcat.models.copy_head import occurrences, token_at

        text, starts, regions, keys = self._prompt_layout(pieces)
        spots = {}
        for k, option in enumerate(options):
            raw = self._raw[option]
            found = [(token_at(starts, a), token_at(starts, b - 1)) for a, b in occurrences(text, regions, raw)]
            if found:
                spots[k] = found
        if not spots:
            return None
        model = self.scorer.model
        with torch.inference_mode():
            seq = torch.tensor([self.prompt_ids + [int(t) for t in ids]], device=model.device)
            hidden = model.final_hidden(seq)[0]
            start, end = self.head(hidden[-1:], hidden[keys])
        col = {t: c for c, t in enumerate(keys)}
        start, end = torch.log_softmax(start[0], -1).tolist(), torch.log_softmax(end[0], -1).tolist()
        best, best_score = None, -math.inf
        for k, found in spots.items():
            score = max(start[col[a]] + end[col[b]] for a, b in found)
            if score > best_score:
                best, best_score = options[k], score
        return best
