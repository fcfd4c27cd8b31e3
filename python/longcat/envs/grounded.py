"""Grounded reference agents: the careful agent and the naive one, for measuring noise.

Both follow the task's plan (its gold actions) but may only use what the conversation gave
them: an argument value is usable once the user said it (or answered it when asked) or a tool
answer showed it; a call with an unusable value is skipped, and the rubric values reported
are the ones the agent read. The two differ only in how they read:

* ``CarefulAgent`` -- reads the user's whole message in any order and ignores values the user
  calls old; asks for any value it still lacks (up to three times); retries retryable errors
  and cut-off reads, follows page cursors, extracts JSON from noisy text, normalises key
  names, reads again until two answers agree (inconsistent / stale reads), re-reads each
  write's record and repeats a write whose change is missing (silent no-op).
* ``NaiveAgent`` -- a literal reader: a value counts only from the first sentence that names
  its label exactly (a misspelt or reworded label, a vague reference or an earlier decoy
  sentence defeat it), a request only when its wording is there verbatim; it acts as it reads
  (a request before the sentence that identifies the user runs before authentication); asks
  once for held-back values and takes only a literal "my <label> is <value>" answer; takes
  every tool answer as plain JSON with the exact field names, the first page, the first
  answer; never retries, never re-reads.

``longcat envs noise-table`` (``noise_table``) measures both per noise type.
"""
from __future__ import annotations

import json
import re
from typing import Any, Mapping

from .noise import CURSOR_ARG, TRUNCATION_MARK, extract_json, normalize_keys
from .tasks import _goal, _label, _person_entity

__all__ = ["CarefulAgent", "NaiveAgent", "DECOY_MARKERS"]

# words that mark a value the user no longer uses (the decoys of ``irrelevant`` noise)
DECOY_MARKERS = ("old", "former", "no longer", "used to")


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def _values(obj: Any, out: set, key: str = "") -> set:
    """(key, value text) pairs of every scalar in a JSON value."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            _values(v, out, str(k))
    elif isinstance(obj, list):
        for v in obj:
            _values(v, out, key)
    elif obj is not None:
        out.add((key, str(obj)))
        if isinstance(obj, float) and obj == int(obj):
            out.add((key, str(int(obj))))
    return out


class _Grounded:
    careful = True

    def __init__(self, max_retries: int = 6):
        self.max_retries = max_retries

    # -- protocol --------------------------------------------------------------------------
    def begin(self, task: Mapping, observation: Mapping) -> None:
        from .spec import load_domain

        self.task = task
        self.domain = load_domain(task["domain"])
        self.tool_names = [t["function"]["name"] for t in observation.get("tools", [])]
        self._gen = self._run()
        next(self._gen)

    def act(self, observation: Mapping) -> dict:
        try:
            return self._gen.send(observation)
        except StopIteration:
            return {"type": "message", "content": "Everything you asked for is done."}

    # -- reading the user --------------------------------------------------------------------
    def _hear(self, text: str) -> None:
        sents = _sentences(text)
        if self.careful:
            sents = [s for s in sents if not any(re.search(rf"\b{m}\b", s.lower())
                                                 for m in DECOY_MARKERS)]
        self.heard += sents

    def _user_has(self, label: str, value: str) -> bool:
        if self.careful:
            return any(value in s for s in self.heard)
        first = next((s for s in self.heard
                      if re.search(rf"\b{re.escape(label.lower())}\b", s.lower())), None)
        return first is not None and value in first

    # -- reading tools -----------------------------------------------------------------------
    def _parse(self, text: str):
        if self.careful:
            try:
                return normalize_keys(extract_json(text))
            except ValueError:
                return None
        try:
            return json.loads(text)
        except (json.JSONDecodeError, TypeError):
            return None

    def _call(self, name: str, args: dict, pages: bool = True):
        """Yields the call (and, careful, its retries and further pages); returns (payload,
        obs)."""
        obs = None
        for attempt in range(self.max_retries + 1):
            obs = yield {"type": "tool_call", "name": name, "arguments": dict(args)}
            text = obs.get("content", "")
            again = (obs.get("isError") and "retry" in text.lower()) or \
                text.endswith(TRUNCATION_MARK)
            if not (self.careful and again):
                break
        if obs.get("isError"):
            return None, obs
        payload = self._parse(obs.get("content", ""))
        if pages and self.careful and isinstance(payload, dict) and "next_cursor" in payload \
                and "total_pages" in payload:
            key = next((k for k, v in payload.items() if isinstance(v, list)), "items")
            items, cursor = list(payload.get(key, [])), payload["next_cursor"]
            while cursor:
                page, o = yield from self._call(name, {**args, CURSOR_ARG: cursor}, False)
                if not isinstance(page, dict):
                    break
                items += page.get(key, [])
                cursor = page.get("next_cursor")
            payload = items if key == "items" else {
                **{k: v for k, v in payload.items()
                   if k not in ("page", "total_pages", "next_cursor")}, key: items}
        return payload, obs

    def _read(self, name: str, args: dict):
        payload, obs = yield from self._call(name, args)
        if self.careful:                 # until two answers agree (errors included)
            for _ in range(4):
                again, obs2 = yield from self._call(name, args)
                same = again == payload and bool(obs2.get("isError")) == bool(obs.get("isError"))
                payload, obs = again, obs2
                if same:
                    break
        return payload, obs

    # -- the episode ---------------------------------------------------------------------------
    def _run(self):
        d, task = self.domain, self.task
        obs = yield None
        self.heard: list[str] = []
        self._hear(obs.get("content", ""))
        seen: set = set()           # (key, value) pairs from tool answers
        latest: dict = {}           # tool name -> its latest payload
        user = {**{k: str(v) for k, v in task.get("known_info", {}).items()},
                **{k: str(v) for k, v in task.get("hidden_info", {}).items()}}
        # values the user must supply: ask for what is missing
        for k, v in user.items():
            asks = 3 if self.careful else (1 if k in task.get("hidden_info", {}) else 0)
            for _ in range(asks):
                if self._user_has(_label(k), v):
                    break
                reply = yield {"type": "message",
                               "content": f"Could you tell me your {_label(k)}?"}
                text = reply.get("content", "")
                if self.careful:
                    self._hear(text)
                elif f"my {_label(k)} is {v}".lower() in text.lower():
                    self.heard.append(f"My {_label(k)} is {v}.")
        plan = [dict(a) for a in task["gold_actions"]]
        if not self.careful:
            plan = self._as_read(plan)

        def usable(pn, v, tool) -> bool:
            if v is None or isinstance(v, bool):
                return True
            p = tool.params.get(pn)
            enum = p is not None and v in (p.schema.get("enum") or ())
            keys = {pn} | ({p.field[1]} if p is not None and p.field else set())
            if enum or any(str(v) == val and (self.careful or k in keys) for k, val in seen):
                return True
            return self._user_has(_label(pn), str(v))

        for a in plan:
            t = d.tools.get(a["name"])
            if t is None or not all(usable(pn, v, t) for pn, v in a["arguments"].items()):
                continue
            if t.mode == "read":
                payload, _ = yield from self._read(a["name"], a["arguments"])
            else:
                payload, _ = yield from self._call(a["name"], a["arguments"])
                if self.careful and payload is not None:
                    payload = yield from self._verify(a, t, payload)
            if payload is not None:
                latest[a["name"]] = payload
                _values(payload, seen)
        told = []
        for r in task.get("rubrics", []):
            got = _values(latest.get(r.get("tool"), None), set())
            if any(val == str(r["info"]) for _, val in got) or (
                    isinstance(r["info"], float) and any(val == f"{r['info']:.2f}"
                                                         for _, val in got)):
                told.append(str(r["info"]))
        refusal = (task.get("refusal") or {}).get("reason")
        yield {"type": "message", "content": "All done."
               + (" Here is what you asked for: " + "; ".join(told) + "." if told else "")
               + (f" One part I cannot do: {refusal}." if refusal else "")}

    def _as_read(self, plan: list) -> list:
        """The naive order: requests it recognises verbatim, in the order the message states
        them; a request stated before the user's identity runs before authentication."""
        d, task = self.domain, self.task
        text = " ".join(self.heard).lower()
        pe = _person_entity(d)
        person = pe.name if pe is not None else None
        writes = [a for a in plan if d.tools[a["name"]].mode == "write"]
        pos = {}
        for a in writes:
            i = text.find(_goal(d.tools[a["name"]], person).lower())
            pos[id(a)] = i
        plan = [a for a in plan if pos.get(id(a), 0) >= 0]       # unrecognised: never done
        auth = task.get("auth")
        if auth and plan:
            ident = [text.find(str(v).lower()) for v in auth.get("identifiers", ())]
            ident = min([i for i in ident if i >= 0], default=len(text))
            first = min([pos[id(a)] for a in plan if id(a) in pos], default=len(text))
            if first < ident:            # acts on a request before reading who the user is
                a0 = plan.pop(0)
                k = next((i for i, a in enumerate(plan) if id(a) in pos), len(plan))
                plan.insert(k + 1, a0)
        return plan

    def _verify(self, action: Mapping, tool, payload):
        """Careful: re-read the written record (a created one by its new id); repeat the write
        while its change is missing (a deleted record: while it is still there)."""
        from .runtime import get_tool_for

        d = self.domain
        kinds = ("create", "update_fields", "set_status", "cancel", "adjust", "delete")
        if tool.kind not in kinds or not tool.entity or tool.entity not in d.entities:
            return payload
        get = get_tool_for(d, self.tool_names, tool.entity)
        pk = d.entities[tool.entity].primary_key
        if get is None:
            return payload
        gkp = d.tools[get].options.get("key_param", pk)
        for _ in range(3):
            key = payload.get(pk) if tool.kind == "create" and isinstance(payload, dict) \
                else action["arguments"].get(tool.options.get("key_param"))
            if key is None:
                return payload
            now, _ = yield from self._read(get, {gkp: key})
            if tool.kind == "delete":
                ok = now is None
            elif isinstance(payload, dict):
                ok = isinstance(now, dict) and all(now[k] == v for k, v in payload.items()
                                                   if k in now)
            else:
                ok = now is not None
            if ok:
                return payload
            again, _ = yield from self._call(action["name"], action["arguments"])
            if again is None:
                return None
            payload = again
        return payload


class CarefulAgent(_Grounded):
    careful = True


class NaiveAgent(_Grounded):
    careful = False
