"""``longcat heavy``: Heavy Thinking on a question or a task file, with a checkpoint (the built-in
engine) or an OpenAI-compatible endpoint.

    longcat heavy "12+7=" --model ckpt --k 8 --rounds 1 --template compact
    longcat heavy --task-file tasks.jsonl --endpoint http://127.0.0.1:8000 --k 4 --chat

A task file holds one task per line: JSON ``{"prompt": ..., "answer": ...}`` (answer optional;
with answers the accuracy is printed) or plain text (one question per line).
"""
from __future__ import annotations

import argparse
import json
import sys

from longcat.heavy.templates import TEMPLATES
from longcat.cli import bounded

__all__ = ["add_parser", "read_tasks"]


def read_tasks(path: str) -> list[dict]:
    """The tasks of a task file (see module docstring); a bad line is a ValueError naming it."""
    tasks = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            if line.startswith("{"):
                try:
                    obj = json.loads(line)
                except ValueError as e:
                    raise ValueError(f"task file {path}, line {lineno}: invalid JSON ({e})") from None
                if not isinstance(obj.get("prompt"), str) or not obj["prompt"]:
                    raise ValueError(f"task file {path}, line {lineno}: expected a non-empty string 'prompt', "
                                     f"got {obj.get('prompt')!r}")
                tasks.append(obj)
            else:
                tasks.append({"prompt": line})
    if not tasks:
        raise ValueError(f"task file {path}: no task in it")
    return tasks


def _answer_fn(name: str):
    if name == "arith":
        from longcat.tasks.arith import parse_answer

        return parse_answer
    from longcat.heavy.decoder import default_answer

    return default_answer


def cmd_heavy(args: argparse.Namespace) -> int:
    from longcat.heavy import EndpointError, EngineBackend, HeavyConfig, HeavyThinker, OpenAIBackend

    try:
        config = HeavyConfig(k=args.k, rounds=args.rounds, temperature=args.temperature,
                             summary_temperature=args.summary_temperature, seed=args.seed, max_tokens=args.max_tokens,
                             summary_max_tokens=args.summary_max_tokens, candidate_budget=args.candidate_budget,
                             context_budget=args.context_budget, template=args.template)
        tasks = read_tasks(args.task_file) if args.task_file else [{"prompt": args.question}]
        if args.endpoint:
            backend = OpenAIBackend(args.endpoint, model=args.served_model, api_key=args.api_key, timeout=args.timeout)
        else:
            backend = EngineBackend(args.model, max_model_len=args.max_model_len)
        heavy = HeavyThinker(backend, config, answer_fn=_answer_fn(args.answer_format))
        questions = [[{"role": "user", "content": t["prompt"]}] if args.chat else t["prompt"] for t in tasks]
        results = heavy.think_batch(questions)
    except (ValueError, EndpointError, OSError) as e:
        print(f"longcat heavy: error: {e}", file=sys.stderr)
        return 2
    correct = 0
    for task, res in zip(tasks, results):
        ok = None
        if "answer" in task:
            ok = res.answer == task["answer"] or str(res.answer) == str(task["answer"])
            correct += ok
        line = {"prompt": task["prompt"], "answer_text": res.answer_text, "answer": res.answer,
                "correct": ok, "generated_tokens": res.generated_tokens, "prompt_tokens": res.prompt_tokens,
                "candidates": [c.answer_content for c in res.candidates], "failed_candidates": res.num_failed,
                "dropped_candidates": res.num_dropped, "all_candidates_unparseable": res.all_unparseable}
        if args.json:
            print(json.dumps(line, ensure_ascii=False, default=str))
        else:
            flags = []
            if res.num_failed:
                flags.append(f"{res.num_failed} candidate(s) failed at the endpoint")
            if res.num_dropped:
                flags.append(f"{res.num_dropped} unfinished dropped")
            if res.all_unparseable:
                flags.append("no candidate answer parsed")
            print(f"{task['prompt']!r} -> {res.answer_text!r}"
                  + ("" if ok is None else f" [{'right' if ok else 'wrong'}]")
                  + f"  ({res.generated_tokens} tokens{'; ' + '; '.join(flags) if flags else ''})")
    scored = sum("answer" in t for t in tasks)
    if scored:
        print(f"accuracy: {correct}/{scored}", file=sys.stderr if args.json else sys.stdout)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("heavy", help="Heavy Thinking: K parallel answers, then a summary step (a question or task file)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("question", nargs="?", help="the question (or use --task-file)")
    p.add_argument("--task-file", help="one task per line: JSON {prompt, answer?} or plain text")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="checkpoint folder (the built-in engine)")
    src.add_argument("--endpoint", help="base URL of an OpenAI-compatible server (longcat serve, vLLM, SGLang)")
    p.add_argument("--served-model", help="model name at the endpoint (default: the first it lists)")
    p.add_argument("--api-key", default=None)
    p.add_argument("--timeout", type=bounded(float, 0.001), default=120.0, help="seconds per HTTP request")
    p.add_argument("--max-model-len", type=bounded(int, 2), default=4096, help="engine context length")
    p.add_argument("--k", type=bounded(int, 1, 64), default=4, help="parallel candidates (width), default 4")
    p.add_argument("--rounds", type=bounded(int, 1, 16), default=1, help="summary rounds (depth), default 1")
    p.add_argument("--temperature", type=bounded(float, 0.0, 2.0), default=1.0)
    p.add_argument("--summary-temperature", type=bounded(float, 0.0, 2.0), default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-tokens", type=bounded(int, 1), default=1024, help="per candidate")
    p.add_argument("--summary-max-tokens", type=bounded(int, 1), default=1024)
    p.add_argument("--candidate-budget", type=bounded(int, 1), default=2048,
                   help="most tokens of one candidate's answer shown to the summary")
    p.add_argument("--context-budget", type=bounded(int, 1), default=16384,
                   help="most tokens of all shown answers together")
    p.add_argument("--template", choices=sorted(TEMPLATES), default="verbose",
                   help="summary prompt layout: verbose (chat models), compact (the arith warm start), tally "
                        "(compact with identical answers merged and counted), tally-first, or pick (a tally the "
                        "summary answers by number; the decoder copies that answer)")
    p.add_argument("--chat", action="store_true", help="send the question as a chat message (else a completion prompt)")
    p.add_argument("--answer-format", choices=["text", "arith"], default="text",
                   help="how answers are compared: whole answer text, or the last integer (arith)")
    p.add_argument("--json", action="store_true", help="one JSON object per task")
    p.set_defaults(func=_checked)
    _add_train_summary_parser(sub)


def _add_train_summary_parser(sub) -> None:
    from longcat.heavy.train_summary import ANSWER_FORMATS, SUMMARY_LAYOUTS, WHEN_ABSENT, SummaryTuneConfig

    d = SummaryTuneConfig()
    p = sub.add_parser("heavy-train-summary", help="fine-tune the summary step (compact arith layout) on the "
                       "model's own candidates", description="Supervised summary-step fine-tune "
                       "(longcat.heavy.train_summary): samples the model's candidates on training problems kept "
                       "out of `longcat bench heavy`, trains on summary prompts mixed with plain task samples, "
                       "writes the checkpoint and summary_tune.json to --out.")
    p.add_argument("--model", required=True, help="the starting checkpoint folder (left untouched)")
    p.add_argument("--out", required=True, help="folder of the fine-tuned checkpoint (replaced)")
    p.add_argument("--steps", type=bounded(int, 1), default=d.steps)
    p.add_argument("--batch-size", type=bounded(int, 1), default=d.batch_size)
    p.add_argument("--lr", type=bounded(float, 1e-12), default=d.lr)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--max-operand", type=bounded(int, 1), default=d.max_operand, help="of the training problems")
    p.add_argument("--eval-max-operand", type=bounded(int, 1), default=d.eval_max_operand,
                   help="the bench's LONGCAT_HEAVY_MAX_OPERAND: its problems are kept out of training")
    p.add_argument("--task-max-operand", type=bounded(int, 1), default=None,
                   help="plain task examples only from training problems with operands <= this (default: all)")
    p.add_argument("--n-terms", type=bounded(int, 2), default=d.n_terms,
                   help="terms per expression (the bench evaluates the same family)")
    p.add_argument("--template", choices=SUMMARY_LAYOUTS, default=d.template,
                   help="summary layout trained (and used by longcat bench heavy on this checkpoint)")
    p.add_argument("--n-problems", type=bounded(int, 1), default=d.n_problems)
    p.add_argument("--samples-per-problem", type=bounded(int, 1), default=d.samples_per_problem)
    p.add_argument("--summary-fraction", type=bounded(float, 0.0, 1.0), default=d.summary_fraction,
                   help="share of summary examples per batch (0: a task fine-tune, no candidates sampled)")
    p.add_argument("--answer-format", choices=ANSWER_FORMATS, default=d.answer_format,
                   help="training targets: the bare result, or worked step by step (4+5-3= -> 9-3=6)")
    p.add_argument("--temperature", type=bounded(float, 0.0, 2.0), default=d.temperature,
                   help="of the sampled candidates (use the bench's LONGCAT_HEAVY_TEMPERATURE)")
    p.add_argument("--max-candidates", type=bounded(int, 1), default=d.max_candidates,
                   help="most candidates in one summary example")
    p.add_argument("--when-absent", choices=WHEN_ABSENT, default=d.when_absent,
                   help="a summary draw whose candidates miss the true answer: skip it, or target the truth")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_train_summary)


def cmd_train_summary(args: argparse.Namespace) -> int:
    from longcat.heavy.train_summary import SummaryTuneConfig, train_summary

    try:
        cfg = SummaryTuneConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                max_operand=args.max_operand, eval_max_operand=args.eval_max_operand,
                                task_max_operand=args.task_max_operand, n_terms=args.n_terms, template=args.template,
                                n_problems=args.n_problems, samples_per_problem=args.samples_per_problem,
                                summary_fraction=args.summary_fraction, when_absent=args.when_absent,
                                answer_format=args.answer_format, temperature=args.temperature,
                                max_candidates=args.max_candidates)
        train_summary(args.model, args.out, cfg, device=args.device)
    except (ValueError, OSError) as e:
        print(f"longcat heavy-train-summary: error: {e}", file=sys.stderr)
        return 2
    return 0


def _checked(args: argparse.Namespace) -> int:
    if bool(args.question) == bool(args.task_file):
        print("longcat heavy: error: give a question or --task-file (one of them)", file=sys.stderr)
        return 2
    return cmd_heavy(args)
