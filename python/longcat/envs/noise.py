"""Noise injection for robust agent training (MISSION.md §4, the report's tau2-Noise/Vita-Noise).

Fourteen types in five families (instruction, user-turn, tool, state, read-consistency), all
deterministic under a seed and scaled by ``intensity`` in [0, 1] (0 = clean, so a curriculum can
raise it as the robustness gap closes). Each one lowers the naive reference agent and leaves the
careful one at full reward (``grounded``; measured by ``longcat envs noise-table``):

Instruction noise (applied to the first user message, never to the task's gold data):
  * ``paraphrase``   -- phrase-level rewording ("I want to" -> "I'd like to");
  * ``ambiguity``    -- a user-known value is replaced by a vague reference and moved to the
                        user's held-back information, so the agent must ask for it (the scripted
                        user reveals it when asked, which keeps the task solvable);
  * ``typos``        -- letter swaps/drops/doublings in ordinary words; protected spans (ids,
                        emails, any value the agent must copy exactly) are never touched;
  * ``irrelevant``   -- off-topic sentences about the user's life, and a decoy: an old value
                        of something the user states ("My old email was ..."), never to be used;
  * ``out_of_order`` -- the sentences of the instruction are shuffled.

State noise (needs the environment's snapshot/restore; ``ToolNoise(..., undo=...)``):
  * ``silent_noop`` -- the first attempt of a WRITE reports success (the real result) but its
                       change is rolled back; only writes the agent can check by re-reading
                       (``verifiable(name)``: a ``get`` tool of the entity is available) are
                       chosen, and a retry executes for real. A careful agent re-reads after a
                       write and repeats it when the change is missing.

Read-consistency noise (READ tools only; ``ToolNoise``):
  * ``inconsistent`` -- the first answer to a read disagrees with the later ones: its id values
                        (fields named ``*_id`` / ``id``) are slightly wrong; asking again gives
                        the truth. A careful agent reads until two answers agree.
  * ``stale``        -- the first answer to a read after a write comes from a cache: the
                        database as it was before that write (needs ``undo``); asking again
                        gives the fresh state. Same recovery: read until two answers agree.

User-turn noise (applied to every later user message, whatever the user simulator):
  * ``user_turns``   -- the user's replies get paraphrases, typos (protected values untouched)
                        and now and then an off-topic sentence (``noisy_user_turn``).

Tool noise (a wrapper around a tool-call function ``call(name, arguments) -> result``):
  * ``transient``  -- the first 1-3 attempts of a call fail with a retryable error (service
                      unavailable / timeout) *without executing* the tool, so the database is
                      untouched and a retry succeeds;
  * ``malformed``  -- the JSON text of a result is wrapped in log noise / trailing garbage (the
                      payload itself stays complete and parseable once extracted);
  * ``truncated``  -- the result text of a READ tool is cut with an explicit marker; calling the
                      same tool again with the same arguments returns the full text (WRITE
                      results are never truncated: re-running a write is not a safe recovery);
  * ``paginated``  -- list results of READ tools come in pages with ``next_cursor``; the caller
                      passes ``cursor`` to get the next page (the wrapper strips it before the
                      real call, so the tool never sees an unknown argument);
  * ``renamed``    -- field names of results switch style (snake_case -> camelCase / PascalCase),
                      consistently for one tool within one environment.

Nothing here ever changes what a tool does to the database, and every noise has a recovery an
agent can find from the observation alone (retry, parse, page, normalise keys); the tests in
tests/envs/test_noise.py check that the gold path with such recovery still reaches full reward.
"""
from __future__ import annotations

import copy
import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

INSTRUCTION_NOISE = ("paraphrase", "ambiguity", "typos", "irrelevant", "out_of_order")
TOOL_NOISE = ("transient", "malformed", "truncated", "paginated", "renamed")
USER_TURN_NOISE = ("user_turns",)
STATE_NOISE = ("silent_noop",)
READ_NOISE = ("inconsistent", "stale")
NOISE_TYPES = INSTRUCTION_NOISE + TOOL_NOISE + USER_TURN_NOISE + STATE_NOISE + READ_NOISE


def stable_seed(*parts: Any) -> int:
    """A 63-bit seed from any printable parts, identical across processes and Python runs
    (unlike ``hash()``, which is salted per process)."""
    h = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little") >> 1


@dataclass
class NoiseConfig:
    """Which noise to inject and how much.

    ``types`` lists noise names from ``NOISE_TYPES`` (default: none); ``intensity`` in [0, 1]
    scales both how often a noise fires and how strong it is; ``seed`` makes it reproducible."""

    types: Sequence[str] = ()
    intensity: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.types, str):
            self.types = (self.types,)
        unknown = [t for t in self.types if t not in NOISE_TYPES]
        if unknown:
            raise ValueError(f"NoiseConfig.types: unknown noise {unknown}; expected names from "
                             f"{list(NOISE_TYPES)}")
        if not isinstance(self.intensity, (int, float)) or not 0.0 <= float(self.intensity) <= 1.0:
            raise ValueError(f"NoiseConfig.intensity: expected a number in [0, 1], got "
                             f"{self.intensity!r}")
        self.intensity = float(self.intensity)
        self.types = tuple(self.types)

    @classmethod
    def all(cls, intensity: float = 0.5, seed: int = 0) -> "NoiseConfig":
        return cls(types=NOISE_TYPES, intensity=intensity, seed=seed)

    @property
    def instruction_types(self) -> tuple[str, ...]:
        return tuple(t for t in self.types if t in INSTRUCTION_NOISE)

    @property
    def tool_types(self) -> tuple[str, ...]:
        return tuple(t for t in self.types if t in TOOL_NOISE)

    @property
    def state_types(self) -> tuple[str, ...]:
        return tuple(t for t in self.types if t in STATE_NOISE)

    @property
    def read_types(self) -> tuple[str, ...]:
        return tuple(t for t in self.types if t in READ_NOISE)

    @property
    def user_turn_types(self) -> tuple[str, ...]:
        return tuple(t for t in self.types if t in USER_TURN_NOISE)


# ----------------------------------------------------------------------------------------------
# Instruction noise
# ----------------------------------------------------------------------------------------------

# Phrase-level rewrites; each left side is matched case-insensitively on word boundaries.
_PARAPHRASES: dict[str, tuple[str, ...]] = {
    "i want to": ("i'd like to", "i need to", "i'm hoping to", "i would like to"),
    "i would like to": ("i want to", "i'd like to", "i need to"),
    "i need to": ("i have to", "i want to", "i must"),
    "please": ("kindly", "if you could", "would you"),
    "can you": ("could you", "would you be able to", "are you able to"),
    "could you": ("can you", "would you", "would you mind helping to"),
    "also": ("additionally", "on top of that", "and"),
    "then": ("after that", "next", "afterwards"),
    "my": ("my own", "my"),
    "change": ("update", "modify", "switch"),
    "cancel": ("call off", "cancel"),
    "check": ("look up", "verify", "see"),
    "tell me": ("let me know", "inform me of", "share"),
    "thanks": ("thank you", "much appreciated", "cheers"),
    "hello": ("hi", "hey there", "good day"),
    "hi": ("hello", "hey", "good day"),
}

_FILLERS = (
    "By the way, I'm in a bit of a hurry today.",
    "Sorry, my connection is a little unstable.",
    "I tried the app earlier but it kept logging me out.",
    "My neighbour recommended your service, actually.",
    "It has been a long week, honestly.",
    "I'm writing from my phone, so bear with me.",
    "Last time I called the line was busy for ages.",
    "I might also have a question about something else later, but not now.",
)

_VAGUE = "the {what} I gave you guys before"  # used for ambiguity when no hint is supplied


def _sentences(text: str) -> list[str]:
    parts = re.split(r"(?<=[.!?])\s+", text.strip())
    return [p for p in parts if p]


def paraphrase(text: str, rng: random.Random, intensity: float) -> str:
    """Rewrites stock phrases; each occurrence changes with probability ``intensity``."""
    keys = sorted(_PARAPHRASES, key=len, reverse=True)
    pattern = re.compile(r"\b(" + "|".join(re.escape(k) for k in keys) + r")\b", re.IGNORECASE)

    def sub(m: re.Match) -> str:
        src = m.group(0)
        if rng.random() >= intensity:
            return src
        out = rng.choice(_PARAPHRASES[src.lower()])
        return out[0].upper() + out[1:] if src[0].isupper() else out

    return pattern.sub(sub, text)


def _protected_mask(text: str, protected: Sequence[str]) -> list[bool]:
    mask = [False] * len(text)
    for p in protected:
        p = str(p)
        if not p:
            continue
        start = 0
        while True:
            i = text.find(p, start)
            if i < 0:
                break
            for j in range(i, i + len(p)):
                mask[j] = True
            start = i + 1
    return mask


def add_typos(text: str, rng: random.Random, intensity: float,
              protected: Sequence[str] = ()) -> str:
    """Letter swaps, drops and doublings in words of >= 4 letters, never inside ``protected``
    spans (and never in a token holding a digit, '@' or '_': those are values to copy)."""
    mask = _protected_mask(text, protected)
    out: list[str] = []
    pos = 0
    for m in re.finditer(r"\S+", text):
        out.append(text[pos:m.start()])
        word = m.group(0)
        pos = m.end()
        touchable = (len(word) >= 4 and word.isalpha() and not any(mask[m.start():m.end()]))
        if not touchable or rng.random() >= 0.35 * intensity:
            out.append(word)
            continue
        i = rng.randrange(1, len(word) - 1)
        op = rng.randrange(3)
        if op == 0:
            word = word[:i] + word[i + 1] + word[i] + word[i + 2:]
        elif op == 1:
            word = word[:i] + word[i + 1:]
        else:
            word = word[:i] + word[i] + word[i:]
        out.append(word)
    out.append(text[pos:])
    return "".join(out)


def add_irrelevant(text: str, rng: random.Random, intensity: float,
                   extra: Sequence[str] = ()) -> str:
    """Inserts 1-3 off-topic sentences (from ``extra``, e.g. persona facts, and stock fillers)."""
    pool = list(extra) + list(_FILLERS)
    n = 1 + int(round(2 * intensity))
    sents = _sentences(text)
    for s in rng.sample(pool, min(n, len(pool))):
        sents.insert(rng.randrange(len(sents) + 1), s)
    return " ".join(sents)


def shuffle_order(text: str, rng: random.Random, intensity: float) -> str:
    """Moves sentences out of their natural order (more moves with more intensity); the first
    sentence (the greeting / who I am) stays first half of the time at low intensity."""
    sents = _sentences(text)
    if len(sents) < 2:
        return text
    moves = max(1, int(round(intensity * len(sents))))
    for _ in range(moves):
        i = rng.randrange(len(sents))
        s = sents.pop(i)
        sents.insert(rng.randrange(len(sents) + 1), s)
    return " ".join(sents)


def make_ambiguous(text: str, rng: random.Random, intensity: float,
                   candidates: Mapping[str, tuple[str, str]]) -> tuple[str, dict[str, str]]:
    """Replaces explicit user-known values by vague references.

    ``candidates`` maps a parameter name to ``(value, vague_phrase)``; each candidate whose value
    occurs in the text is replaced with probability ``intensity`` (at least one when any occurs).
    Returns the new text and the parameters that became held-back information, which the caller
    adds to the user's hidden info so the scripted user reveals them when asked."""
    present = [k for k, (v, _) in candidates.items() if str(v) and str(v) in text]
    chosen = [k for k in present if rng.random() < intensity]
    if present and not chosen and intensity > 0:
        chosen = [rng.choice(present)]
    moved: dict[str, str] = {}
    for k in chosen:
        value, vague = candidates[k]
        vague = vague or _VAGUE.format(what=k.replace("_", " "))
        text = text.replace(str(value), vague)
        moved[k] = str(value)
    return text, moved


def noisy_instruction(text: str, config: NoiseConfig, *, key: Any = "",
                      protected: Sequence[str] = (),
                      ambiguous: Mapping[str, tuple[str, str]] | None = None,
                      extra_details: Sequence[str] = ()) -> tuple[str, dict[str, str]]:
    """Applies the instruction noise of ``config`` to ``text``.

    ``key`` identifies the task (the same key and seed give the same noise); ``protected`` are
    exact values the agent must copy (never typo'd); ``ambiguous`` see :func:`make_ambiguous`;
    ``extra_details`` are candidate irrelevant sentences (e.g. from the persona). Returns the
    noisy text and the parameters moved to held-back information."""
    rng = random.Random(stable_seed("instruction", config.seed, key))
    moved: dict[str, str] = {}
    if config.intensity <= 0:
        return text, moved
    types = config.instruction_types
    # Ambiguity first so typos cannot hide a value it wants to replace.
    if "ambiguity" in types and ambiguous:
        text, moved = make_ambiguous(text, rng, config.intensity, ambiguous)
    if "paraphrase" in types:
        text = paraphrase(text, rng, config.intensity)
    if "irrelevant" in types:
        text = add_irrelevant(text, rng, config.intensity, extra_details)
        # and a decoy: an old value of something the user states, which they no longer use
        stated = [(k, v) for k, (v, _) in (ambiguous or {}).items() if str(v) and str(v) in text]
        if stated:
            k, v = rng.choice(stated)
            label = k.replace("_id", " id").replace("_", " ").strip()
            sents = _sentences(text)
            sents.insert(rng.randrange(len(sents) + 1),
                         f"My old {label} was {decoy(v)}, I don't use it any more.")
            text = " ".join(sents)
    if "out_of_order" in types:
        text = shuffle_order(text, rng, config.intensity)
    if "typos" in types:
        text = add_typos(text, rng, config.intensity, protected)
    return text, moved


def noisy_user_turn(text: str, config: NoiseConfig, *, key: Any = "", turn: int = 0,
                    protected: Sequence[str] = ()) -> str:
    """User-turn noise on one later user message (turn ``turn`` of the episode ``key``):
    paraphrase, typos outside ``protected`` values, sometimes an off-topic sentence. End tokens
    (``###...###``) are protected so noise never changes whether the user ends the episode."""
    if "user_turns" not in config.types or config.intensity <= 0:
        return text
    rng = random.Random(stable_seed("user-turn", config.seed, key, turn))
    protected = list(protected) + re.findall(r"###[A-Z-]+###", text)
    text = paraphrase(text, rng, config.intensity)
    if rng.random() < 0.5 * config.intensity:
        text = add_irrelevant(text, rng, config.intensity)
    return add_typos(text, rng, config.intensity, protected)


# ----------------------------------------------------------------------------------------------
# Tool noise
# ----------------------------------------------------------------------------------------------

ToolCall = Callable[[str, dict], dict]

TRANSIENT_MESSAGES = (
    "503 Service Unavailable: the backend is temporarily overloaded. No changes were made; "
    "please retry.",
    "Timeout: the request took longer than 30s and was aborted. No changes were made; "
    "please retry.",
    "Connection reset by peer while contacting the service. No changes were made; please retry.",
)
TRUNCATION_MARK = "...[output truncated; call the tool again with the same arguments for the " \
                  "full result]"
CURSOR_ARG = "cursor"


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def _pascal(name: str) -> str:
    return "".join(w[:1].upper() + w[1:] for w in name.split("_"))


def _rename_keys(obj: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(obj, dict):
        return {fn(k) if isinstance(k, str) else k: _rename_keys(v, fn) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rename_keys(v, fn) for v in obj]
    return obj


def normalize_keys(obj: Any) -> Any:
    """Inverse of the ``renamed`` noise for an agent: every key back to snake_case."""
    def snake(k: str) -> str:
        return re.sub(r"(?<!^)(?=[A-Z])", "_", k).lower()
    return _rename_keys(obj, snake)


def extract_json(text: str) -> Any:
    """Recovers the JSON payload from a ``malformed`` result text (what a careful agent does):
    the first balanced top-level JSON object or array in the text."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError):
        pass
    dec = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch in "{[":
            try:
                obj, _ = dec.raw_decode(text[i:])
                return obj
            except json.JSONDecodeError:
                continue
    raise ValueError("no JSON value found in tool output")


def result_text(result: Mapping) -> str:
    """The text of an MCP-style result ``{"content": [{"type": "text", "text": ...}] | str}``."""
    content = result.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(c.get("text", "") for c in content if isinstance(c, Mapping))
    return json.dumps(content, default=str)


def _with_text(result: Mapping, text: str) -> dict:
    out = dict(result)
    content = result.get("content")
    if isinstance(content, list):
        out["content"] = [{"type": "text", "text": text}]
    else:
        out["content"] = text
    return out


def decoy(value: Any) -> Any:
    """A value like ``value`` but different, that never contains it (a wrong id, an old
    email): the last digit or letter is changed."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value + 1
    s = str(value)
    for i in range(len(s) - 1, -1, -1):
        c = s[i]
        if c.isdigit():
            return s[:i] + str((int(c) + 3) % 10) + s[i + 1:]
        if c.isalpha():
            base = "a" if c.islower() else "A"
            return s[:i] + chr((ord(c) - ord(base) + 7) % 26 + ord(base)) + s[i + 1:]
    return s + "0"


def _is_id_key(k: Any) -> bool:
    return isinstance(k, str) and (k == "id" or k.endswith("_id"))


def _perturb_ids(obj: Any) -> tuple[Any, int]:
    """``obj`` with every id value (a ``*_id`` / ``id`` field of a record or of a list of
    records) replaced by a decoy; and how many were changed."""
    if isinstance(obj, list):
        out, n = [], 0
        for x in obj:
            y, k = _perturb_ids(x)
            out.append(y)
            n += k
        return out, n
    if isinstance(obj, dict):
        out, n = {}, 0
        for k, v in obj.items():
            if _is_id_key(k) and isinstance(v, (str, int)) and not isinstance(v, bool):
                out[k], n = decoy(v), n + 1
            elif isinstance(v, (list, dict)):
                out[k], m = _perturb_ids(v)
                n += m
            else:
                out[k] = v
        return out, n
    return obj, 0


def _args_key(name: str, arguments: Mapping) -> str:
    return name + json.dumps(arguments, sort_keys=True, default=str)


class ToolNoise:
    """Wraps a tool-call function with the tool noise of ``config``.

    ``call(name, arguments)`` of the wrapped object behaves like the original except for the
    configured noise. ``is_read(name)`` tells which tools are READ (truncation and pagination
    only apply to them); ``env_key`` identifies the environment (with the seed, the noise is a
    pure function of env_key, tool, arguments and attempt number)."""

    def __init__(self, call: ToolCall, config: NoiseConfig, *, env_key: Any = "",
                 is_read: Callable[[str], bool] = lambda name: True, page_size: int = 1,
                 undo: tuple[Callable, Callable] | None = None,
                 verifiable: Callable[[str], bool] = lambda name: False):
        self._call = call
        self.undo = undo                 # (snapshot() -> snap, restore(snap)) for state noise
        self.verifiable = verifiable
        self._noop_done: set[str] = set()
        self.config = config
        self.env_key = env_key
        self.is_read = is_read
        self.page_size = page_size
        self._attempts: dict[str, int] = {}
        self._truncated_once: set[str] = set()
        self._pages: dict[str, list] = {}
        self._inconsistent_done: set[str] = set()
        self._pre_write = None           # the database before the latest write (stale reads)
        self._stale_done: set[str] = set()
        self._writes = 0
        self.injected: dict[str, int] = {t: 0 for t in TOOL_NOISE + STATE_NOISE + READ_NOISE}

    def reset(self) -> None:
        self._attempts.clear()
        self._truncated_once.clear()
        self._pages.clear()
        self._noop_done.clear()
        self._inconsistent_done.clear()
        self._stale_done.clear()
        self._writes = 0
        self._drop_pre_write()
        self.injected = {t: 0 for t in TOOL_NOISE + STATE_NOISE + READ_NOISE}

    def _drop_pre_write(self) -> None:
        if self._pre_write is not None and hasattr(self._pre_write, "close"):
            self._pre_write.close()
        self._pre_write = None

    def _write(self, name: str, arguments) -> dict:
        """Runs a write for real; with ``stale`` on, first keeps the database as it was."""
        if "stale" not in self.config.types or self.undo is None or self.config.intensity <= 0:
            return self._call(name, arguments)
        pre = self.undo[0]()
        result = self._call(name, arguments)
        self._drop_pre_write()
        self._pre_write = pre
        if result.get("isError"):        # nothing changed: nothing to be stale about
            self._drop_pre_write()
            return result
        self._writes += 1
        self._stale_done.clear()         # every read may be served from the cache once more
        return result

    def _read(self, name: str, arguments, akey: str) -> dict:
        """Runs a read; ``stale``: the first one per arguments after a write may answer from
        the database before that write (only counted when that answer differs)."""
        if self._pre_write is None or akey in self._stale_done or \
                not self._fires("stale", name, f"{akey}:stale:{self._writes}"):
            return self._call(name, arguments)
        self._stale_done.add(akey)
        fresh = self._call(name, arguments)
        now = self.undo[0]()
        self.undo[1](self._pre_write)    # back to the cached state (the snapshot is used up)
        old = self._call(name, arguments)
        self._pre_write = self.undo[0]()  # keep the cached state for other reads
        self.undo[1](now)
        if old.get("isError") == fresh.get("isError") and \
                result_text(old) == result_text(fresh):
            return fresh
        self.injected["stale"] += 1
        return old

    def _rng(self, *parts: Any) -> random.Random:
        return random.Random(stable_seed("tool", self.config.seed, self.env_key, *parts))

    def _fires(self, kind: str, name: str, akey: str) -> bool:
        return (kind in self.config.types and self.config.intensity > 0
                and self._rng(kind, akey).random() < self.config.intensity)

    def __call__(self, name: str, arguments: dict) -> dict:
        return self.call(name, arguments)

    def call(self, name: str, arguments: dict) -> dict:
        arguments = dict(arguments) if isinstance(arguments, Mapping) else arguments
        cursor = None
        if isinstance(arguments, dict) and CURSOR_ARG in arguments:
            cursor = arguments.pop(CURSOR_ARG)
        akey = _args_key(name, arguments if isinstance(arguments, dict) else {"_": arguments})

        if cursor is not None:
            pages = self._pages.get(akey)
            if pages is None or not isinstance(cursor, str) or not cursor.startswith("p"):
                return {"content": [{"type": "text", "text": f"Error: unknown cursor {cursor!r}"}],
                        "isError": True}
            try:
                page = int(cursor[1:])
            except ValueError:
                page = -1
            if not 0 <= page < len(pages):
                return {"content": [{"type": "text", "text": f"Error: unknown cursor {cursor!r}"}],
                        "isError": True}
            return self._page_result(akey, page)

        # Transient failures happen before the tool runs: nothing is executed.
        if self._fires("transient", name, akey):
            n_fail = 1 + int(self._rng("transient-n", akey).random() * (1 + 2 * self.config.intensity))
            n_fail = min(n_fail, 3)
            done = self._attempts.get(akey, 0)
            if done < n_fail:
                self._attempts[akey] = done + 1
                self.injected["transient"] += 1
                msg = self._rng("transient-msg", akey, done).choice(TRANSIENT_MESSAGES)
                return {"content": [{"type": "text", "text": msg}], "isError": True}

        read = self.is_read(name)
        if not read and self.undo is not None and akey not in self._noop_done and \
                self.verifiable(name) and self._fires("silent_noop", name, akey):
            self._noop_done.add(akey)
            snap = self.undo[0]()
            result = self._call(name, arguments)
            self.undo[1](snap)          # the change is lost; the answer says it happened
            if not result.get("isError"):
                self.injected["silent_noop"] += 1
            return result
        self._noop_done.add(akey)       # only a first attempt is ever lost
        result = self._read(name, arguments, akey) if read else self._write(name, arguments)
        if result.get("isError"):
            return result
        text = result_text(result)
        try:
            payload = json.loads(text)
            is_json = True
        except (json.JSONDecodeError, TypeError):
            payload, is_json = text, False

        if read and is_json and akey not in self._inconsistent_done and \
                self._fires("inconsistent", name, akey + ":i"):
            self._inconsistent_done.add(akey)
            wrong, n = _perturb_ids(payload)
            if n:
                payload = wrong
                text = json.dumps(payload, default=str)
                result = _with_text(result, text)
                self.injected["inconsistent"] += 1
        self._inconsistent_done.add(akey)  # only a first answer ever disagrees

        if is_json and self._fires("renamed", name, "rename:" + name):
            style = _camel if self._rng("style", name).random() < 0.5 else _pascal
            payload = _rename_keys(payload, style)
            text = json.dumps(payload, default=str)
            self.injected["renamed"] += 1

        if read and is_json and "paginated" in self.config.tool_types:
            items_key, items = _find_list(payload)
            if items is not None and len(items) > self.page_size and \
                    self._fires("paginated", name, akey):
                pages = [items[i:i + self.page_size] for i in range(0, len(items), self.page_size)]
                self._pages[akey] = [(payload, items_key, p) for p in pages]
                self.injected["paginated"] += 1
                return self._page_result(akey, 0)

        if read and akey not in self._truncated_once and self._fires("truncated", name, akey) \
                and len(text) > 8:
            self._truncated_once.add(akey)
            cut = max(1, int(len(text) * (0.6 - 0.4 * self.config.intensity)))
            self.injected["truncated"] += 1
            return _with_text(result, text[:cut] + TRUNCATION_MARK)

        if is_json and self._fires("malformed", name, akey + ":m"):
            rng = self._rng("malformed-style", akey)
            trace = f"{rng.getrandbits(48):012x}"
            style = rng.randrange(3)
            if style == 0:
                text = f"[INFO trace={trace}] result: {text} <<END>>"
            elif style == 1:
                text = f"{text}\n\n-- debug: latency=42ms trace={trace} --"
            else:
                text = f"OK {trace}\n{text},"
            self.injected["malformed"] += 1
        return _with_text(result, text)

    def _page_result(self, akey: str, page: int) -> dict:
        payload, items_key, items = self._pages[akey][page]
        n = len(self._pages[akey])
        body: dict[str, Any]
        if items_key is None:
            body = {"items": items}
        else:
            body = copy.copy(payload)
            body[items_key] = items
        body["page"] = page + 1
        body["total_pages"] = n
        body["next_cursor"] = f"p{page + 1}" if page + 1 < n else None
        return {"content": [{"type": "text", "text": json.dumps(body, default=str)}],
                "isError": False}


def _find_list(payload: Any) -> tuple[str | None, list | None]:
    """The list a paginated result splits: the payload itself, or its one list-valued field."""
    if isinstance(payload, list):
        return None, payload
    if isinstance(payload, dict):
        lists = [k for k, v in payload.items() if isinstance(v, list)]
        if len(lists) == 1:
            return lists[0], payload[lists[0]]
    return None, None


def robust_call(call: ToolCall, name: str, arguments: dict, *, max_retries: int = 6,
                confirm: bool = False) -> tuple[dict, Any]:
    """What a careful agent does with a noisy tool: retry retryable errors, re-call a truncated
    READ, follow pagination cursors, extract JSON from malformed text, normalise key names;
    with ``confirm`` (READ tools only) read again until two answers agree (inconsistent and
    stale reads).

    Returns the last raw result and the recovered payload (None when the final result is a
    genuine tool error)."""
    if confirm:
        last = robust_call(call, name, arguments, max_retries=max_retries)
        for _ in range(max_retries):
            now = robust_call(call, name, arguments, max_retries=max_retries)
            if now[1] == last[1]:
                return now
            last = now
        return last
    result: dict = {}
    for _ in range(max_retries + 1):
        result = call(name, dict(arguments))
        text = result_text(result)
        if result.get("isError"):
            if "retry" in text.lower():
                continue
            return result, None
        if text.endswith(TRUNCATION_MARK):
            continue
        break
    else:
        return result, None
    try:
        payload = normalize_keys(extract_json(text))
    except ValueError:
        return result, text
    if isinstance(payload, dict) and "next_cursor" in payload and "total_pages" in payload:
        items_key = next((k for k, v in payload.items() if isinstance(v, list)), "items")
        items = list(payload[items_key])
        cursor = payload["next_cursor"]
        while cursor:
            page, _ = robust_call(call, name, {**arguments, CURSOR_ARG: cursor},
                                  max_retries=max_retries)
            pl = normalize_keys(extract_json(result_text(page)))
            items.extend(pl[items_key])
            cursor = pl.get("next_cursor")
        payload = {k: v for k, v in payload.items()
                   if k not in ("page", "total_pages", "next_cursor")}
        payload = items if items_key == "items" and len(payload) == 1 else {**payload,
                                                                             items_key: items}
    return result, payload
