"""Episodes: the typed record of one conversation, its JSONL log, its replay, and pass^k.

``Environment.episode()`` returns an ``Episode``: the OpenAI chat messages (``system``, ``user``,
``assistant`` with ``tool_calls`` carrying ids, ``tool`` with the matching ``tool_call_id``), the
reward and its parts, and the database hash before and after. ``write_episode`` appends it as one
JSON line; ``read_episodes`` reads such a log back; ``replay_episode`` re-runs the logged tool
calls on a fresh ``Environment`` (same task, same noise) and returns the final database hash,
which equals the logged one (the database changes only through tool calls, and tool noise is a
deterministic function of the seed and the call sequence).

``pass_hat_k`` is tau2-bench's pass^k (``src/tau2/metrics/agent_metrics.py``): for a task run
``n`` times with ``c`` successes, ``C(c, k) / C(n, k)``, the chance that ``k`` runs drawn
without replacement all succeed; ``pass_hat_k_mean`` averages it over tasks.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from math import comb
from typing import Any, Iterable, Mapping, Sequence

__all__ = ["Episode", "write_episode", "read_episodes", "replay_episode", "pass_hat_k",
           "pass_hat_k_mean", "SUCCESS_TOL"]

SUCCESS_TOL = 1e-6   # a run succeeds when |reward - 1| <= this (tau2-bench's rule)


@dataclass
class Episode:
    task_id: str
    env_id: str
    domain: str
    messages: list[dict]
    reward: float | None            # None while the episode is still running
    info: dict = field(default_factory=dict)
    initial_db_hash: str = ""
    final_db_hash: str = ""
    noise: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Episode":
        missing = [k for k in ("task_id", "env_id", "domain", "messages", "reward") if k not in d]
        if missing:
            raise ValueError(f"episode: missing keys {missing}; got keys {sorted(d)}")
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in names})

    def tool_calls(self) -> list[tuple[str, str, dict]]:
        """(tool_call_id, name, arguments) of every tool call, in order."""
        out = []
        for m in self.messages:
            for tc in m.get("tool_calls") or ():
                fn = tc.get("function", {})
                try:
                    args = json.loads(fn.get("arguments") or "{}")
                except ValueError:
                    args = fn.get("arguments")
                out.append((tc.get("id", ""), fn.get("name", ""), args))
        return out


def write_episode(path: str | os.PathLike, episode: Episode) -> None:
    """Appends ``episode`` to the JSONL log at ``path`` (one episode per line)."""
    if not isinstance(episode, Episode):
        raise ValueError(f"episode: expected an Episode, got {type(episode).__name__}")
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(episode.to_dict(), default=str) + "\n")


def read_episodes(path: str | os.PathLike) -> list[Episode]:
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(Episode.from_dict(json.loads(line)))
                except ValueError as e:
                    raise ValueError(f"{path}: line {i}: {e}") from None
    return out


def replay_episode(env, task: Mapping, episode: Episode) -> str:
    """Re-runs the logged tool calls of ``episode`` on ``env`` (an ``Environment`` of the
    episode's environment, built with the same noise) and returns the final database hash."""
    if task.get("task_id", "") != episode.task_id:
        raise ValueError(f"task: the episode is of task {episode.task_id!r}, got "
                         f"{task.get('task_id')!r}")
    env.reset(task)
    if env.db_hash() != episode.initial_db_hash:
        raise ValueError("env: its initial database differs from the episode's "
                         f"({env.db_hash()[:12]} vs {episode.initial_db_hash[:12]})")
    for _, name, args in episode.tool_calls():
        env.tool_call(name, args)
    return env.db_hash()


def pass_hat_k(successes: int, trials: int, k: int) -> float:
    """C(successes, k) / C(trials, k)."""
    for n, v in (("successes", successes), ("trials", trials), ("k", k)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"{n}: expected a non-negative integer, got {v!r}")
    if not 1 <= k <= trials:
        raise ValueError(f"k: expected 1 <= k <= trials ({trials}), got {k}")
    if successes > trials:
        raise ValueError(f"successes: expected <= trials ({trials}), got {successes}")
    return comb(successes, k) / comb(trials, k)


def pass_hat_k_mean(rewards: Mapping[str, Sequence[float]], k: int) -> float:
    """Mean pass^k over tasks; ``rewards`` maps a task id to the rewards of its trials."""
    if not rewards:
        raise ValueError("rewards: expected at least one task")
    vals = []
    for tid, rs in rewards.items():
        rs = list(rs)
        ok = sum(abs(float(r) - 1.0) <= SUCCESS_TOL for r in rs)
        vals.append(pass_hat_k(ok, len(rs), k))
    return sum(vals) / len(vals)


def episodes_by_task(episodes: Iterable[Episode]) -> dict[str, list[float]]:
    """{task id: [reward of each finished trial]} for ``pass_hat_k_mean``."""
    out: dict[str, list[float]] = {}
    for e in episodes:
        if e.reward is not None:
            out.setdefault(e.task_id, []).append(float(e.reward))
    return out
