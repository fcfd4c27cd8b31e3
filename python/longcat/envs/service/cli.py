"""``longcat envs serve``: the environment service for an external agent, as JSON lines.

Each input line is one request, each output line one response. Calls on one handle run in the
order they came; calls on different handles run concurrently, so responses may come out of
order (``id`` pairs them):

    {"id": 1, "op": "open", "env_id": "retail-0-000003", "task_id": "..."}   (records of --build)
    {"id": 1, "op": "open", "env": {record}, "task": {task}}                 (records inline)
    {"id": 2, "op": "reset", "handle": 1}
    {"id": 3, "op": "step", "handle": 1, "action": {"type": "tool_call", ...}}
    {"id": 4, "op": "close", "handle": 1}
    {"id": 5, "op": "metrics"}

    -> {"id": 3, "ok": true, "result": [observation, reward, done, info]}
    -> {"id": 9, "ok": false, "error": "UnknownHandle", "message": "handle: ..."}

When the input ends (the client went away) every environment it opened is closed. ``--stats S``
prints the service's metrics (open environments, queue, p50/p99 step latency, failures by kind)
to stderr every S seconds and at exit.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys

from ..cli import add_subcommand

__all__ = ["serve", "format_metrics"]


def format_metrics(m: dict) -> str:
    def ms(v):
        return "-" if v is None else f"{v:.2f} ms"
    fails = ", ".join(f"{k} {v}" for k, v in sorted(m["failures"].items())) or "none"
    return (f"[envs serve] workers {m['workers_alive']}/{m['workers']} (restarts "
            f"{m['worker_restarts']}) | open {m['open']} in-episode {m['in_episode']} | inflight "
            f"{m['inflight']} queued {m['queued']} | steps {m['steps']} resets {m['resets']} | "
            f"step p50 {ms(m['step_p50_ms'])} p99 {ms(m['step_p99_ms'])} | failures: {fails}")


async def _answer(svc, session, req, envs, tasks) -> dict:
    rid = req.get("id") if isinstance(req, dict) else None
    try:
        if not isinstance(req, dict):
            raise ValueError(f"request: expected a JSON object, got {type(req).__name__}")
        op = req.get("op")
        if op == "open":
            if "env" in req:
                rec, task = req["env"], req.get("task")
            else:
                if req.get("env_id") not in envs:
                    raise ValueError(f"env_id: {req.get('env_id')!r} is not in the loaded build")
                if req.get("task_id") not in tasks:
                    raise ValueError(f"task_id: {req.get('task_id')!r} is not in the loaded build")
                rec, task = envs[req["env_id"]], tasks[req["task_id"]]
            result = await session.open(rec, task)
        elif op == "reset":
            result = await session.reset(req.get("handle"))
        elif op == "step":
            result = list(await session.step(req.get("handle"), req.get("action")))
        elif op == "close":
            result = await session.close(req.get("handle"))
        elif op == "metrics":
            result = svc.metrics()
        else:
            raise ValueError(f"op: expected open, reset, step, close or metrics, got {op!r}")
        return {"id": rid, "ok": True, "result": result}
    except Exception as e:  # noqa: BLE001 - every failure is answered, the server goes on
        return {"id": rid, "ok": False, "error": type(e).__name__, "message": str(e)}


async def serve(svc, readline, write, envs=None, tasks=None, stats_every: float = 0.0,
                log=None) -> None:
    """Answers JSON-line requests from ``readline()`` (a blocking function returning '' at the
    end) with ``write(line)`` until the input ends; then closes what the client opened."""
    envs, tasks = envs or {}, tasks or {}
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    loop = asyncio.get_running_loop()
    pending: set = set()
    last: dict = {}   # handle -> its latest call

    async def ticker():
        while True:
            await asyncio.sleep(stats_every)
            log(format_metrics(svc.metrics()))
    tick = loop.create_task(ticker()) if stats_every > 0 else None
    async with svc.session() as session:
        while True:
            line = await asyncio.to_thread(readline)
            if not line:
                break
            if not line.strip():
                continue
            try:
                req = json.loads(line)
            except json.JSONDecodeError as e:
                write(json.dumps({"id": None, "ok": False, "error": "JSONDecodeError",
                                  "message": f"request: not JSON ({e})"}) + "\n")
                continue

            h = req.get("handle") if isinstance(req, dict) else None
            h = h if isinstance(h, int) else None
            prev = last.get(h) if h is not None else None

            async def one(req=req, prev=prev):
                if prev is not None:   # calls on one handle run in the order they came
                    await asyncio.gather(prev, return_exceptions=True)
                write(json.dumps(await _answer(svc, session, req, envs, tasks), default=str) + "\n")
            t = loop.create_task(one())
            pending.add(t)
            t.add_done_callback(pending.discard)
            if h is not None:
                last[h] = t
                t.add_done_callback(lambda t, h=h: last.get(h) is t and last.pop(h))
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
    if tick is not None:
        tick.cancel()
    log(format_metrics(svc.metrics()))


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--build", default=None,
                   help="a 'longcat envs build' folder: open environments by env_id/task_id")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: CPUs)")
    p.add_argument("--live-per-worker", type=int, default=256,
                   help="awake environments per worker; the rest hibernate (default 256)")
    p.add_argument("--step-timeout", type=float, default=30.0)
    p.add_argument("--code-tools", default="",
                   help="comma-separated: python,calculator (sandboxed code tools)")
    p.add_argument("--allow-unsandboxed", action="store_true",
                   help="run the python tool without namespaces where the kernel refuses them")
    p.add_argument("--no-pin", action="store_true",
                   help="leave the workers to the scheduler (default: one CPU each)")
    p.add_argument("--stats", type=float, default=0.0, metavar="SECONDS",
                   help="print metrics to stderr every SECONDS (and at exit)")


def _cmd(args: argparse.Namespace) -> int:
    from . import EnvService

    envs, tasks = {}, {}
    if args.build:
        from pathlib import Path

        from ..build import read_jsonl

        root = Path(args.build)
        for f in ("environments.jsonl", "tasks.jsonl"):
            if not (root / f).is_file():
                raise ValueError(f"--build: {root} has no {f} (run 'longcat envs build' first)")
        envs = {e["env_id"]: e for e in read_jsonl(root / "environments.jsonl")}
        tasks = {t["task_id"]: t for t in read_jsonl(root / "tasks.jsonl")}
    code_tools = tuple(t.strip() for t in args.code_tools.split(",") if t.strip())
    if args.stats < 0:
        raise ValueError(f"--stats: expected seconds >= 0, got {args.stats}")

    async def main():
        async with EnvService(args.workers, live_per_worker=args.live_per_worker,
                              step_timeout=args.step_timeout, code_tools=code_tools,
                              allow_unsandboxed=args.allow_unsandboxed,
                              pin_workers=not args.no_pin) as svc:
            def write(s):
                sys.stdout.write(s)
                sys.stdout.flush()
            await serve(svc, sys.stdin.readline, write, envs, tasks, args.stats)
    asyncio.run(main())
    return 0


add_subcommand("serve", "the environment service over JSON lines on stdin/stdout "
               "(--stats prints its metrics)", _configure, _cmd)
