"""The one place this package touches ``longcat.envs``: reading a build folder, making an
``Environment`` (clean or noisy), and running a recorded episode whose conversation comes back
in OpenAI chat format. Everything else in ``longcat.data``, ``longcat.sft``, ``longcat.evaluate``
and ``longcat.demo`` goes through these functions, so a change of the envs API is adapted here.

Today's API used: ``envs.build.build`` / ``read_jsonl``, ``envs.runtime.Environment``
(``reset(task) -> {"messages", "tools"}``, ``step(action) -> (obs, reward, done, info)``,
``env.user.hidden``), ``envs.noise.NoiseConfig`` and ``TRUNCATION_MARK``, ``envs.load_domain``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["load_build", "build_envs", "make_env", "noise_config", "CLEAN", "NOISY_EVAL",
           "TRAIN_NOISE", "Episode", "run_episode", "label", "is_retryable", "domain_policy",
           "tool_specs", "tier_of", "Conversation", "hidden_values"]

# Noise used when evaluating "noisy": instruction and tool noise an agent can recover from by
# reading the observation (paginated results need a cursor protocol; kept out of the default).
NOISY_EVAL = ("paraphrase", "typos", "irrelevant", "transient", "truncated", "malformed")
# Noise of the robustness variant of the training data (the reference agent recovers from it).
TRAIN_NOISE = ("paraphrase", "typos", "irrelevant", "out_of_order", "ambiguity", "transient",
               "truncated", "malformed")
CLEAN: tuple[str, ...] = ()


def build_envs(out: str | os.PathLike, *, count: int, seed: int = 0, domains: Sequence[str] | None = None,
               tasks_per_env: int = 3, workers: int | None = None, progress: bool = True) -> dict:
    """``longcat envs build`` into ``out``; returns its summary."""
    from longcat.envs import domain_names
    from longcat.envs.build import build

    return build(list(domains) if domains else domain_names(), count, seed, out, workers=workers,
                 tasks_per_env=tasks_per_env, progress=progress)


def load_build(folder: str | os.PathLike) -> tuple[dict[str, dict], list[dict]]:
    """(environment records by env_id, tasks) of a build folder; only verified environments."""
    from longcat.envs.build import read_jsonl

    folder = Path(folder)
    for name in ("environments.jsonl", "tasks.jsonl"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"envs: {str(folder)!r} has no {name}; run `longcat envs build "
                                    f"--out {folder}` first")
    envs = {e["env_id"]: e for e in read_jsonl(folder / "environments.jsonl") if e.get("verified")}
    tasks = [t for t in read_jsonl(folder / "tasks.jsonl") if t["env_id"] in envs]
    return envs, tasks


def noise_config(types: Sequence[str], intensity: float = 0.5, seed: int = 0):
    """A ``NoiseConfig`` (None for no noise)."""
    from longcat.envs.noise import NoiseConfig

    return NoiseConfig(types=tuple(types), intensity=intensity, seed=seed) if types else None


def make_env(record: Mapping, noise=None, max_steps: int = 40):
    from longcat.envs.runtime import Environment

    return Environment(record, noise=noise, max_steps=max_steps)


def domain_policy(domain: str) -> str:
    from longcat.envs import load_domain

    return getattr(load_domain(domain), "policy", "") or ""


def tool_specs(domain: str) -> dict:
    """{tool name: spec.Tool} of a domain (mode 'read'/'write', description, params)."""
    from longcat.envs import load_domain

    return load_domain(domain).tools


def is_retryable(observation: Mapping) -> bool:
    """A tool observation the caller should repeat unchanged: a retryable error or a cut result."""
    from longcat.envs.noise import TRUNCATION_MARK

    text = observation.get("content", "")
    return bool((observation.get("isError") and "retry" in text.lower()) or text.endswith(TRUNCATION_MARK))


def label(name: str) -> str:
    """A parameter name as a user reads it ('flight_id' -> 'flight id')."""
    return name.replace("_id", " id").replace("_", " ").strip()


def tier_of(task: Mapping) -> int:
    """The difficulty tier of a task: its number of gold tool calls."""
    return len(task["gold_actions"])


@dataclass
class Episode:
    """A finished episode: OpenAI messages (system, user, assistant with tool_calls, tool), the
    tools offered, reward and its parts, and counts."""
    messages: list[dict]
    tools: list[dict]
    reward: float
    reward_info: dict = field(default_factory=dict)
    tool_calls: list[tuple[str, dict]] = field(default_factory=list)
    agent_messages: list[str] = field(default_factory=list)
    truncated: bool = False
    steps: int = 0


SYSTEM_PROMPTS = ("brief", "full")


def brief_system_prompt(env) -> str:
    """A system prompt of about a hundred tokens: the role, the domain's own policy notes and the
    rules the evaluator enforces (authenticate first, only the user's own records, say when
    done). The environment's full policy document (1,000-1,500 words) would alone fill the
    2,048-token context the tiny and small presets train with (``system="full"`` keeps it); the
    domain's description is left out too: every token of the prompt is paid for at every
    training step, and the tool list already says what the agent can do."""
    domain = env.domain
    notes = (getattr(domain, "policy", "") or "").strip()
    return (f"You are a customer-service agent for the {domain.name.replace('_', ' ')} domain. {notes} "
            f"Authenticate the user with the lookup tools before changing their records, and act only on "
            f"their own records. Ask the user for any detail you need and tell them what they ask for. "
            f"When everything is done, say so without asking a question.").replace("  ", " ")


class Conversation:
    """One running episode in OpenAI chat form. ``messages`` (system, user, ...) and ``tools``
    after construction; ``apply(reply)`` takes the next assistant message (``content`` and
    optional ``tool_calls``): each tool call is executed and answered with a ``tool`` message, a
    text-only turn goes to the user simulator, whose reply becomes the next ``user`` message
    (the closing reply that ends the episode is not appended). ``done`` and ``result()``."""

    def __init__(self, env, task: Mapping, max_turns: int = 30, system: str = "brief"):
        if system not in SYSTEM_PROMPTS:
            raise ValueError(f"system: expected one of {SYSTEM_PROMPTS}, got {system!r}")
        obs = env.reset(task)
        self.env, self.task, self.max_turns = env, task, max_turns
        self.messages = [dict(m) for m in obs["messages"]]
        if system == "brief" and self.messages and self.messages[0]["role"] == "system":
            self.messages[0]["content"] = brief_system_prompt(env)
        self.tools = obs["tools"]
        self.last: Mapping = obs
        self.turns = 0
        self.calls: list[tuple[str, Any]] = []
        self.said: list[str] = []
        self.info: dict = {}
        self.reward = 0.0
        self.done = False

    def apply(self, reply: Mapping) -> bool:
        if self.done:
            raise RuntimeError("Conversation.apply: the episode has ended")
        reply = dict(reply, role="assistant")
        self.messages.append(reply)
        self.turns += 1
        if reply.get("tool_calls"):
            for tc in reply["tool_calls"]:
                fn = tc["function"]
                try:
                    args = json.loads(fn["arguments"]) if isinstance(fn["arguments"], str) else fn["arguments"]
                except ValueError:
                    args = fn["arguments"]
                self.calls.append((fn["name"], args))
                o, self.reward, self.done, self.info = self.env.step(
                    {"type": "tool_call", "name": fn["name"], "arguments": args})
                self.last = o
                self.messages.append({"role": "tool", "tool_call_id": tc["id"], "name": fn["name"],
                                      "content": o.get("content", "")})
                if self.done:
                    break
        else:
            text = reply.get("content") or ""
            self.said.append(text)
            o, self.reward, self.done, self.info = self.env.step({"type": "message", "content": text})
            self.last = o
            if not self.done:
                self.messages.append({"role": "user", "content": o.get("content", "")})
        if not self.done and self.turns >= self.max_turns:
            self.done = True
            self.reward = 0.0
            self.info = {"truncated": True, "reward_info": self.env.evaluate()[1]}
        return self.done

    def result(self) -> Episode:
        return Episode(messages=self.messages, tools=self.tools, reward=float(self.reward) if self.done else 0.0,
                       reward_info=self.info.get("reward_info", {}), tool_calls=self.calls, agent_messages=self.said,
                       truncated=bool(self.info.get("truncated")), steps=int(self.info.get("steps", self.turns)))


def run_episode(env, task: Mapping, policy, max_turns: int = 30) -> Episode:
    """Drives one episode: ``policy(messages, state)`` returns the next assistant message;
    ``state`` has ``env``, ``task``, ``tools`` and ``last`` (the last observation)."""
    conv = Conversation(env, task, max_turns)
    while not conv.done:
        conv.apply(policy(conv.messages, {"env": env, "task": task, "tools": conv.tools, "last": conv.last}))
    return conv.result()


def hidden_values(env) -> dict[str, Any]:
    """The values the user simulator holds back in the running episode (revealed when asked)."""
    user = getattr(env, "user", None)
    return dict(getattr(user, "hidden", {}) or {})
