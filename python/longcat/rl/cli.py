"""``longcat rl train --recipe rl/<name>.yaml [--out DIR] [--max-steps N] [--init CKPT] [--ray]``;
also ``torchrun --nproc_per_node N -m longcat rl train ...`` (a data-parallel trainer over N ranks)."""
from __future__ import annotations

import argparse
import os


def cmd_train(args: argparse.Namespace) -> int:
    from longcat.rl.distributed import launched_by_torchrun, torchrun_main

    if launched_by_torchrun():
        # Rank 0 is the single controller (rollouts, buffer, checkpoints, trainer rank 0); the
        # other ranks only train their share of each batch (longcat.rl.distributed).
        return torchrun_main(lambda: _train(args))
    return _train(args)


def _train(args: argparse.Namespace) -> int:
    from longcat.rl import train

    out = args.out or os.path.join("runs", os.path.splitext(os.path.basename(args.recipe))[0])
    if args.ray_address is not None and not args.ray:
        raise ValueError("rl train: '--ray-address' needs '--ray'")
    res = train(args.recipe, out, max_steps=args.max_steps, progress=not args.no_progress, init=args.init,
                backend="ray" if args.ray else "local", ray_address=args.ray_address)
    print(f"steps: {res.steps}  final reward: {res.final_reward:.3f}" + (f"  (resumed from {res.resumed_from})"
                                                                        if res.resumed_from else ""))
    if res.stopped:
        print(f"stopped early: {res.stopped}")
    print(f"checkpoint: {res.checkpoint_dir}\nmetrics: {res.metrics_path}\nplots: {', '.join(res.plots)}")
    return 1 if res.stopped else 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("rl", help="asynchronous RL training (DORA-style streaming rollouts)")
    sub = p.add_subparsers(dest="rl_command", required=True)
    t = sub.add_parser("train", help="train a policy from a recipe; resumes from --out's latest checkpoint")
    t.add_argument("--recipe", required=True, help="a recipe YAML (see rl/*.yaml)")
    t.add_argument("--out", default=None, help="run folder (default runs/<recipe name>)")
    t.add_argument("--max-steps", type=int, default=None, help="override train.steps")
    t.add_argument("--init", default=None, help="warm-start checkpoint (e.g. an SFT checkpoint); overrides "
                   "the recipe's model.checkpoint")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--ray", action="store_true",
                   help="generators, reward or environment workers and the trainer as Ray actors "
                   "(pip install 'longcat[ray]')")
    t.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="join this Ray cluster (default: a local one, or RAY_ADDRESS)")
    t.set_defaults(func=cmd_train)
