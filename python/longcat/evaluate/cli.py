"""``longcat eval (--model CKPT | --endpoint URL) --data DIR --out PATH``."""
from __future__ import annotations

import argparse

from longcat.data.format import TOOL_FORMATS


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("eval", help="score a checkpoint or an OpenAI-compatible endpoint on held-out tasks")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="checkpoint folder (run through the longcat engine)")
    src.add_argument("--endpoint", help="base URL of an OpenAI-compatible server, e.g. http://localhost:8000/v1")
    p.add_argument("--endpoint-model", default="default", help="model name sent to the endpoint")
    p.add_argument("--data", required=True, help="a `longcat data synth` folder (eval_tasks.jsonl + eval_envs.jsonl)")
    p.add_argument("--out", required=True, help="results path without suffix: writes OUT.json and OUT.md")
    p.add_argument("--conditions", default="clean,noisy", help="clean, noisy or both (default)")
    p.add_argument("--samples", type=int, default=1, help="samples per task (pass^k for k <= samples)")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--max-tasks", type=int, default=None)
    p.add_argument("--tiers", default=None, help="comma-separated gold-call counts to keep, e.g. 2,3")
    p.add_argument("--max-turns", type=int, default=12)
    p.add_argument("--max-tokens", type=int, default=128, help="most tokens per assistant turn")
    p.add_argument("--tool-format", default=None, choices=list(TOOL_FORMATS),
                   help="prompt format (default: the one the checkpoint was fine-tuned with)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--guided", action="store_true",
                   help="constrain tool calls to the task's tools and their JSON schemas (--model only)")
    p.add_argument("--copy-values", action="store_true",
                   help="--guided, and each free string argument is a span of the user's or the tools' messages, "
                        "the one the model scores highest (--model only)")
    p.add_argument("--no-repeat-ngram", type=int, default=0,
                   help="forbid repeating any n-gram of a turn's own output, e.g. 4 (0: off; --model only)")
    p.add_argument("--diagnose", action="store_true",
                   help="instead of episodes, grade the model's turns on the reference agent's prefixes "
                        "(tool kind, name, argument keys, copied values, told values; --model only)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_eval)
    return p


def cmd_eval(args: argparse.Namespace) -> int:
    from longcat.evaluate import EvalConfig, evaluate, load_heldout, markdown_table

    tiers = [int(x) for x in args.tiers.split(",")] if args.tiers else None
    cfg = EvalConfig(conditions=[c.strip() for c in args.conditions.split(",") if c.strip()], samples=args.samples,
                     temperature=args.temperature, max_tokens=args.max_tokens, max_turns=args.max_turns,
                     max_tasks=args.max_tasks, tiers=tiers, seed=args.seed, tool_format=args.tool_format,
                     guided=args.guided, no_repeat_ngram=args.no_repeat_ngram, copy_values=args.copy_values)
    envs, tasks = load_heldout(args.data)
    if args.diagnose:
        import json

        from longcat.evaluate.diagnose import diagnose, diagnosis_table

        if args.model is None:
            raise ValueError("--diagnose: needs --model (a checkpoint folder), not --endpoint")
        d = diagnose(envs, tasks, args.model, tiers=tiers, max_tasks=args.max_tasks, max_tokens=args.max_tokens,
                     tool_format=args.tool_format, guided=args.guided, copy_values=args.copy_values)
        with open(f"{args.out}.json", "w") as f:
            json.dump(d, f, indent=2)
        print(diagnosis_table(d))
        print(f"-> {args.out}.json")
        return 0
    r = evaluate(envs, tasks, model=args.model, endpoint=args.endpoint, endpoint_model=args.endpoint_model, cfg=cfg,
                 out=args.out, progress=not args.no_progress)
    print(markdown_table(r))
    print(f"-> {args.out}.json, {args.out}.md")
    return 0
