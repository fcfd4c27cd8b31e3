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
    from .build import BLOCK, build

    if args.count < 1:
        raise ValueError(f"--count: expected >= 1, got {args.count}")
    if args.tasks_per_env < 1:
        raise ValueError(f"--tasks-per-env: expected >= 1, got {args.tasks_per_env}")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers: expected >= 1, got {args.workers}")
    names = parse_domains(args.domains)
    cfg = growth_config(args.growth)
    summary = build(names, args.count, args.seed, args.out, workers=args.workers,
                    tasks_per_env=args.tasks_per_env, block=args.block or BLOCK,
                    progress=not args.no_progress, cfg=cfg)
    print(f"built {summary['envs']} environments ({summary['verified']} verified) and "
          f"{summary['tasks']} tasks over {len(names)} domains in {summary['seconds']:.1f} s "
          f"({summary['envs_per_second']:.1f} verified envs/s, "
          f"{summary['tasks_per_second']:.1f} tasks/s) -> {args.out}")
    return 0


def _configure_stats(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="a folder written by `longcat envs build`")
    p.add_argument("--agents", action="store_true",
                   help="also score the reference agents (gold, nothing, random) on a sample")
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


def score_agents(envs: dict, tasks: list, sample: int, agents=("gold", "nothing", "random"),
                 noise=None) -> dict:
    """Mean reward of each reference agent per domain over the first ``sample`` tasks."""
    from .agents import AGENTS, run_episode
    from .runtime import Environment

    by_dom: dict[str, list] = {}
    for t in tasks:
        lst = by_dom.setdefault(t["domain"], [])
        if len(lst) < sample:
            lst.append(t)
    out: dict[str, dict] = {}
    cache: dict[str, Environment] = {}
    for dom, ts in by_dom.items():
        scores = {a: 0.0 for a in agents}
        for t in ts:
            env = cache.get(t["env_id"])
            if env is None:
                env = Environment(envs[t["env_id"]], noise=noise)
                cache = {t["env_id"]: env}   # one open environment at a time
            for a in agents:
                agent = AGENTS[a]() if a != "random" else AGENTS[a](seed=0)
                r, _ = run_episode(env, agent, t)
                scores[a] += r
        out[dom] = {a: scores[a] / len(ts) for a in agents} | {"n": len(ts)}
    return out


def cmd_stats(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from .graph import build_dependency_graph, graph_stats
    from .spec import load_domain

    summary, envs, tasks = _load(Path(args.dir))
    scores = score_agents(envs, tasks, args.sample) if args.agents else {}
    cols = ["domain", "tools", "density", "envs", "verified", "tools/env", "tasks",
            "task verif."]
    if args.agents:
        cols += ["gold", "nothing", "random"]
    table = Table(title=f"longcat envs stats: {args.dir}")
    for c in cols:
        table.add_column(c, justify="left" if c == "domain" else "right")
    rows = []
    for dom, pd in summary["domains"].items():
        g = graph_stats(build_dependency_graph(load_domain(dom)))
        row = {"domain": dom, "tools": g["tools"], "density": g["density"], "envs": pd["envs"],
               "verified": pd["verified"], "tools/env": pd["tools_per_env"], "tasks": pd["tasks"],
               "task verif.": pd["task_verification_rate"], "dropped": pd["dropped"]}
        if dom in scores:
            row.update({k: scores[dom][k] for k in ("gold", "nothing", "random")})
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
    if scores:
        n = sum(s["n"] for s in scores.values())
        for a in ("gold", "nothing", "random"):
            tot[a] = sum(s[a] * s["n"] for s in scores.values()) / max(n, 1)

    def fmt(c, v):
        if c in ("density",):
            return f"{v:.3f}"
        if c in ("tools/env",):
            return f"{v:.1f}"
        if c in ("task verif.", "gold", "nothing", "random"):
            return f"{100 * v:.1f}%"
        return str(v)
    for r in rows + [tot]:
        table.add_row(*(fmt(c, r.get(c, "")) if c in r else "" for c in cols),
                      style="bold" if r is tot else None)
    console = Console(width=160)
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
    p.add_argument("--agent", choices=["gold", "nothing", "random"], default="gold")
    p.add_argument("--limit", type=int, default=50, help="tasks per domain (default 50)")
    p.add_argument("--noise", default="", help="comma-separated noise types (or 'all')")
    p.add_argument("--intensity", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0, help="noise seed")


def cmd_eval(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from .noise import NOISE_TYPES, NoiseConfig

    summary, envs, tasks = _load(Path(args.dir))
    noise = None
    if args.noise:
        types = NOISE_TYPES if args.noise == "all" else [t.strip() for t in args.noise.split(",")]
        noise = NoiseConfig(types, args.intensity, args.seed)
    scores = score_agents(envs, tasks, args.limit, agents=(args.agent,), noise=noise)
    table = Table(title=f"{args.agent} agent" + (f", noise {args.noise} @ {args.intensity}"
                                                  if noise else ""))
    table.add_column("domain")
    table.add_column("tasks", justify="right")
    table.add_column("reward", justify="right")
    for dom, s in scores.items():
        table.add_row(dom, str(s["n"]), f"{100 * s[args.agent]:.1f}%")
    Console(width=120).print(table)
    return 0


# (name, help, configure(parser), func(args) -> int), registered by cli.add_parser
SUBCOMMANDS = [
    ("build", "grow, instantiate and verify environments and synthesise tasks",
     _configure_build, cmd_build),
    ("stats", "statistics of a build (domains, tools, density, tasks, verification)",
     _configure_stats, cmd_stats),
    ("eval", "score a reference agent (gold / write-only / nothing / random) on a build",
     _configure_eval, cmd_eval),
]
