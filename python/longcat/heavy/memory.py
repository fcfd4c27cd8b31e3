"""Context memory for multi-turn Heavy Thinking, and candidates that call tools.

``HeavyChat`` keeps the conversation the way the LongCat report's context-memory module does:
the system prompt, the user turns and, for each past turn, only the summary's answer. Every turn
the ``k`` candidates see that history; the summary sees it with the last user message replaced
by the summary prompt, and its answer is appended to the history (candidates' thinking, tool
transcripts and the losing answers are not kept).

With a ``ToolBox`` each candidate runs its own tool loop (generate, call the tools it wrote,
append the results, generate again, up to ``max_tool_turns``), in a private tool session (for an
environment: its own copy of the database). The summary sees each candidate's answer plus its
tool results in compact form (``name(args) -> result``, cut to ``result_chars``).
"""
from __future__ import annotations

import json
from typing import Callable, Mapping, Optional, Protocol, Sequence

from longcat.heavy.backends import SampleBatch, SampleRequest
from longcat.heavy.candidates import Candidate, strip_thinking
from longcat.heavy.decoder import HeavyResult, HeavyThinker


class ToolSession(Protocol):
    def call(self, name: str, arguments: dict) -> str: ...


class ToolBox(Protocol):
    """Tools candidates may call: OpenAI function ``schemas`` and a fresh ``session()`` per
    candidate (candidates must not see each other's side effects)."""

    schemas: list[dict]

    def session(self) -> ToolSession: ...


class FunctionTools:
    """Plain Python functions as tools (stateless): ``{name: fn(**arguments) -> result}``."""

    def __init__(self, functions: Mapping[str, Callable], schemas: Sequence[dict]):
        self.functions = dict(functions)
        self.schemas = list(schemas)

    def session(self) -> "FunctionTools":
        return self

    def call(self, name: str, arguments: dict) -> str:
        fn = self.functions.get(name)
        if fn is None:
            return f"error: unknown tool {name!r}; known: {sorted(self.functions)}"
        try:
            result = fn(**arguments)
        except Exception as e:  # a bad call is an observation, never a crash of the decode
            return f"error: {type(e).__name__}: {e}"
        return result if isinstance(result, str) else json.dumps(result, ensure_ascii=False, default=str)


class EnvTools:
    """The tools of a ``longcat.envs.Environment`` that has been ``reset(task)``. Each session
    starts from the database as it is now and keeps its own snapshot between calls; the
    environment is left as it was (``restore``) once the candidates are done."""

    def __init__(self, env):
        self.env = env
        self.schemas = env.tool_schemas("openai")

    def session(self) -> "_EnvSession":
        return _EnvSession(self.env, self.env.snapshot())


class _EnvSession:
    def __init__(self, env, state):
        self.env, self.state = env, state

    def call(self, name: str, arguments: dict) -> str:
        # The environment's tool path (noise included) without advancing its episode: the K
        # candidates are parallel worlds, not K steps of one episode.
        self.env.restore(self.state)
        res = self.env.tool_call(name, arguments)
        self.state = self.env.snapshot()
        content = res.get("content")
        return "".join(c.get("text", "") for c in content) if isinstance(content, list) else str(content)


def compact_call(name: str, arguments: dict, result: str, result_chars: int) -> str:
    args = json.dumps(arguments, ensure_ascii=False, sort_keys=True, default=str)
    result = " ".join(result.split())
    if len(result) > result_chars:
        result = result[:result_chars] + "..."
    return f"{name}({args}) -> {result}"


def sample_with_tools(thinker: HeavyThinker, conversation: list[dict], tools: ToolBox, max_tool_turns: int = 4,
                      result_chars: int = 200) -> SampleBatch:
    """The ``k`` width candidates of one conversation, each running its own tool loop."""
    from longcat.engine.chat import parse_assistant_text

    if max_tool_turns < 0:
        raise ValueError(f"max_tool_turns: expected an int >= 0, got {max_tool_turns!r}")
    first = thinker.backend.sample(thinker.width_requests([conversation], tools.schemas))[0]
    c = thinker.config
    transcripts = [list(conversation) for _ in first.candidates]
    sessions = [tools.session() for _ in first.candidates]
    compact: list[list[str]] = [[] for _ in first.candidates]
    tokens = [x.num_tokens for x in first.candidates]
    current = list(first.candidates)
    prompt_tokens, failed, errors = first.prompt_tokens, first.num_failed, list(first.errors)
    for turn in range(1, max_tool_turns + 1):
        pending = []
        for i, cand in enumerate(current):
            if not cand.finished:
                continue
            parsed = parse_assistant_text(cand.text)
            if not parsed.tool_calls:
                continue
            transcripts[i].append({"role": "assistant", "content": parsed.content, "tool_calls": parsed.tool_calls})
            for call in parsed.tool_calls:
                name = call["function"]["name"]
                args = json.loads(call["function"]["arguments"])
                result = sessions[i].call(name, args)
                compact[i].append(compact_call(name, args, result, result_chars))
                transcripts[i].append({"role": "tool", "tool_call_id": call["id"], "content": result})
            pending.append(i)
        if not pending:
            break
        seed = lambda i: None if c.seed is None else c.seed + 1000 * turn + i  # noqa: E731
        requests = [SampleRequest(transcripts[i], 1, c.temperature, c.top_p, seed(i), c.max_tokens, c.logprobs,
                                  tools.schemas) for i in pending]
        for i, batch in zip(pending, thinker.backend.sample(requests)):
            prompt_tokens += batch.prompt_tokens
            failed += batch.num_failed
            errors += batch.errors
            current[i] = batch.candidates[0]
            tokens[i] += current[i].num_tokens
    cands = [Candidate(x.text, x.finish_reason, tokens[i], None, None, compact[i], x.error)
             for i, x in enumerate(current)]
    return SampleBatch(cands, prompt_tokens, num_failed=failed, errors=errors)


class HeavyChat:
    """A multi-turn conversation answered by Heavy Thinking; ``messages`` is the context memory
    (system prompt, user turns, summary answers only)."""

    def __init__(self, thinker: HeavyThinker, system: Optional[str] = None, tools: Optional[ToolBox] = None,
                 max_tool_turns: int = 4, result_chars: int = 200):
        self.thinker = thinker
        self.tools = tools
        self.max_tool_turns = max_tool_turns
        self.result_chars = result_chars
        self.messages: list[dict] = [{"role": "system", "content": system}] if system else []
        self.turns: list[HeavyResult] = []

    def send(self, user: str) -> HeavyResult:
        """One user turn: K candidates (with tools if any), summary, answer appended to history."""
        if not isinstance(user, str) or not user.strip():
            raise ValueError(f"user: expected a non-empty message, got {user!r}")
        conversation = self.messages + [{"role": "user", "content": user}]
        batch = None
        if self.tools is not None:
            batch = [sample_with_tools(self.thinker, conversation, self.tools, self.max_tool_turns,
                                       self.result_chars)]
        result = self.thinker.think_batch([conversation], batch)[0]
        self.messages = conversation + [{"role": "assistant", "content": strip_thinking(result.answer_text)}]
        self.turns.append(result)
        return result
