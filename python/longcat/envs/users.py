"""User simulators (``protocols.UserSimulator``): the scripted user and an LLM user.

When a conversation ends (both simulators): only on an explicit completion by the agent (it
states the request is done, or refuses it), on ``###STOP###``, or at the environment's step
limit. An acknowledgement ("Sure, let me look into that for you.") or an intermediate remark
never ends it: the user answers and waits.

* ``ScriptedUser`` -- deterministic, from the task: reveals a held-back value only when the
  agent's message names it, restates what it knows when asked, otherwise tells the agent to go
  ahead.
* ``LLMUser`` -- a model over any OpenAI-compatible endpoint plays the user, following the
  user-simulation rules of tau2-bench (``data/tau2/user_simulator/simulation_guidelines.md``,
  re-stated in ``USER_GUIDELINES``): one message at a time, never invent information, disclose
  it only when it is needed, end with ``###STOP###`` when the request is done.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping

from .tasks import _label

__all__ = ["STOP", "END_TOKENS", "ScriptedUser", "LLMUser", "is_completion", "USER_GUIDELINES"]

STOP = "###STOP###"
END_TOKENS = (STOP, "###TRANSFER###", "###OUT-OF-SCOPE###")

# A statement that the work is finished, or a refusal to do it ...
_FINAL = re.compile(r"\b(done|completed?|all set|taken care of|finished|processed|successfully|"
                    r"resolved|can ?not help|can't help|unable to help|not able to help|"
                    r"can't do that|cannot do that|not allowed|unable to (do|process|complete))\b")
# ... but not a promise about the future ("I'll get that done", "let me get this completed").
_PENDING = re.compile(r"\b(let me|i'll|i will|i am going to|i'm going to|one moment|"
                      r"give me a|before i|once i|shortly)\b")

_GENERIC = {"name", "type", "status", "date", "time", "number", "code", "kind", "amount", "at"}


def is_completion(message: str) -> bool:
    """True when an agent message explicitly ends the work: it says the request is done (or
    refuses it), is not a promise of future work, and asks the user nothing."""
    low = message.lower()
    return bool(_FINAL.search(low)) and not _PENDING.search(low) and "?" not in low


def _words(name: str) -> list[str]:
    """The ways an agent may name parameter ``name`` when it asks for it."""
    base = name.lower()
    forms = {base, base.replace("_", " "), _label(name).lower()}
    if base.endswith("_id"):
        forms.add(base[:-3].replace("_", " ") + " id")
        forms.add(base[:-3].replace("_", " ") + " number")
    parts = [w for w in base.split("_") if w not in ("id",)]
    # "first_name" also answers to "first name", but not to a bare "name" (too generic)
    if len(parts) > 1 and parts[-1] not in _GENERIC:
        forms.add(parts[-1])
    return sorted(f for f in forms if len(f) >= 3)


class ScriptedUser:
    """A deterministic user that answers from the task's profile and held-back information."""

    def __init__(self, task: Mapping, first_message: str, hidden: Mapping[str, Any]):
        self.task = task
        self.first_message = first_message
        self.hidden = dict(hidden)
        self.revealed: set[str] = set()
        self.profile = task.get("user_profile", {})

    def reply(self, message: str) -> tuple[str, bool]:
        """The user's answer to an agent message and whether the user ends the conversation."""
        low = message.lower()
        if STOP.lower() in low:
            return STOP, True
        answers = []
        for k, v in self.hidden.items():
            if any(w in low for w in _words(k)):
                answers.append(f"My {_label(k)} is {v}.")
                self.revealed.add(k)
        known = self.task.get("known_info", {})
        for k, v in known.items():
            if any(w in low for w in _words(k)) and "?" in message:
                answers.append(f"My {_label(k)} is {v}.")
        if ("your name" in low or "who am i speaking" in low) and self.profile.get("name"):
            answers.append(f"I'm {self.profile['name']}.")
        if answers:
            return " ".join(answers), False
        if "?" in message:
            return ("I don't have anything more to add; please go ahead with what I asked.",
                    False)
        if is_completion(message):
            return f"Thanks, that's all I needed. {STOP}", True
        return "Okay, please go ahead.", False


USER_GUIDELINES = """\
You are playing a customer who contacts a customer-service agent. Rules:
- Write only the customer's next message, one message at a time, in plain words; never call tools
  and never write the agent's part.
- Use only the information in your scenario below. Never invent names, ids, numbers, dates or any
  other detail; if the agent asks for something your scenario does not contain, say you don't
  know or don't have it.
- Do not give all your information at once: share a detail when the agent asks for it or when it
  is needed to move on.
- Stay in character and keep your goal; do not accept a different outcome than the one you want,
  and do not agree to anything your scenario does not ask for.
- When everything you wanted is done (or the agent has clearly refused and you accept it), write
  a short closing and then the token ###STOP### on its own. Do not end the conversation while
  the agent is still working or has only acknowledged your request.
- If the agent transfers you to a human, write ###TRANSFER###; if the request is outside what the
  agent can do, write ###OUT-OF-SCOPE###.
"""


def user_scenario(task: Mapping, first_message: str, hidden: Mapping[str, Any]) -> str:
    """The scenario block of the LLM user's system prompt: goal, what it knows up front, what it
    reveals only when asked."""
    prof = task.get("user_profile", {}) or {}
    lines = ["# Your scenario"]
    if prof.get("name"):
        lines.append(f"You are {prof['name']}" + (f" ({prof['style']} style)."
                                                  if prof.get("style") else "."))
    lines.append(f"What you want (you already said this in your first message): {first_message}")
    known = task.get("known_info", {}) or {}
    if known:
        lines.append("You know: " + "; ".join(f"your {_label(k)} is {v}" for k, v in known.items()))
    if hidden:
        lines.append("Reveal only if the agent asks for it: "
                     + "; ".join(f"your {_label(k)} is {v}" for k, v in hidden.items()))
    return "\n".join(lines)


class LLMUser:
    """A user played by a model behind an OpenAI-compatible endpoint (``chat_api``).

    The model sees ``USER_GUIDELINES`` plus the scenario as its system prompt, the agent's
    messages as ``user`` turns and its own earlier messages as ``assistant`` turns. The first
    message is the task's (noisy) instruction, so episodes start alike for every simulator."""

    def __init__(self, task: Mapping, first_message: str, hidden: Mapping[str, Any], *,
                 base_url: str, model: str = "default", temperature: float = 0.0,
                 api_key: str | None = None, max_tokens: int = 512):
        from .chat_api import completions_url

        completions_url(base_url)  # validates the URL now, not at the first turn
        self.task = task
        self.first_message = first_message
        self.hidden = dict(hidden)
        self.base_url, self.model, self.temperature = base_url, model, temperature
        self.api_key, self.max_tokens = api_key, max_tokens
        self.history: list[dict] = [
            {"role": "system", "content": USER_GUIDELINES + "\n" + user_scenario(
                task, first_message, hidden)},
            {"role": "assistant", "content": first_message}]

    @classmethod
    def factory(cls, base_url: str, **kw) -> Callable[[Mapping, str, Mapping], "LLMUser"]:
        """A ``user=`` argument for ``Environment``: builds an LLMUser per episode."""
        from .chat_api import completions_url

        completions_url(base_url)
        return lambda task, first, hidden: cls(task, first, hidden, base_url=base_url, **kw)

    def reply(self, message: str) -> tuple[str, bool]:
        from .chat_api import chat_completion

        self.history.append({"role": "user", "content": message})
        out = chat_completion(self.base_url, self.history, model=self.model,
                              temperature=self.temperature, api_key=self.api_key,
                              max_tokens=self.max_tokens)
        text = (out.get("content") or "").strip()
        self.history.append({"role": "assistant", "content": text})
        return text, any(t in text for t in END_TOKENS)
