"""Hybrid context management for long agent trajectories (report section 4.3.2).

Two rules, checked before each model turn: when the conversation passes ``summarize_at`` tokens,
the model is asked to summarise its tool-call history and the trajectory continues from the
system prompt, the question and that summary (ReSum); when it reaches ``max_turns`` turns,
everything except the system prompt and the question is discarded and the agent starts over
with its remaining budget. ``summarize_at=None`` / ``max_turns=None`` turn a rule off."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable, Optional

SUMMARY_PREFIX = "Summary of the work so far:\n"


@dataclass(frozen=True)
class ContextConfig:
    summarize_at: Optional[int] = None  # tokens
    max_turns: Optional[int] = None     # assistant turns since the last reset

    def __post_init__(self):
        for name in ("summarize_at", "max_turns"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"ContextConfig.{name} must be None or an int >= 1, got {v!r}")


def _head(messages: list[dict]) -> list[dict]:
    """The system prompt (when there is one) and the question: what every reset keeps."""
    if not messages:
        raise ValueError("manage_context: 'messages' is empty; expected at least the question")
    n = 2 if messages[0].get("role") == "system" else 1
    return [dict(m) for m in messages[:n]]


async def manage_context(messages: list[dict], config: ContextConfig, count_tokens: Callable[[list[dict]], int],
                         summarize: Callable[[list[dict]], Awaitable[str]]) -> tuple[list[dict], Optional[str]]:
    """The messages for the next turn and what was done: None, "summarize" or "discard".
    ``count_tokens(messages)`` measures the context as the policy sees it; ``summarize(history)``
    asks the policy for a summary of ``history`` (the messages after the question)."""
    head = _head(messages)
    turns = sum(m.get("role") == "assistant" for m in messages)
    if config.max_turns is not None and turns >= config.max_turns:
        return head, "discard"
    if config.summarize_at is not None and count_tokens(messages) > config.summarize_at:
        history = messages[len(head):]
        if not history:
            return messages, None  # the question alone is too long: nothing to summarise
        summary = await summarize(history)
        return head + [{"role": "user", "content": SUMMARY_PREFIX + summary}], "summarize"
    return messages, None
