"""``longcat data synth --envs DIR --out DIR``: verified agentic trajectories from built environments."""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("data", help="agentic training data synthesised from environments")
    sub = p.add_subparsers(dest="data_command", required=True)
    s = sub.add_parser("synth", help="verified multi-turn trajectories (OpenAI chat format) + held-out tasks")
    s.add_argument("--envs", default=None, help="a `longcat envs build` folder (default: build one into OUT/envs)")
    s.add_argument("--out", required=True, help="output folder: train.jsonl, eval_tasks.jsonl, eval_envs.jsonl, summary.json")
    s.add_argument("--count", type=int, default=2000, help="environments to build when --envs is not given")
    s.add_argument("--tasks-per-env", type=int, default=3)
    s.add_argument("--variants", default="all", help="all or a comma-separated subset of the variants")
    s.add_argument("--eval-fraction", type=float, default=0.1, help="share of environments held out for evaluation")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--workers", type=int, default=None)
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=cmd_synth)
    return p


def cmd_synth(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from longcat.data import envs_adapter as ea
    from longcat.data.synth import VARIANTS, synthesize

    variants = VARIANTS if args.variants == "all" else tuple(v.strip() for v in args.variants.split(",") if v.strip())
    t0 = time.perf_counter()
    envs = args.envs
    if envs is None:
        if args.count < 1:
            raise ValueError(f"--count: expected >= 1, got {args.count}")
        envs = Path(args.out) / "envs"
        ea.build_envs(envs, count=args.count, seed=args.seed, tasks_per_env=args.tasks_per_env,
                      workers=args.workers, progress=not args.no_progress)
    s = synthesize(envs, args.out, variants=variants, eval_fraction=args.eval_fraction, seed=args.seed,
                   workers=args.workers, progress=not args.no_progress)
    total = time.perf_counter() - t0
    print(f"data synth: {s['trajectories']} verified trajectories ({s['duplicates']} duplicates dropped) from "
          f"{s['train_tasks']} tasks of {s['train_envs']} environments; {s['eval_tasks']} held-out tasks in "
          f"{s['heldout_envs']} environments; {total:.1f} s in all -> {args.out}")
    return 0
