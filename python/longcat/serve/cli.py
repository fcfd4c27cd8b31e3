"""``longcat serve`` (the OpenAI-compatible server), ``longcat generate`` (one completion printed)
and ``longcat models init`` (a randomly initialised checkpoint with the trained tokenizer).

``add_parser(subparsers)`` registers the three commands (``longcat.cli`` calls it)."""
from __future__ import annotations

import argparse
import os
import sys

from longcat.cli import bounded  # re-exported: the shared argparse type lives with the top-level CLI

__all__ = ["add_parser", "bounded"]


MAX_LEN = 1 << 24  # 16M tokens: beyond any context this package runs; larger numbers are typos


def _engine_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine")
    g.add_argument("--max-model-len", type=bounded(int, 2, MAX_LEN), default=None,
                   help="longest prompt + completion (default: the config's max_position_embeddings)")
    g.add_argument("--max-num-seqs", type=bounded(int, 1, 1 << 16), default=64, help="sequences per step (default 64)")
    g.add_argument("--max-num-batched-tokens", type=bounded(int, 1, MAX_LEN), default=2048,
                   help="token budget per step, chunked prefill (default 2048)")
    g.add_argument("--page-size", type=bounded(int, 1, 1 << 16), default=64, help="KV-cache page size (default 64)")
    g.add_argument("--num-pages", type=bounded(int, 1, 1 << 24), default=None, help="KV-cache pages (default: sized)")
    g.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                   help="weights dtype (default: the checkpoint's)")
    g.add_argument("--seed", type=int, default=0, help="sampling seed (serve: of requests that give none; "
                                                       "default 0)")


def _engine_args(args: argparse.Namespace) -> dict:
    return {"max_model_len": args.max_model_len, "max_num_seqs": args.max_num_seqs,
            "max_num_batched_tokens": args.max_num_batched_tokens, "page_size": args.page_size,
            "num_pages": args.num_pages, "dtype": args.dtype, "seed": args.seed}


def _checkpoint(path: str) -> str:
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(f"--model: {path!r} is not a checkpoint folder (no config.json); "
                         "make one with `longcat models init --preset tiny --out DIR`")
    return path


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from longcat.engine import AsyncEngine
    from longcat.serve.app import build_app

    engine = AsyncEngine.from_pretrained(_checkpoint(args.model), **_engine_args(args))
    name = args.served_model_name or args.model
    app = build_app(engine, name, api_key=args.api_key)
    print(f"longcat serve: {name!r} on http://{args.host}:{args.port}/v1", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from longcat.engine import LLM, SamplingParams
    from longcat.engine.chat import chat_stop_token_ids, render_prompt

    llm = LLM(_checkpoint(args.model), **_engine_args(args))
    stops = None
    prompt = args.prompt
    if args.chat:
        prompt = render_prompt(llm.tokenizer, [{"role": "user", "content": args.prompt}])
        stops = chat_stop_token_ids(llm.tokenizer) or None
    params = SamplingParams(temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                            max_tokens=args.max_tokens, stop_token_ids=stops)
    out = llm.generate(prompt, params)[0]
    if out.error:
        raise ValueError(f"--prompt: {out.error}")
    print(out.outputs[0].text)
    return 0


def cmd_models_init(args: argparse.Namespace) -> int:
    from longcat.models.random_init import init_checkpoint

    out = init_checkpoint(args.out, preset=args.preset, seed=args.seed, dtype=args.dtype,
                          max_position_embeddings=args.max_position_embeddings)
    print(f"wrote a randomly initialised {args.preset!r} checkpoint (seed {args.seed}, {args.dtype}) "
          f"with its tokenizer to {out}")
    return 0


def _reporting(func):
    """Bad input a user gave (ValueError) ends the command with its message, not a traceback."""
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except ValueError as e:
            print(f"longcat {args.command}: error: {e}", file=sys.stderr)
            return 2
    return run


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="OpenAI-compatible HTTP server for a checkpoint")
    p.add_argument("--model", required=True, help="checkpoint folder (config.json, safetensors, tokenizer)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=bounded(int, 1, 65535), default=8000, help="port (default 8000)")
    p.add_argument("--served-model-name", default=None, help="the model id clients send (default: --model)")
    p.add_argument("--api-key", default=os.environ.get("LONGCAT_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on /v1/* (default $LONGCAT_API_KEY; none: open)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    _engine_arguments(p)
    p.set_defaults(func=_reporting(cmd_serve))

    g = sub.add_parser("generate", help="generate one completion and print it")
    g.add_argument("--model", required=True, help="checkpoint folder")
    g.add_argument("--prompt", required=True, help="prompt text (with --chat: the user message)")
    g.add_argument("--chat", action="store_true", help="wrap the prompt as a user turn of the chat template")
    g.add_argument("--max-tokens", type=bounded(int, 1, MAX_LEN), default=32, help="tokens to generate at most (default 32)")
    g.add_argument("--temperature", type=bounded(float, 0.0, 100.0), default=0.0, help="0 = greedy (default)")
    g.add_argument("--top-p", type=bounded(float, 1e-9, 1.0), default=1.0, help="nucleus mass (default 1)")
    _engine_arguments(g)
    g.set_defaults(func=_reporting(cmd_generate))

    m = sub.add_parser("models", help="model checkpoints")
    msub = m.add_subparsers(dest="models_command", required=True)
    init = msub.add_parser("init", help="write a randomly initialised checkpoint + the trained tokenizer")
    init.add_argument("--preset", default="tiny", help="model preset with the 4096-id vocabulary: tiny, "
                                                       "tiny-zigzag, small (default tiny)")
    init.add_argument("--out", required=True, help="folder to write (created)")
    init.add_argument("--seed", type=int, default=0, help="weights and tokenizer seed (default 0)")
    init.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    init.add_argument("--max-position-embeddings", type=bounded(int, 2, MAX_LEN), default=None,
                      help="override the preset's context length")
    init.set_defaults(func=_reporting(cmd_models_init))
