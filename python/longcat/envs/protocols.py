"""The two roles that talk to an ``Environment`` besides its tools, as structural protocols
(any object with these methods fits; nothing needs to inherit):

* ``Agent`` -- ``begin(task, observation)`` once after ``Environment.reset``, then
  ``act(observation) -> action`` for every step: ``{"type": "tool_call", "name", "arguments"}``
  (optional ``"id"``, echoed as the tool message's ``tool_call_id``) or
  ``{"type": "message", "content"}``.
* ``UserSimulator`` -- ``first_message`` (the user's opening text) and
  ``reply(agent_message) -> (text, done)``; ``done`` is True only when the user ends the
  conversation (explicit completion or ``###STOP###``).

Implementations: ``agents.GoldAgent`` / ``DoNothingAgent`` / ``RandomAgent`` /
``WriteOnlyAgent`` / ``OpenAIAgent``; ``users.ScriptedUser`` / ``users.LLMUser``.
tests/envs/test_protocols.py runs every implementation through the same contract.
"""
from __future__ import annotations

from typing import Any, Mapping, Protocol, runtime_checkable

__all__ = ["Agent", "UserSimulator"]


@runtime_checkable
class Agent(Protocol):
    def begin(self, task: Mapping[str, Any], observation: Mapping[str, Any]) -> None: ...

    def act(self, observation: Mapping[str, Any]) -> dict: ...


@runtime_checkable
class UserSimulator(Protocol):
    first_message: str

    def reply(self, message: str) -> tuple[str, bool]: ...
