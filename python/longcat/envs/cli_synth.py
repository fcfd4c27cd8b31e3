"""``longcat envs build | stats | eval``: environments and tasks at scale, their statistics, and
reference-agent scores. ``cli`` registers ``SUBCOMMANDS`` into ``longcat envs`` (this module
does not import ``cli``: no import cycle)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .spec import parse_domains


def _configure_build(p: argparse.ArgumentParser) -> None:
    p.add_argument("--domains", default="all", help="all (default) or a comma-separated list")
    p.add_argument("--count", type=int, default=100,
                   help="environments in total, spread evenly over the domains (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (default: the CPUs this process may use)")
    p.add_argument("--tasks-per-env", type=int, default=1, help="tasks per environment (default 1)")
    p.add_argument("--rows", type=int, default=None,
                   help="rows per table of entities without foreign keys, twice that for the "
                        "others (default 6; at most 1000)")
    p.add_argument("--block", type=int, default=None,
                   help="environments per work unit (default 25; part of what the seed fixes)")
    p.add_argument("--growth", action="append", default=[], metavar="KEY=VALUE",
                   help="a GrowthConfig setting, e.g. --growth tau=0.6 --growth min_tools=24 "
                        "(see longcat.envs.growth.GrowthConfig)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def growth_config(items: list[str]):
    """GrowthConfig from KEY=VALUE strings (values typed as the field's default)."""
    from dataclasses import fields

    from .growth import GrowthConfig

    if not items:
        return None
    known = {f.name: f for f in fields(GrowthConfig)}
    kw = {}
    for it in items:
        key, sep, val = it.partition("=")
        key = key.strip()
        if not sep or key not in known:
            raise ValueError(f"--growth: expected KEY=VALUE with KEY one of {sorted(known)}, "
                             f"got {it!r}")
        typ = type(known[key].default)
        try:
            kw[key] = typ(val) if typ is not bool else val.lower() in ("1", "true", "yes")
        except ValueError:
            raise ValueError(f"--growth {key}: expected a {typ.__name__}, got {val!r}") from None
    return GrowthConfig(**kw)


def cmd_build(args: argparse.Namespace) -> int:
    from .build import BLOCK, MAX_ROWS, ROWS, build

    if args.count < 1:
        raise ValueError(f"--count: expected >= 1, got {args.count}")
    if args.tasks_per_env < 1:
        raise ValueError(f"--tasks-per-env: expected >= 1, got {args.tasks_per_env}")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers: expected >= 1, got {args.workers}")
    names = parse_domains(args.domains)
    cfg = growth_config(args.growth)
    rows = ROWS if args.rows is None else args.rows
    if not 1 <= rows <= MAX_ROWS:
        raise ValueError(f"--rows: expected 1..{MAX_ROWS}, got {rows}")
    summary = build(names, args.count, args.seed, args.out, workers=args.workers,
                    tasks_per_env=args.tasks_per_env, block=args.block or BLOCK,
                    progress=not args.no_progress, cfg=cfg, rows=rows)
    print(f"built {summary['envs']} environments ({summary['verified']} verified) and "
          f"{summary['tasks']} tasks over {len(names)} domains in {summary['seconds']:.1f} s "
          f"({summary['envs_per_second']:.1f} verified envs/s, "
          f"{summary['tasks_per_second']:.1f} tasks/s) -> {args.out}")
    return 0


def _configure_stats(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="a folder written by `longcat envs build`")
    p.add_argument("--agents", action="store_true",
                   help="also score the reference-agent ladder (gold, write-only, nothing, "
                        "random) on a sample")
    p.add_argument("--sample", type=int, default=20,
                   help="tasks per domain the agents are scored on (default 20)")
    p.add_argument("--json", default=None, help="also write the table as JSON here")


def _load(dir_: Path):
    from .build import read_jsonl

    if not (dir_ / "summary.json").is_file():
        raise FileNotFoundError(f"{str(dir_)!r} has no summary.json: run `longcat envs build "
                                f"--out {dir_}` first")
    summary = json.loads((dir_ / "summary.json").read_text())
    envs = {e["env_id"]: e for e in read_jsonl(dir_ / "environments.jsonl")}
    tasks = list(read_jsonl(dir_ / "tasks.jsonl"))
    return summary, envs, tasks


LADDER = ("gold", "careful", "naive", "write-only", "nothing", "random")
STATS_LADDER = LADDER + ("gold+noise", "careful+noise")


def score_agents(envs: dict, tasks: list, sample: int, agents=LADDER, noise=None, *,
                 make_agent=None, user=None, trials: int = 1, log: str | None = None,
                 max_steps: int | None = None) -> dict:
    """Per domain over the first ``sample`` tasks: each agent's mean reward (key = agent name),
    mean partial credit (``<name>:partial``) and, with ``trials`` > 1, pass^k for k = trials
    (``<name>:pass^k``). Trial i uses noise seed ``noise.seed + i``. ``make_agent(name)``
    builds an agent (default: ``agents.AGENTS``); ``user`` is ``Environment``'s user factory;
    ``log`` a JSONL file every episode is appended to; ``max_steps`` the environments' step
    limit (default: ``Environment``'s)."""
    from dataclasses import replace

    from .agents import AGENTS, run_episode
    from .episodes import pass_hat_k_mean
    from .runtime import Environment

    if not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials: expected an integer >= 1, got {trials!r}")
    if make_agent is None:
        def make_agent(a):
            return AGENTS[a]() if a != "random" else AGENTS[a](seed=0)
    by_dom: dict[str, list] = {}
    for t in tasks:
        lst = by_dom.setdefault(t["domain"], [])
        if len(lst) < sample:
            lst.append(t)
    out: dict[str, dict] = {}
    for dom, ts in by_dom.items():
        rewards = {a: {} for a in agents}
        partial = {a: 0.0 for a in agents}
        for trial in range(trials):
            tnoise = None if noise is None else replace(noise, seed=noise.seed + trial)
            env, env_id = None, None
            for t in ts:
                if t["env_id"] != env_id:   # one open environment at a time
                    if env is not None:
                        env.close()
                    kw = {} if max_steps is None else {"max_steps": max_steps}
                    env, env_id = Environment(envs[t["env_id"]], noise=tnoise, user=user,
                                              **kw), t["env_id"]
                for a in agents:
                    r, info = run_episode(env, make_agent(a), t, log=log)
                    rewards[a].setdefault(t["task_id"], []).append(r)
                    partial[a] += info.get("partial_credit", 0.0)
            if env is not None:
                env.close()
        row: dict = {"n": len(ts)}
        for a in agents:
            row[a] = sum(sum(v) for v in rewards[a].values()) / (len(ts) * trials)
            row[f"{a}:partial"] = partial[a] / (len(ts) * trials)
            if trials > 1:
                row[f"{a}:pass^{trials}"] = pass_hat_k_mean(rewards[a], trials)
        out[dom] = row
    return out


def invariant_violations(envs: dict, domains: dict) -> dict:
    """Per domain: violated invariants summed over the initial database of every verified
    environment (template rows plus the environment's recorded repairs)."""
    from .datagen import apply_patch, template_db
    from .db import connect, dump, restore
    from .invariants import violations

    out: dict[str, int] = {}
    conns: dict = {}
    for e in envs.values():
        if not e.get("verified"):
            continue
        d = domains[e["domain"]]
        conn = conns.get(d.name)
        if conn is None:
            conn = conns[d.name] = connect(d)
        restore(conn, template_db(d, e["template_seed"], e.get("rows", 6)))
        apply_patch(conn, d, e.get("patch", ()))
        out[d.name] = out.get(d.name, 0) + len(violations(d, dump(conn, d)))
    for c in conns.values():
        c.close()
    return out


def task_stats(tasks: list, domains: dict) -> dict:
    """Per domain: gold actions per task (mean, p90, max), the share of tasks needing a read
    (``tasks.needs_read``: a write argument whose value the user never states, so only a tool
    output can supply it), the share of refusal tasks and the share with >= 6 gold actions."""
    from .spec import load_domain
    from .tasks import needs_read

    by_dom: dict[str, list] = {}
    for t in tasks:
        by_dom.setdefault(t["domain"], []).append(t)
    out = {}
    for dom, ts in by_dom.items():
        domain = domains.get(dom) or load_domain(dom)
        lens = sorted(len(t["gold_actions"]) for t in ts)
        n_read = sum(needs_read(t, domain) for t in ts)
        out[dom] = {"gold/task": sum(lens) / len(lens), "p90": lens[int(0.9 * (len(lens) - 1))],
                    "max": lens[-1], ">=6 gold": sum(x >= 6 for x in lens) / len(lens),
                    "needs read": n_read / len(ts),
                    "refusals": sum(bool(t.get("refusal")) for t in ts) / len(ts)}
    return out


def cmd_stats(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from .graph import build_dependency_graph, graph_stats
    from .spec import load_domain

    summary, envs, tasks = _load(Path(args.dir))
    scores = score_agents(envs, tasks, args.sample) if args.agents else {}
    if args.agents:
        from .noise import NoiseConfig

        noisy = score_agents(envs, tasks, args.sample, agents=("gold", "careful"),
                             noise=NoiseConfig.all(0.5, seed=0), max_steps=NOISE_TABLE_STEPS)
        for dom, row in noisy.items():
            scores[dom]["gold+noise"] = row["gold"]
            scores[dom]["careful+noise"] = row["careful"]
    doms = {d: load_domain(d) for d in summary["domains"]}
    tstats = task_stats(tasks, doms)
    viol = invariant_violations(envs, doms)
    TASK_COLS = ["gold/task", "p90", "max", ">=6 gold", "needs read", "refusals"]
    cols = ["domain", "tools", "density", "envs", "verified", "tools/env", "tasks",
            "task verif.", "invariant viol."] + TASK_COLS
    if args.agents:
        cols += list(STATS_LADDER)
    table = Table(title=f"longcat envs stats: {args.dir}")
    for c in cols:
        table.add_column(c, justify="left" if c == "domain" else "right")
    rows = []
    for dom, pd in summary["domains"].items():
        g = graph_stats(build_dependency_graph(load_domain(dom)))
        row = {"domain": dom, "tools": g["tools"], "density": g["density"], "envs": pd["envs"],
               "verified": pd["verified"], "tools/env": pd["tools_per_env"], "tasks": pd["tasks"],
               "task verif.": pd["task_verification_rate"], "dropped": pd["dropped"]}
        row.update(tstats.get(dom, {}))
        row["invariant viol."] = viol.get(dom, 0)
        if dom in scores:
            row.update({k: scores[dom][k] for k in STATS_LADDER})
        rows.append(row)
    n_env = sum(r["envs"] for r in rows)
    tot = {"domain": "all", "tools": sum(r["tools"] for r in rows),
           "density": sum(r["density"] for r in rows) / max(len(rows), 1), "envs": n_env,
           "verified": sum(r["verified"] for r in rows),
           "tools/env": sum(r["tools/env"] * r["verified"] for r in rows)
           / max(sum(r["verified"] for r in rows), 1),
           "tasks": sum(r["tasks"] for r in rows),
           "task verif.": sum(r["tasks"] for r in rows)
           / max(sum(summary["domains"][r["domain"]]["candidates"] for r in rows), 1)}
    tot["invariant viol."] = sum(r["invariant viol."] for r in rows)
    n_task = {d: sum(t["domain"] == d for t in tasks) for d in tstats}
    for c in TASK_COLS:
        if c in ("p90", "max"):
            tot[c] = max((tstats[d][c] for d in tstats), default=0)
        else:
            tot[c] = sum(tstats[d][c] * n_task[d] for d in tstats) / max(sum(n_task.values()), 1)
    if scores:
        n = sum(s["n"] for s in scores.values())
        for a in STATS_LADDER:
            tot[a] = sum(s[a] * s["n"] for s in scores.values()) / max(n, 1)

    def fmt(c, v):
        if c in ("density",):
            return f"{v:.3f}"
        if c in ("tools/env", "gold/task"):
            return f"{v:.1f}"
        if c in ("task verif.", ">=6 gold", "needs read", "refusals") + STATS_LADDER:
            return f"{100 * v:.1f}%"
        return str(v)
    for r in rows + [tot]:
        table.add_row(*(fmt(c, r.get(c, "")) if c in r else "" for c in cols),
                      style="bold" if r is tot else None)
    console = Console(width=260)
    console.print(table)
    console.print(f"built in {summary['seconds']:.1f} s with {summary['workers']} workers: "
                  f"{summary['envs_per_second']:.1f} verified envs/s, "
                  f"{summary['tasks_per_second']:.1f} tasks/s")
    drops: dict = {}
    for r in rows:
        for k, v in r["dropped"].items():
            drops[k] = drops.get(k, 0) + v
    if drops:
        console.print("tasks dropped by self-verification: "
                      + ", ".join(f"{k}: {v}" for k, v in sorted(drops.items())))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"rows": rows, "total": tot,
                                               "summary": summary}, indent=1, default=str))
    return 0


def _configure_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="a folder written by `longcat envs build`")
    p.add_argument("--agent", choices=["gold", "careful", "naive", "write-only", "nothing", "random",
                                       "openai"],
                   default="gold", help="a reference agent, or 'openai' (--agent-url)")
    p.add_argument("--agent-url", default=None,
                   help="OpenAI-compatible endpoint the 'openai' agent drives (e.g. "
                        "http://127.0.0.1:8000, as served by `longcat serve`)")
    p.add_argument("--agent-model", default="default", help="model name sent to --agent-url")
    p.add_argument("--user-model", default=None, metavar="URL",
                   help="play the user with a model at this OpenAI-compatible endpoint "
                        "(default: the scripted user)")
    p.add_argument("--user-model-name", default="default", help="model name sent to --user-model")
    p.add_argument("--limit", type=int, default=50, help="tasks per domain (default 50)")
    p.add_argument("--trials", type=int, default=1,
                   help="runs per task; > 1 also reports pass^k with k = trials (default 1)")
    p.add_argument("--log", default=None, help="append every episode to this JSONL file")
    p.add_argument("--noise", default="", help="comma-separated noise types (or 'all')")
    p.add_argument("--intensity", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0, help="noise seed (trial i uses seed + i)")


def cmd_eval(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from .agents import AGENTS, OpenAIAgent
    from .noise import NOISE_TYPES, NoiseConfig
    from .users import LLMUser

    if args.agent == "openai" and not args.agent_url:
        raise ValueError("--agent openai: needs --agent-url, the OpenAI-compatible endpoint")
    if args.trials < 1:
        raise ValueError(f"--trials: expected >= 1, got {args.trials}")
    summary, envs, tasks = _load(Path(args.dir))
    noise = None
    if args.noise:
        types = NOISE_TYPES if args.noise == "all" else [t.strip() for t in args.noise.split(",")]
        noise = NoiseConfig(types, args.intensity, args.seed)
    user = LLMUser.factory(args.user_model, model=args.user_model_name) \
        if args.user_model else None

    def make_agent(a):
        if a == "openai":
            return OpenAIAgent(args.agent_url, args.agent_model)
        return AGENTS[a]() if a != "random" else AGENTS[a](seed=0)
    scores = score_agents(envs, tasks, args.limit, agents=(args.agent,), noise=noise,
                          make_agent=make_agent, user=user, trials=args.trials, log=args.log)
    table = Table(title=f"{args.agent} agent" + (f", noise {args.noise} @ {args.intensity}"
                                                  if noise else ""))
    cols = ["reward", "partial"] + ([f"pass^{args.trials}"] if args.trials > 1 else [])
    table.add_column("domain")
    table.add_column("tasks", justify="right")
    for c in cols:
        table.add_column(c, justify="right")
    for dom, s in scores.items():
        vals = [s[args.agent], s[f"{args.agent}:partial"]]
        if args.trials > 1:
            vals.append(s[f"{args.agent}:pass^{args.trials}"])
        table.add_row(dom, str(s["n"]), *(f"{100 * v:.1f}%" for v in vals))
    Console(width=120).print(table)
    return 0


NOISE_TABLE_STEPS = 150    # re-reads and paged answers cost steps: more than the default 60


def noise_table(envs: dict, tasks: list, sample: int, intensity: float = 1.0,
                seed: int = 0, max_steps: int = NOISE_TABLE_STEPS) -> dict:
    """Mean reward of the careful and the naive grounded agents (``grounded``) with no noise
    and under each noise type alone, over the first ``sample`` tasks of every domain:
    {"clean" | noise type: {"careful", "naive", "n"}}."""
    from .noise import NOISE_TYPES, NoiseConfig

    out = {}
    for kind in ("clean",) + NOISE_TYPES:
        noise = None if kind == "clean" else NoiseConfig([kind], intensity, seed)
        per = score_agents(envs, tasks, sample, agents=("careful", "naive"), noise=noise,
                           max_steps=max_steps)
        n = sum(r["n"] for r in per.values())
        out[kind] = {a: sum(r[a] * r["n"] for r in per.values()) / max(n, 1)
                     for a in ("careful", "naive")}
        out[kind]["n"] = n
    return out


def _configure_noise_table(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="a folder written by `longcat envs build`")
    p.add_argument("--sample", type=int, default=10, help="tasks per domain (default 10)")
    p.add_argument("--intensity", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the table as JSON here")


def cmd_noise_table(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    if args.sample < 1:
        raise ValueError(f"--sample: expected >= 1, got {args.sample}")
    summary, envs, tasks = _load(Path(args.dir))
    rows = noise_table(envs, tasks, args.sample, args.intensity, args.seed)
    table = Table(title=f"careful vs naive agent per noise type (intensity {args.intensity})")
    for c in ("noise", "tasks", "careful", "naive", "naive drop"):
        table.add_column(c, justify="left" if c == "noise" else "right")
    base = rows["clean"]["naive"]
    for kind, r in rows.items():
        table.add_row(kind, str(r["n"]), f"{100 * r['careful']:.1f}%", f"{100 * r['naive']:.1f}%",
                      "" if kind == "clean" else f"{100 * (base - r['naive']):.1f} pt")
    Console(width=120).print(table)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


def _configure_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="a folder written by `longcat envs build`")
    p.add_argument("--out", required=True, help="output folder (one sub-folder per domain)")
    p.add_argument("--domains", default="all", help="all (default) or a comma-separated list")


def cmd_export(args: argparse.Namespace) -> int:
    from .tau2_export import export_tau2

    names = None if args.domains == "all" else parse_domains(args.domains)
    counts = export_tau2(args.dir, args.out, names)
    print(f"exported {sum(counts.values())} tasks of {len(counts)} domains as tau2 domain "
          f"folders -> {args.out}")
    return 0


# (name, help, configure(parser), func(args) -> int), registered by cli.add_parser
SUBCOMMANDS = [
    ("build", "grow, instantiate and verify environments and synthesise tasks",
     _configure_build, cmd_build),
    ("stats", "statistics of a build (domains, tools, density, tasks, verification)",
     _configure_stats, cmd_stats),
    ("eval", "score a reference agent (gold / write-only / nothing / random) on a build",
     _configure_eval, cmd_eval),
    ("noise-table", "careful vs naive reference agent, clean and under each noise type",
     _configure_noise_table, cmd_noise_table),
    ("export-tau2", "write a build's tasks as tau2-bench domain folders (db.json, tasks.json, "
     "policy.md, ...)", _configure_export, cmd_export),
]
