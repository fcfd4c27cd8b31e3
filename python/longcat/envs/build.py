"""Building many environments and tasks at once (``longcat envs build``), over a process pool.

Work is cut into fixed blocks of (domain, first index, count); each block is built by one worker
with its own usage counter for down-weighting, so the output depends only on the seed and the
block size, never on the number of workers or their scheduling. A worker keeps one compiled
``DomainContext`` per domain (spec, graph, SQLite connection, template databases) for all the
blocks it gets. Results are written in block order. A task the user could get done without
any lookup (``tasks.needs_read`` false) is replaced by one from the next ``READ_TRIES`` chains
of the environment that needs one, when they give one.

Outputs under ``out``: ``environments.jsonl`` (one environment record per line),
``tasks.jsonl`` (one task per line), ``tau2/<domain>_tasks.json`` (tau2-bench-like task lists),
``summary.json`` (counts per domain, verification and drop reasons, timings).
"""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Sequence

from .growth import DomainContext, GrowthConfig, build_environment
from .tasks import SynthStats, needs_read, synthesize_task, to_tau2

__all__ = ["build_block", "build", "plan_blocks", "BLOCK", "ROWS", "MAX_ROWS"]

BLOCK = 25
READ_TRIES = 2  # further chains tried for a task that needs a lookup before one that needs none
ROWS = 6       # rows per table of entities without foreign keys (twice that for the others)
MAX_ROWS = 1000

_CONTEXTS: dict[str, DomainContext] = {}


def _context(domain: str, cfg: GrowthConfig | None, rows: int = ROWS) -> DomainContext:
    key = f"{domain}:{rows}" if cfg is None else \
        f"{domain}:{rows}:{json.dumps(asdict(cfg), sort_keys=True)}"
    ctx = _CONTEXTS.get(key)
    if ctx is None:
        ctx = _CONTEXTS[key] = DomainContext(domain, cfg, rows=rows)
    return ctx


def build_block(domain: str, seed: int, start: int, count: int, tasks_per_env: int = 1,
                cfg: GrowthConfig | None = None, rows: int = ROWS) -> dict:
    """Builds environments ``start .. start+count-1`` of ``domain`` and their tasks; ``rows``
    sizes the tables (entities without foreign keys get ``rows`` rows, the others twice as
    many)."""
    t0 = time.perf_counter()
    ctx = _context(domain, cfg, rows)
    uses: dict = {}
    stats = SynthStats()
    envs, tasks = [], []
    for i in range(start, start + count):
        try:
            env = build_environment(ctx, seed, i, uses)
        except Exception as e:  # noqa: BLE001 - one bad environment must not end the build
            env = {"env_id": f"{domain}-{seed}-{i:06d}", "domain": domain, "seed": seed,
                   "index": i, "verified": False, "tools": [], "dropped_tools": [],
                   "chain_calls": [], "error": f"{type(e).__name__}: {e}"}
        envs.append(env)
        if not env["verified"]:
            continue
        made, spare, passed = 0, None, 0
        for ci, calls in enumerate(env["chain_calls"]):
            if made >= tasks_per_env:
                break
            if calls is None:
                continue
            try:
                task = synthesize_task(ctx, env, ci, stats)
            except Exception as e:  # noqa: BLE001
                stats.candidates += 1
                stats.drop(f"task error: {type(e).__name__}: {e}"[:200])
                task = None
            if task is None:
                continue
            if needs_read(task, ctx.domain) or passed >= READ_TRIES:
                tasks.append(task)
                made, passed = made + 1, 0
            else:
                # a task the user can do without any lookup: keep it only when the next
                # chains give none that needs one (it is not counted as a candidate)
                spare = spare or task
                stats.candidates -= 1
                stats.kept -= 1
                passed += 1
        if made < tasks_per_env and spare is not None:
            tasks.append(spare)
            stats.candidates += 1
            stats.kept += 1
    return {"domain": domain, "start": start, "envs": envs, "tasks": tasks,
            "stats": {"candidates": stats.candidates, "kept": stats.kept,
                      "dropped": stats.dropped},
            "seconds": time.perf_counter() - t0}


def plan_blocks(domains: Sequence[str], count: int, block: int = BLOCK) -> list[tuple[str, int, int]]:
    """``count`` environments spread evenly over ``domains`` (the first domains get one more
    when it does not divide), cut into blocks."""
    if count < 1:
        raise ValueError(f"count: expected >= 1, got {count}")
    if not domains:
        raise ValueError("domains: expected at least one domain")
    per = [count // len(domains) + (1 if i < count % len(domains) else 0)
           for i in range(len(domains))]
    out = []
    for d, n in zip(domains, per):
        for s in range(0, n, block):
            out.append((d, s, min(block, n - s)))
    return out


def _run(args):
    return build_block(*args)


def build(domains: Sequence[str], count: int, seed: int, out: str | os.PathLike,
          workers: int | None = None, tasks_per_env: int = 1, block: int = BLOCK,
          progress: bool = True, cfg: GrowthConfig | None = None, rows: int = ROWS) -> dict:
    """Builds ``count`` environments over ``domains`` into ``out``; returns the summary."""
    from .spec import load_domain

    if not isinstance(rows, int) or isinstance(rows, bool) or not 1 <= rows <= MAX_ROWS:
        raise ValueError(f"rows: expected an integer in [1, {MAX_ROWS}], got {rows!r}")

    for d in domains:     # fail early, in the parent, on a bad domain name or spec
        load_domain(d)
    out = Path(out)
    (out / "tau2").mkdir(parents=True, exist_ok=True)
    blocks = plan_blocks(domains, count, block)
    workers = workers or min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                             else (os.cpu_count() or 1), len(blocks))
    t0 = time.perf_counter()
    per_domain: dict[str, dict] = {d: {"envs": 0, "verified": 0, "tasks": 0, "tools": [],
                                       "candidates": 0, "dropped": {}, "dropped_tools": 0,
                                       "errors": 0, "first_error": None}
                                   for d in domains}
    tau2: dict[str, list] = {d: [] for d in domains}
    results: dict[int, dict] = {}
    next_write = 0
    env_f = open(out / "environments.jsonl", "w")
    task_f = open(out / "tasks.jsonl", "w")

    def flush():
        nonlocal next_write
        while next_write in results:
            r = results.pop(next_write)
            pd = per_domain[r["domain"]]
            for e in r["envs"]:
                env_f.write(json.dumps(e, sort_keys=True, default=str) + "\n")
                pd["envs"] += 1
                pd["verified"] += int(e["verified"])
                pd["dropped_tools"] += len(e["dropped_tools"])
                if "error" in e:
                    pd["errors"] += 1
                    pd["first_error"] = pd["first_error"] or e["error"]
                if e["verified"]:
                    pd["tools"].append(len(e["tools"]))
            for t in r["tasks"]:
                task_f.write(json.dumps(t, sort_keys=True, default=str) + "\n")
                tau2[r["domain"]].append(to_tau2(t))
            pd["tasks"] += len(r["tasks"])
            pd["candidates"] += r["stats"]["candidates"]
            for k, v in r["stats"]["dropped"].items():
                pd["dropped"][k] = pd["dropped"].get(k, 0) + v
            next_write += 1

    jobs = [(d, seed, s, n, tasks_per_env, cfg, rows) for d, s, n in blocks]
    try:
        if progress:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)
            bar = Progress(TextColumn("[bold]envs build"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("envs"), TimeElapsedColumn(), TimeRemainingColumn())
        else:
            bar = None
        with (bar if bar is not None else _Null()):
            task_id = bar.add_task("build", total=count) if bar is not None else None
            if workers <= 1:
                for i, j in enumerate(jobs):
                    results[i] = build_block(*j)
                    if bar is not None:
                        bar.advance(task_id, j[3])
                    flush()
            else:
                with ProcessPoolExecutor(max_workers=workers) as pool:
                    futures = {pool.submit(_run, j): i for i, j in enumerate(jobs)}
                    from concurrent.futures import as_completed
                    for fut in as_completed(futures):
                        i = futures[fut]
                        results[i] = fut.result()
                        if bar is not None:
                            bar.advance(task_id, jobs[i][3])
                        flush()
    finally:
        env_f.close()
        task_f.close()
    for d, lst in tau2.items():
        with open(out / "tau2" / f"{d}_tasks.json", "w") as f:
            json.dump(lst, f, indent=1, default=str)
    seconds = time.perf_counter() - t0
    summary = {"seed": seed, "count": count, "workers": workers, "block": block, "rows": rows,
               "tasks_per_env": tasks_per_env, "seconds": seconds, "domains": {}}
    tot_env = tot_ver = tot_task = 0
    for d, pd in per_domain.items():
        tools = pd.pop("tools")
        pd["tools_per_env"] = sum(tools) / len(tools) if tools else 0.0
        pd["min_tools_per_env"] = min(tools) if tools else 0
        pd["task_verification_rate"] = pd["tasks"] / pd["candidates"] if pd["candidates"] else 0.0
        summary["domains"][d] = pd
        tot_env += pd["envs"]
        tot_ver += pd["verified"]
        tot_task += pd["tasks"]
    summary.update(envs=tot_env, verified=tot_ver, tasks=tot_task,
                   envs_per_second=tot_ver / seconds if seconds else 0.0,
                   tasks_per_second=tot_task / seconds if seconds else 0.0)
    with open(out / "summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    return summary


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def read_jsonl(path: str | os.PathLike) -> Iterable[dict]:
    with open(path) as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
