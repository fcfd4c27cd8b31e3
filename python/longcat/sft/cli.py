"""``longcat sft --data train.jsonl --model CKPT --out DIR``."""
from __future__ import annotations

import argparse
import os

from longcat.data.format import TOOL_FORMATS
from longcat.cli import bounded


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("sft", help="supervised fine-tuning on chat trajectories (resumable, torchrun-aware)")
    p.add_argument("--data", required=True, action="append",
                   help="a JSON-lines file of trajectories in OpenAI chat format (repeatable)")
    p.add_argument("--model", required=True, help="checkpoint folder to start from (config.json + weights + tokenizer)")
    p.add_argument("--out", required=True, help="output folder (checkpoint-<step>/, final/, metrics.jsonl)")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--truncate", action="store_true",
                   help="cut conversations longer than --seq-len after their last assistant turn that fits "
                        "(default: drop them)")
    p.add_argument("--context-weight", type=float, default=0.0,
                   help="loss weight of the non-assistant tokens (system, user, tool results), 0-1 (default 0: "
                        "assistant tokens only)")
    p.add_argument("--max-tier", type=bounded(int, 1, 1000), default=None,
                   help="train only on trajectories whose tier (gold tool calls) is at most this (default: all)")
    p.add_argument("--copy-head", action="store_true",
                   help="also train a pointer head that ranks the conversation's spans for `longcat eval "
                        "--copy-values` (saved beside the checkpoint as copy_head.safetensors)")
    p.add_argument("--copy-weight", type=bounded(float, 0.0, 100.0), default=1.0,
                   help="loss weight of the copy head's start + end cross entropy per copied value (default 1)")
    p.add_argument("--micro-batch", type=int, default=1, help="packed rows per micro-batch (per process)")
    p.add_argument("--grad-accum", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3,
                   help="peak learning rate (default 1e-3: at 3e-3 the tiny preset's attention collapses)")
    p.add_argument("--warmup-steps", type=int, default=10)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--max-seconds", type=float, default=None, help="stop and save after this much training time")
    p.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32"],
                   help="training dtype (default auto: bfloat16 where the CPU multiplies it natively, else float32)")
    p.add_argument("--save-every", type=int, default=50)
    p.add_argument("--tool-format", default="compact", choices=list(TOOL_FORMATS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_sft)
    return p


def cmd_sft(args: argparse.Namespace) -> int:
    from longcat.sft import SFTConfig, train

    cfg = SFTConfig(seq_len=args.seq_len, micro_batch=args.micro_batch, grad_accum=args.grad_accum, lr=args.lr,
                    warmup_steps=args.warmup_steps, epochs=args.epochs, max_steps=args.max_steps,
                    max_seconds=args.max_seconds, dtype=args.dtype, save_every=args.save_every,
                    tool_format=args.tool_format, seed=args.seed, truncate=args.truncate,
                    context_weight=args.context_weight, max_tier=args.max_tier,
                    copy_head=args.copy_head, copy_weight=args.copy_weight)
    r = train(args.data, args.model, args.out, cfg, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) != 0:     # under torchrun: one summary, from rank 0
        return 0
    print(f"sft: {r.steps} steps (resumed from {r.resumed_from}), {r.examples} conversations "
          f"({r.dropped_too_long} longer than --seq-len dropped), {r.tokens_trained} assistant tokens trained, "
          f"final loss {r.final_loss if r.final_loss is None else round(r.final_loss, 4)}, {r.seconds:.1f} s "
          f"-> {r.checkpoint_dir}")
    return 0
