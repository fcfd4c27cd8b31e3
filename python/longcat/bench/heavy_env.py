"""Heavy Thinking on environment tasks (``longcat bench heavy-env``): an agent checkpoint on
held-out tasks of ``longcat.envs`` environments, scored by the environment's evaluator (reward 1 =
final database and every requested value right), same model, same episodes:

* **single**: the first of the K sampled episodes;
* **self-consistency**: the K episodes grouped by their final database state (``db_hash``); the
  largest group wins (ties: the group seen first) and its first episode is scored;
* **heavy**: a summary episode. Its first user turn is the Heavy Thinking summary prompt
  (``HeavyThinker.summary_prompt`` with the verbose template): the user's request plus each
  candidate episode's final message and its tool calls in compact form (``name(args) -> result``,
  as ``longcat.heavy.memory`` shows tool-using candidates). The summary agent then runs a normal
  episode in a fresh copy of the environment (its own tool calls, the user simulator), greedy, and
  that episode is scored.

Tokens per task count everything generated: the K episodes, plus the summary episode for heavy.
Candidates are full episodes with the user simulator rather than ``HeavyChat``'s single-turn tool
loops, because most tasks need details the user gives only when asked.

The model: ``--model PATH`` (an agent checkpoint from ``longcat demo`` / ``longcat sft``), else a
random-init ``tiny`` checkpoint (a smoke run: expect 0). The tasks: the held-out split of the
``longcat data synth`` folder ``$LONGCAT_HEAVY_ENV_DATA``, else ``<model>/../../data`` when the model
sits in a ``longcat demo`` folder, else a small retail build made and cached under the output folder.
"""
from __future__ import annotations

import math
import os
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Mapping, Optional, Sequence

from longcat.bench.common import BenchResult, finish_plot, machine_info

TASKS, QUICK_TASKS, MAX_TURNS = 12, 2, 8
COLUMNS = ["method", "k", "success", "stderr", "partial", "gen_tokens", "sc_success_at_equal_tokens",
           "delta_vs_sc", "seconds"]


class _Episode:
    """One finished episode: what the bench scores and what the summary is shown."""

    def __init__(self, conv, gen_tokens: int, task: Mapping):
        from longcat.evaluate.runner import partial_credit
        from longcat.heavy.memory import compact_call

        ep = conv.result()
        self.reward = ep.reward
        self.partial = partial_credit(task, ep)
        self.gen_tokens = gen_tokens
        self.db_hash = conv.env.db_hash()
        self.final_message = ep.agent_messages[-1] if ep.agent_messages else ""
        results = [m.get("content", "") for m in ep.messages if m.get("role") == "tool"]
        self.tool_lines = [compact_call(name, args if isinstance(args, dict) else {"raw": args}, str(r), 80)
                           for (name, args), r in zip(ep.tool_calls, results)]


def run_episodes(agent, envs: Mapping, tasks: Sequence[Mapping], jobs: Sequence[tuple[int, Optional[list]]],
                 cfg, seed: int) -> list[_Episode]:
    """Runs one episode per job ``(task index, first messages or None)``, all batched turn by
    turn through ``agent`` (``longcat.evaluate.runner._EngineAgent``); ``first messages`` replace
    the conversation's opening messages (the summary prompt)."""
    from longcat.data import envs_adapter as ea
    from longcat.evaluate.runner import apply_reply

    live = []
    for ti, opening in jobs:
        t = tasks[ti]
        env = ea.make_env(envs[t["env_id"]], max_steps=4 * cfg.max_turns)
        conv = ea.Conversation(env, t, max_turns=cfg.max_turns)
        if opening is not None:
            conv.messages = [dict(m) for m in opening]
        live.append({"conv": conv, "gen": 0, "task": t})
    active = list(live)
    while active:
        for a, (reply, _p, g) in zip(active, agent.replies([a["conv"] for a in active], cfg, seed=seed)):
            a["gen"] += g
            apply_reply(a["conv"], reply)
        active = [a for a in active if not a["conv"].done]
    out = [_Episode(a["conv"], a["gen"], a["task"]) for a in live]
    for a in live:
        a["conv"].env.close()
    return out


def majority_episode(episodes: Sequence[_Episode]) -> _Episode:
    """Self-consistency over final database states: the first episode of the largest group."""
    votes = Counter(e.db_hash for e in episodes)
    best = max(votes, key=lambda h: (votes[h], -next(i for i, e in enumerate(episodes) if e.db_hash == h)))
    return next(e for e in episodes if e.db_hash == best)


def summary_openings(thinker, envs: Mapping, tasks: Sequence[Mapping], cands: Sequence[Sequence[_Episode]],
                     max_turns: int) -> list[list[dict]]:
    """The summary episode's opening messages per task: the conversation's system prompt and
    first user turn, that turn replaced by the summary prompt over the candidates."""
    import random

    from longcat.data import envs_adapter as ea
    from longcat.heavy import Candidate
    from longcat.heavy.candidates import select_for_summary

    c = thinker.config
    openings = []
    for i, (t, eps) in enumerate(zip(tasks, cands)):
        env = ea.make_env(envs[t["env_id"]])
        conv = ea.Conversation(env, t, max_turns=max_turns)
        env.close()
        shown = select_for_summary([Candidate(e.final_message, "stop", e.gen_tokens, tool_results=e.tool_lines)
                                    for e in eps], per_candidate_budget=c.candidate_budget,
                                   total_budget=c.context_budget, count_tokens=thinker.summary_backend.count_tokens,
                                   rng=random.Random(f"{c.seed}/{i}")).shown
        openings.append(thinker.summary_prompt(conv.messages, shown))
    return openings


def _row(method: str, k: int, picked: Sequence[_Episode], tokens: Sequence[int], seconds: float) -> dict:
    n = len(picked)
    acc = sum(e.reward == 1.0 for e in picked) / n
    return {"method": method, "k": k, "success": acc, "stderr": math.sqrt(acc * (1 - acc) / n),
            "partial": sum(e.partial for e in picked) / n, "gen_tokens": sum(tokens) / n, "seconds": seconds}


def engine_agent(model: str):
    """``longcat eval``'s agent on a checkpoint folder, and its token counter."""
    from longcat.evaluate.runner import _EngineAgent

    agent = _EngineAgent(model, None, {"max_model_len": 2048})
    tok = agent.llm.tokenizer
    return agent, lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


def evaluate(agent, envs: Mapping, tasks: Sequence[Mapping], *, count_tokens, ks: Sequence[int] = (1, 2, 4),
             heavy_ks: Sequence[int] = (2, 4), temperature: float = 1.0, max_tokens: int = 128,
             max_turns: int = 8, seed: int = 0, candidate_budget: int = 48, context_budget: int = 256) -> list[dict]:
    """Rows of the table (module docstring) for ``agent`` (``replies(conversations, cfg, seed)``,
    e.g. ``engine_agent(model)``) on ``tasks``; ``count_tokens`` sizes the summary prompt."""
    from longcat.bench.heavy import interp_log
    from longcat.evaluate.runner import EvalConfig
    from longcat.heavy import HeavyThinker

    if not tasks:
        raise ValueError("tasks: expected at least one environment task, got none")
    bad = [k for k in (*ks, *heavy_ks) if isinstance(k, bool) or not isinstance(k, int) or k < 1]
    if bad or not ks or not heavy_ks:
        raise ValueError(f"ks / heavy_ks: expected non-empty lists of ints >= 1, got {list(ks)} / {list(heavy_ks)}")
    kmax = max(max(ks), max(heavy_ks))
    sample_cfg = EvalConfig(conditions=("clean",), samples=kmax, temperature=temperature, max_tokens=max_tokens,
                            max_turns=max_turns)
    t0 = time.perf_counter()
    flat = run_episodes(agent, envs, tasks, [(ti, None) for _ in range(kmax) for ti in range(len(tasks))],
                        sample_cfg, seed)
    sample_s = time.perf_counter() - t0
    cands = [[flat[s * len(tasks) + ti] for s in range(kmax)] for ti in range(len(tasks))]
    rows = [_row("single", 1, [cs[0] for cs in cands], [cs[0].gen_tokens for cs in cands], sample_s / kmax)]
    for k in ks:
        if k > 1:
            rows.append(_row("self-consistency", k, [majority_episode(cs[:k]) for cs in cands],
                             [sum(e.gen_tokens for e in cs[:k]) for cs in cands], sample_s * k / kmax))
            rows.append(_row("pass@k (oracle)", k, [max(cs[:k], key=lambda e: e.reward) for cs in cands],
                             [sum(e.gen_tokens for e in cs[:k]) for cs in cands], sample_s * k / kmax))
    # the summary runs as an environment episode: the thinker only sizes its prompt (count_tokens)
    thinker_backend = SimpleNamespace(count_tokens=count_tokens)
    summary_cfg = EvalConfig(conditions=("clean",), samples=1, temperature=0.0, max_tokens=max_tokens,
                             max_turns=max_turns)
    for k in heavy_ks:
        thinker = HeavyThinker(thinker_backend, k=k, template="verbose", seed=seed, candidate_budget=candidate_budget,
                               context_budget=max(context_budget, k))
        t1 = time.perf_counter()
        openings = summary_openings(thinker, envs, tasks, [cs[:k] for cs in cands], max_turns)
        summaries = run_episodes(agent, envs, tasks, list(enumerate(openings)), summary_cfg, seed + 7919)
        row = _row("heavy", k, summaries, [sum(e.gen_tokens for e in cs[:k]) + s.gen_tokens
                                           for cs, s in zip(cands, summaries)],
                   time.perf_counter() - t1 + sample_s * k / kmax)
        row["summary_tokens"] = sum(s.gen_tokens for s in summaries) / len(summaries)
        rows.append(row)
    sc = sorted((r["gen_tokens"], r["success"]) for r in rows if r["method"] in ("single", "self-consistency"))
    for r in rows:
        if r["method"] == "heavy":
            r["sc_success_at_equal_tokens"] = interp_log(sc, r["gen_tokens"])
            r["delta_vs_sc"] = r["success"] - r["sc_success_at_equal_tokens"]
    return rows


def _tasks_folder(model: Optional[str], out: str) -> Path:
    """The ``longcat data synth`` folder whose held-out split is evaluated (module docstring)."""
    given = os.environ.get("LONGCAT_HEAVY_ENV_DATA")
    if given:
        return Path(given)
    if model is not None:
        for up in Path(model).resolve().parents[:4]:  # runs/demo/{sft/final, rl/checkpoints/step-N/model}
            if (up / "data" / "eval_tasks.jsonl").is_file():
                return up / "data"
    folder = Path(out) / "heavy-env-data"
    if not (folder / "eval_tasks.jsonl").is_file():
        from longcat.data.envs_adapter import build_envs
        from longcat.data.synth import synthesize

        build_envs(folder / "envs", count=8, domains=["retail"], tasks_per_env=2, workers=1, progress=False)
        synthesize(folder / "envs", folder, eval_fraction=0.5, workers=1, progress=False)
    return folder


def plot(rows: list[dict], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    single = [r for r in rows if r["method"] == "single"]
    for method, style in (("self-consistency", "o-"), ("pass@k (oracle)", ":"), ("heavy", "^-")):
        pts = sorted((single if method != "heavy" else []) + [r for r in rows if r["method"] == method],
                     key=lambda r: r["gen_tokens"])
        ax.plot([r["gen_tokens"] for r in pts], [r["success"] for r in pts], style, label=method,
                color="gray" if "oracle" in method else None)
        for r in pts:
            ax.annotate(f"K={r['k']}", (r["gen_tokens"], r["success"]), fontsize=7, textcoords="offset points",
                        xytext=(3, -9))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("generated tokens per task (episodes + summary episode)")
    ax.set_ylabel("success (environment evaluator)")
    ax.set_ylim(-0.02, 1.02)
    finish_plot(fig, ax, title, path)


def run(device: str = "cpu", quick: bool = False, model: Optional[str] = None,
        out: Optional[str] = None) -> BenchResult:
    from longcat.evaluate.runner import load_heldout

    out = out or os.environ.get("LONGCAT_BENCH_DIR", "bench-results")
    os.makedirs(out, exist_ok=True)
    t0 = time.perf_counter()
    if model is None:
        from longcat.models.random_init import init_checkpoint

        model = str(Path(out) / "heavy-env-random-tiny")
        if not (Path(model) / "config.json").is_file():
            init_checkpoint(model, preset="tiny", seed=0, max_position_embeddings=2048)
        model_note = "random-init tiny preset (smoke run; pass --model for an agent checkpoint)"
    else:
        model_note = f"--model {model}"
    data = _tasks_folder(model, out)
    envs, tasks = load_heldout(data)
    # The easiest tiers first (fewest gold calls): the ones a small agent may solve.
    tasks = sorted(tasks, key=lambda t: (len(t["gold_actions"]), t["task_id"]))[:QUICK_TASKS if quick else TASKS]
    setup_s = time.perf_counter() - t0
    agent, count_tokens = engine_agent(model)
    if quick:  # a smoke run: short turns, few of them
        rows = evaluate(agent, envs, tasks, count_tokens=count_tokens, ks=(1, 2), heavy_ks=(2,), max_turns=2,
                        max_tokens=32)
    else:
        rows = evaluate(agent, envs, tasks, count_tokens=count_tokens, ks=(1, 2, 4), heavy_ks=(2, 4),
                        max_turns=MAX_TURNS)
    title = f"Heavy Thinking vs self-consistency on {len(tasks)} held-out environment tasks"
    result = BenchResult("heavy-env", title, COLUMNS)
    for r in rows:
        result.add(**r)
    heavy_rows = [r for r in rows if r["method"] == "heavy"]
    result.context.update(machine=machine_info(device), model=model_note, data=str(data), tasks=len(tasks),
                          tiers=dict(Counter(len(t["gold_actions"]) for t in tasks)), setup_s=setup_s,
                          heavy_beats_sc_at_equal_tokens=f"{sum(r['delta_vs_sc'] > 0 for r in heavy_rows)} of "
                                                         f"{len(heavy_rows)} heavy settings",
                          note="candidates: K episodes per task at T=1.0 (clean); SC: largest group of final "
                               "database states; heavy: a greedy summary episode opened by the summary prompt; "
                               "success = environment reward 1.0")
    png = os.path.join(out, "heavy-env.png")
    plot(rows, png, title)
    result.context["plot"] = png
    return result
