"""Agentic training data (MISSION.md §6, the report's §2.2): verified multi-turn trajectories in
OpenAI chat format, synthesised from built environments and their tasks.

A reference agent (the task's gold tool calls, played by ``ReferencePolicy``) talks to the
environment's user simulator; the conversation (system + policy, user turns, assistant tool
calls with arguments, tool results, the final answer) is recorded and kept only when the
environment's reward is 1.0. Variants of each task:

* ``grounded``            -- the plain verified path;
* ``tool_decomposition``  -- user-known values are withheld (made vague) and must be fetched by
                             asking, on top of the task's held-back parameters;
* ``env_hidden``          -- an id the user would state (``course id CO-000010``) is hidden in
                             the environment: the user names another field of its record
                             instead (``topic programming``), and the agent fetches the id with
                             a lookup tool whose result holds exactly that record
                             (``env_lookup``);
* ``reasoning``           -- before each call, several candidate tools and a short rationale for
                             the chosen one;
* ``planning``            -- the first turn decomposes the problem into steps, then acts;
* ``text_driven``         -- workflows mined from the domain's policy text (authenticate the user
                             by a stated field first; confirm every write before making it) are
                             added to the path and executed;
* ``noisy``               -- instruction noise and tool noise (failures, cut or garbled results);
                             the agent retries and carries on.

Trajectories are deduplicated (same messages), and split by environment: held-out environments
give only evaluation tasks, never training data.

Outputs (``synthesize(...)``): ``train.jsonl`` (one trajectory per line: ``messages``, ``tools``,
``variant``, ``task_id``, ``env_id``, ``domain``, ``tier``), ``eval_tasks.jsonl`` and
``eval_envs.jsonl`` (the held-out tasks and their environment records), ``summary.json``.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Mapping, Sequence

from longcat.data import envs_adapter as ea

__all__ = ["VARIANTS", "ReferencePolicy", "policy_rules", "env_lookup", "synthesize_env", "synthesize",
           "split_envs", "trajectory_key"]

VARIANTS = ("grounded", "tool_decomposition", "env_hidden", "reasoning", "planning", "text_driven", "noisy")

_CONFIRM = re.compile(r"\bconfirm (?:every|each|all|any) writes?\b", re.I)
_AUTH = re.compile(r"\bauthenticate the \w+ by ([a-z ,]+?)(?:\s+(?:first|before)\b|[.;]|$)", re.I)


def policy_rules(policy: str) -> dict:
    """Workflow rules mined from a domain's policy text: ``confirm_writes`` (the agent confirms
    each write with the user first) and ``auth_fields`` (fields the user is authenticated by,
    e.g. ['email', 'phone']), with the sentences they came from."""
    rules: dict = {"confirm_writes": False, "auth_fields": [], "sentences": []}
    for sent in re.split(r"(?<=[.;])\s+", policy):
        if _CONFIRM.search(sent):
            rules["confirm_writes"] = True
            rules["sentences"].append(sent.strip())
        m = _AUTH.search(sent)
        if m:
            words = re.split(r",|\bor\b|\band\b", m.group(1))
            fields = [w.strip().replace(" ", "_") for w in words if w.strip()]
            rules["auth_fields"] += [f for f in fields if f not in rules["auth_fields"]]
            rules["sentences"].append(sent.strip())
    return rules


def _read(env, name: str, args: Mapping):
    """The parsed JSON result of a read tool on ``env`` (reset to its task), or None on an error."""
    obs = env.step({"type": "tool_call", "name": name, "arguments": dict(args)})[0]
    if obs.get("isError"):
        return None
    try:
        return json.loads(obs["content"])
    except ValueError:
        return None


def env_lookup(record: Mapping, task: Mapping) -> tuple[dict, int, tuple[str, dict]] | None:
    """The ``env_hidden`` form of ``task``: ``(task with an id hidden, index of the first gold
    call that needs the id, the lookup call that fetches it)``, or None when no id qualifies.

    An id qualifies when the instruction states it as ``<label> <value>`` (and nowhere else), a
    read tool of one required parameter gets its record (``get_course(course_id)``), and another
    read tool of one required parameter, given another string field of that record, returns
    exactly that one record (``find_learner_by_email(email)``). The instruction then names that
    field instead of the id, so only the lookup's result holds the id."""
    specs = ea.tool_specs(task["domain"])
    env = ea.make_env(record, max_steps=10_000)
    try:
        reads = sorted(t for t in env.tools if specs[t].mode == "read")
        required = {t: specs[t].parameters_schema.get("required") or [] for t in reads}
        single = {t: r[0] for t, r in required.items() if len(r) == 1}   # tool -> its one required parameter
        instruction = task["instruction"]
        held_back = {str(v) for v in task.get("hidden_info", {}).values()}
        env.reset(task)
        for i, action in enumerate(task["gold_actions"]):
            for key, value in action["arguments"].items():
                phrase = f"{ea.label(key)} {value}"
                if not isinstance(value, str) or value in held_back or instruction.count(value) != 1 \
                        or phrase not in instruction:
                    continue
                getter = next((t for t in reads if single.get(t) == key), None)
                row = _read(env, getter, {key: value}) if getter else None
                if not isinstance(row, dict):
                    continue
                for tool in reads:
                    field = single.get(tool)
                    other = row.get(field) if field not in (None, key) else None
                    if tool == getter or not isinstance(other, str) or not other:
                        continue
                    got = _read(env, tool, {field: other})
                    rows = got if isinstance(got, list) else [got]
                    if len(rows) == 1 and isinstance(rows[0], dict) and rows[0].get(key) == value:
                        known = {k: v for k, v in task.get("known_info", {}).items() if str(v) != value}
                        hidden = dict(task, instruction=instruction.replace(phrase, f"{ea.label(field)} {other}"),
                                      known_info={**known, field: other})
                        return hidden, i, (tool, {field: other})
        return None
    finally:
        env.close()


def _call(name: str, args: Mapping, index: int, content: str | None = None) -> dict:
    return {"role": "assistant", "content": content,
            "tool_calls": [{"id": f"call_{index}", "type": "function",
                            "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False)}}]}


def _say(text: str) -> dict:
    return {"role": "assistant", "content": text}


def _rubric_sentence(r: Mapping) -> str:
    what = re.sub(r"^tell the user (the )?", "", r.get("description", "")).strip() or "value"
    return f"The {what} is {r['info']}."


class ReferencePolicy:
    """The reference agent: the task's gold calls (plus mined workflow steps), asking the user
    for each held-back value right before the first call that needs it, retrying a call whose
    result is a retryable error or cut, then telling the user the requested values. ``variant``
    chooses the extra assistant text (rationales, a plan, policy confirmations)."""

    def __init__(self, task: Mapping, variant: str, tools: Sequence[str], rules: Mapping | None = None,
                 seed: int = 0, max_retries: int = 6, lookup: tuple[int, tuple[str, dict]] | None = None):
        if variant not in VARIANTS:
            raise ValueError(f"variant: expected one of {VARIANTS}, got {variant!r}")
        self.task, self.variant, self.tools = task, variant, list(tools)
        self.specs = ea.tool_specs(task["domain"])
        self.rules = rules or {}
        self.rng = random.Random(f"{seed}:{task['task_id']}:{variant}")
        self.queue = [(a["name"], dict(a["arguments"])) for a in task["gold_actions"]]
        self.prefix = None
        # env_hidden: (index of the first gold call needing the hidden id, the call fetching it)
        self.lookup = lookup if variant == "env_hidden" else None
        if self.lookup and self.lookup[1] not in self.queue[:self.lookup[0]]:   # not fetched by the path already
            self.queue.insert(self.lookup[0], self.lookup[1])
        if variant == "text_driven":
            self.prefix = self._auth_step()
            if self.prefix and any(self.prefix == c for c in self.queue):
                self.prefix = None      # the path authenticates this way already
            if self.prefix:
                self.queue.insert(0, self.prefix)
        self.max_retries = max_retries
        self.retries = 0
        self.pending: tuple[str, dict] | None = None
        self.asked: set[str] = set()
        self.confirmed: set[int] = set()
        self.done_calls = 0
        self.finished = False
        self.hidden: dict | None = None
        self.planned = False
        self.n = 0

    def _auth_step(self) -> tuple[str, dict] | None:
        known = self.task.get("known_info", {})
        for f in self.rules.get("auth_fields", []):
            if f not in known:
                continue
            for t in self.tools:
                spec = self.specs[t]
                if spec.mode == "read" and spec.parameters_schema.get("required") == [f]:
                    return t, {f: known[f]}
        return None

    def applies(self) -> bool:
        """False when the variant would be the same as ``grounded`` (nothing to add)."""
        if self.variant == "text_driven":
            return bool(self.prefix) or bool(self.rules.get("confirm_writes"))
        if self.variant == "env_hidden":
            return bool(self.lookup)
        return True

    def _describe(self, name: str) -> str:
        d = (self.specs[name].description or "").strip().split(". ")[0].rstrip(".")
        return d or name.replace("_", " ")

    def _content(self, name: str) -> str | None:
        if self.variant == "reasoning":
            mode = self.specs[name].mode
            others = [t for t in self.tools if t != name and self.specs[t].mode == mode]
            cands = self.rng.sample(others, min(2, len(others))) + [name]
            self.rng.shuffle(cands)
            return f"Options: {', '.join(cands)}. I choose {name}: {self._describe(name)}."

        if self.variant == "planning" and not self.planned:
            self.planned = True
            steps = []
            for k, (n_, a) in enumerate(self.queue, 1):
                steps.append(f"{k}. {n_.replace('_', ' ')}")
            if self.task.get("rubrics"):
                steps.append(f"{len(steps) + 1}. tell the user the requested values")
            return "Plan: " + "; ".join(steps) + f". First: {name}."
        if self.variant == "text_driven" and self.prefix and self.done_calls == 0 and (name, ) == self.prefix[:1]:
            f = next(iter(self.prefix[1]))
            return f"Per policy, I first authenticate you by {ea.label(f)}."
        return None

    def __call__(self, messages: list[dict], state: Mapping) -> dict:
        self.n += 1
        if self.hidden is None:
            self.hidden = {k: str(v) for k, v in ea.hidden_values(state["env"]).items()}
        last = state["last"]
        if self.pending is not None and last.get("role") == "tool":
            if ea.is_retryable(last) and self.retries < self.max_retries:
                self.retries += 1
                return _call(*self.pending, self.n)
            self.retries = 0
            self.pending = None
        if self.queue:
            name, args = self.queue[0]
            values = {str(v) for v in args.values()}
            need = [k for k, v in self.hidden.items() if k not in self.asked and v in values]
            if need:
                self.asked.update(need)
                what = " and your ".join(ea.label(k) for k in need)
                return _say(f"To {name.replace('_', ' ')}, I need your {what}. Could you tell me your {what}?")
            idx = len(self.task["gold_actions"]) - len(self.queue) + (1 if self.prefix else 0)
            if (self.variant == "text_driven" and self.rules.get("confirm_writes")
                    and self.specs[name].mode == "write" and idx not in self.confirmed):
                self.confirmed.add(idx)
                shown = ", ".join(f"{ea.label(k)} {v}" for k, v in args.items())
                return _say(f"Our policy is to confirm every change first: I will {name.replace('_', ' ')}"
                            f"{' (' + shown + ')' if shown else ''}. Shall I go ahead?")
            content = self._content(name)
            self.queue.pop(0)
            self.pending = (name, args)
            self.done_calls += 1
            return _call(name, args, self.n, content)
        self.finished = True
        rubrics = self.task.get("rubrics", [])
        if rubrics:
            return _say("Done. " + " ".join(_rubric_sentence(r) for r in rubrics))
        return _say("Everything you asked for is done.")


def trajectory_key(messages: Sequence[Mapping]) -> str:
    """Identity of a trajectory for deduplication: roles, texts and calls (not call ids)."""
    parts = []
    for m in messages:
        calls = [(c["function"]["name"], c["function"]["arguments"]) for c in m.get("tool_calls") or []]
        parts.append([m["role"], m.get("content") or "", calls])
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def split_envs(env_ids: Sequence[str], eval_fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """(train, held-out) environment ids: a stable hash of (seed, env id) decides each."""
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction: expected a number in [0, 1), got {eval_fraction!r}")
    train, held = [], []
    for e in sorted(env_ids):
        h = int.from_bytes(hashlib.blake2b(f"{seed}:{e}".encode(), digest_size=8).digest(), "little")
        (held if h / 2.0 ** 64 < eval_fraction else train).append(e)
    return train, held


def _noise_for(variant: str, task_id: str, seed: int):
    if variant == "tool_decomposition":
        return ea.noise_config(("ambiguity",), intensity=1.0, seed=seed)
    if variant == "noisy":
        return ea.noise_config(ea.TRAIN_NOISE, intensity=0.6, seed=seed)
    return None


def synthesize_env(record: Mapping, tasks: Sequence[Mapping], variants: Sequence[str] = VARIANTS,
                   seed: int = 0) -> tuple[list[dict], dict]:
    """Verified trajectories of one environment's tasks; returns (trajectories, counts) where
    counts has ``attempted``, ``kept``, ``failed`` per variant and ``skipped`` (variants that
    would add nothing)."""
    rules = policy_rules(ea.domain_policy(record["domain"]))
    env = ea.make_env(record)
    out, counts = [], {"attempted": {}, "kept": {}, "failed": {}, "skipped": 0}
    try:
        for task in tasks:
            hidden = env_lookup(record, task) if "env_hidden" in variants else None
            for variant in variants:
                played, lookup = task, None
                if variant == "env_hidden" and hidden is not None:
                    played, lookup = hidden[0], hidden[1:]
                policy = ReferencePolicy(played, variant, env.tools, rules, seed=seed, lookup=lookup)
                if not policy.applies():
                    counts["skipped"] += 1
                    continue
                counts["attempted"][variant] = counts["attempted"].get(variant, 0) + 1
                env.noise = _noise_for(variant, task["task_id"], seed)
                ep = ea.run_episode(env, played, policy)
                if ep.reward != 1.0:
                    counts["failed"][variant] = counts["failed"].get(variant, 0) + 1
                    continue
                counts["kept"][variant] = counts["kept"].get(variant, 0) + 1
                out.append({"task_id": task["task_id"], "env_id": record["env_id"],
                            "domain": record["domain"], "variant": variant, "tier": ea.tier_of(task),
                            "reward": ep.reward, "messages": ep.messages, "tools": ep.tools})
    finally:
        env.noise = None
        env.close()
    return out, counts


def _work(args):
    records, tasks_by_env, variants, seed = args
    trajs, total = [], {"attempted": {}, "kept": {}, "failed": {}, "skipped": 0}
    for rec in records:
        t, c = synthesize_env(rec, tasks_by_env.get(rec["env_id"], []), variants, seed)
        trajs += t
        _merge(total, c)
    return trajs, total


def _merge(total: dict, c: Mapping) -> None:
    for k in ("attempted", "kept", "failed"):
        for v, n in c[k].items():
            total[k][v] = total[k].get(v, 0) + n
    total["skipped"] += c["skipped"]


def synthesize(envs_dir: str | os.PathLike, out: str | os.PathLike, *, variants: Sequence[str] = VARIANTS,
               eval_fraction: float = 0.1, seed: int = 0, workers: int | None = None,
               max_tasks: int | None = None, progress: bool = True) -> dict:
    """Synthesises verified trajectories from the build folder ``envs_dir`` into ``out`` (see the
    module docstring); returns the summary (also written to ``out/summary.json``)."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ValueError(f"variants: expected a non-empty subset of {VARIANTS}, got {list(variants)}")
    t0 = time.perf_counter()
    envs, tasks = ea.load_build(envs_dir)
    if max_tasks is not None:
        tasks = tasks[:max_tasks]
    train_ids, held_ids = split_envs(sorted({t["env_id"] for t in tasks}), eval_fraction, seed)
    held = set(held_ids)
    by_env: dict[str, list] = {}
    for t in tasks:
        by_env.setdefault(t["env_id"], []).append(t)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "eval_tasks.jsonl.tmp", "w") as ft, open(out / "eval_envs.jsonl.tmp", "w") as fe:
        for e in held_ids:
            fe.write(json.dumps(envs[e], sort_keys=True) + "\n")
            for t in by_env[e]:
                ft.write(json.dumps(t, sort_keys=True) + "\n")
    workers = workers or min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    chunk = 8
    jobs = [([envs[e] for e in train_ids[i:i + chunk]], {e: by_env[e] for e in train_ids[i:i + chunk]},
             tuple(variants), seed) for i in range(0, len(train_ids), chunk)]
    total = {"attempted": {}, "kept": {}, "failed": {}, "skipped": 0}
    seen: set[str] = set()
    duplicates = 0
    kept = 0
    bar = _bar(progress, len(jobs))
    with open(out / "train.jsonl.tmp", "w") as f:
        def take(result):
            nonlocal duplicates, kept
            trajs, counts = result
            _merge(total, counts)
            for tr in trajs:
                key = trajectory_key(tr["messages"])
                if key in seen:
                    duplicates += 1
                    continue
                seen.add(key)
                tr["id"] = key[:16]
                f.write(json.dumps(tr, ensure_ascii=False) + "\n")
                kept += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(kept=kept)

        if workers <= 1:
            for j in jobs:
                take(_work(j))
        else:
            # results are written in job order so the file depends only on the inputs
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(_work, j) for j in jobs]
                for fut in futures:
                    take(fut.result())
    if bar is not None:
        bar.close()
    for name in ("train.jsonl", "eval_tasks.jsonl", "eval_envs.jsonl"):
        os.replace(out / f"{name}.tmp", out / name)
    seconds = time.perf_counter() - t0
    summary = {"envs_dir": str(envs_dir), "seed": seed, "variants": list(variants),
               "train_envs": len(train_ids), "heldout_envs": len(held_ids),
               "train_tasks": sum(len(by_env[e]) for e in train_ids),
               "eval_tasks": sum(len(by_env[e]) for e in held_ids),
               "trajectories": kept, "duplicates": duplicates, **total,
               "seconds": seconds, "trajectories_per_second": kept / seconds if seconds else 0.0,
               "workers": workers}
    with open(out / "summary.json", "w") as fs:
        json.dump(summary, fs, indent=2)
    return summary


def _bar(progress: bool, total: int):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="data synth", unit="chunk")
