"""``longcat envs ...``: ``check`` (the conversion report), ``show`` (expanded tool definitions),
``graph`` (dependency-graph stats / JSON), ``list`` (the domains).

``add_parser(subparsers)`` registers the ``envs`` command with its own subcommands; other modules
add theirs with ``add_subcommand(name, help, configure, func)`` before ``add_parser`` runs, or by
calling ``ENVS_SUBCOMMANDS.append(...)``; ``cli_synth.SUBCOMMANDS`` (build, stats, eval) come first.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from .spec import parse_domains  # noqa: F401  (part of this module's API)

__all__ = ["add_parser", "add_subcommand", "ENVS_SUBCOMMANDS", "parse_domains"]

# (name, help, configure(parser), func(args) -> int)
ENVS_SUBCOMMANDS: list[tuple[str, str, Callable, Callable]] = []


def add_subcommand(name: str, help: str, configure: Callable, func: Callable) -> None:
    ENVS_SUBCOMMANDS.append((name, help, configure, func))


def _console():
    from rich.console import Console

    return Console(width=160)


def cmd_check(args: argparse.Namespace) -> int:
    from rich.progress import Progress
    from rich.table import Table

    from .check import check_domain
    from .spec import load_domain

    names = parse_domains(args.domains)
    reports = []
    console = _console()
    with Progress(console=console, transient=True, disable=not sys.stderr.isatty()) as prog:
        for name in names:
            dom = load_domain(name)
            task = prog.add_task(f"check {name}", total=len(dom.tools))
            reports.append(check_domain(dom, seed=args.seed, progress=lambda _n: prog.advance(task)))
    table = Table(title="longcat envs check: generated tool tests")
    for col in ("domain", "tools", "passed", "conversion", "test cases", "unconstructed"):
        table.add_column(col, justify="right" if col != "domain" else "left")
    for r in reports:
        d = r.to_dict()
        style = None if r.rate >= args.min_rate else "red"
        table.add_row(r.domain, str(d["tools"]), str(d["passed"]), f"{100 * r.rate:.1f}%", str(d["cases"]),
                      str(d["unconstructed_violations"]), style=style)
    total = sum(len(r.tools) for r in reports)
    passed = sum(r.passed for r in reports)
    table.add_row("all", str(total), str(passed), f"{100 * passed / max(total, 1):.1f}%", "", "", style="bold")
    console.print(table)
    for r in reports:
        for t in r.failures():
            console.print(f"[red]FAIL[/red] {r.domain}.{t.tool}: " + " | ".join(t.failures), markup=True,
                          highlight=False)
    if args.json:
        out = {"seed": args.seed, "min_rate": args.min_rate, "domains": [r.to_dict() for r in reports]}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))
        console.print(f"wrote {args.json}")
    below = [r.domain for r in reports if r.rate < args.min_rate]
    if below:
        console.print(f"[red]below {100 * args.min_rate:.0f}%: {', '.join(below)}[/red]")
        return 1
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from .spec import load_domain

    dom = load_domain(args.domain)
    if args.tool:
        data = dom.tool(args.tool).expand()
    else:
        data = dom.expand()
    if args.format == "openai":
        from .schemas import openai_tools
        data = openai_tools(dom, [args.tool] if args.tool else None)
    elif args.format == "mcp":
        from .schemas import mcp_tools
        data = mcp_tools(dom, [args.tool] if args.tool else None)
    elif args.format == "ddl":
        from .db import ddl
        print(";\n".join(ddl(dom)) + ";")
        return 0
    print(json.dumps(data, indent=1))
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    from rich.table import Table

    from .graph import build_dependency_graph, graph_stats, to_json
    from .spec import load_domain

    names = parse_domains(args.domains)
    if args.json:
        out = {n: to_json(build_dependency_graph(load_domain(n))) for n in names}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))
    table = Table(title="tool dependency graphs")
    cols = ("domain", "tools", "read", "write", "edges", "density", "entry_points", "usable", "keys")
    for c in cols:
        table.add_column(c, justify="left" if c == "domain" else "right")
    for n in names:
        s = graph_stats(build_dependency_graph(load_domain(n)))
        table.add_row(*[f"{s[c]:.3f}" if c == "density" else str(s[c]) for c in cols])
    _console().print(table)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from .spec import domain_names, domains_dir, load_domain

    for n in domain_names():
        d = load_domain(n)
        print(f"{n}\t{len(d.entities)} entities\t{len(d.tools)} tools")
    print(f"({domains_dir()})", file=sys.stderr)
    return 0


def _run(func):
    def wrapped(args):
        from .spec import SpecError
        try:
            return func(args)
        except BrokenPipeError:   # `longcat envs show ... | head`
            import os
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        except (SpecError, ValueError, KeyError, FileNotFoundError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else e
            print(f"longcat envs: error: {msg}", file=sys.stderr)
            return 2
    return wrapped


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("envs", help="environment scaling: domain specs, tools, checks, graphs")
    sub = p.add_subparsers(dest="envs_command", required=True)
    c = sub.add_parser("check", help="generated per-tool unit tests and the conversion report")
    c.add_argument("--domains", default="all", help="all (default) or a comma-separated list")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--json", default=None, help="also write the full report as JSON here")
    c.add_argument("--min-rate", type=float, default=0.95,
                   help="exit 1 when a domain's conversion rate is below this (default 0.95)")
    c.set_defaults(func=_run(cmd_check))
    s = sub.add_parser("show", help="the expanded spec of a domain or one tool (JSON), or its DDL")
    s.add_argument("domain")
    s.add_argument("--tool", default=None)
    s.add_argument("--format", choices=["spec", "openai", "mcp", "ddl"], default="spec")
    s.set_defaults(func=_run(cmd_show))
    g = sub.add_parser("graph", help="tool dependency graph statistics (and JSON export)")
    g.add_argument("--domains", default="all")
    g.add_argument("--json", default=None, help="write nodes and edges per domain here")
    g.set_defaults(func=_run(cmd_graph))
    ls = sub.add_parser("list", help="the domains and their sizes")
    ls.set_defaults(func=_run(cmd_list))
    from .cli_synth import SUBCOMMANDS
    from .service import cli as _service_cli  # noqa: F401  (registers `serve` via add_subcommand)

    for name, help_, configure, func in SUBCOMMANDS + ENVS_SUBCOMMANDS:
        sp = sub.add_parser(name, help=help_)
        configure(sp)
        sp.set_defaults(func=_run(func))
    return p
