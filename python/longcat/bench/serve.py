"""Serving benchmark: the OpenAI-compatible server (HTTP + SSE through the ``openai`` client)
against the same requests sent straight to the ``AsyncEngine`` in process (the peer), same run.

A randomly initialised ``tiny`` checkpoint answers ``concurrency`` chat requests at once, each
streaming ``max_tokens`` tokens (``ignore_eos``, so every run produces the same number of
tokens). Reported per concurrency: output tokens/s and the median time to first token for both
paths, and the ratio of wall times (the cost of HTTP, JSON and SSE on top of the engine). The
client runs in the server's process, so its own parsing counts against the HTTP path too.
"""
from __future__ import annotations

import asyncio
import statistics
import tempfile
import time

from longcat.bench.common import BenchResult, machine_info

USER = "Please look up order O-000042 and tell me when it ships."


async def _direct(engine, prompt: str, params) -> tuple[float, int]:
    t0 = time.perf_counter()
    ttft, tokens = None, 0
    async for out in engine.generate(prompt, params):
        if ttft is None:
            ttft = time.perf_counter() - t0
        tokens = len(out.outputs[0].token_ids)
    return ttft, tokens


async def _http(client, model: str, max_tokens: int, seed: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    ttft, tokens = None, 0
    stream = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": USER}], max_tokens=max_tokens, seed=seed,
        stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
    async for chunk in stream:
        if ttft is None and chunk.choices and chunk.choices[0].delta.role is None:
            ttft = time.perf_counter() - t0
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return ttft, tokens


async def _round(fn, concurrency: int) -> tuple[float, list[float], int]:
    t0 = time.perf_counter()
    results = await asyncio.gather(*(fn(i) for i in range(concurrency)))
    wall = time.perf_counter() - t0
    return wall, [r[0] for r in results], sum(r[1] for r in results)


def run(device: str = "cpu", quick: bool = False) -> BenchResult:
    import openai

    from longcat.engine import AsyncEngine, SamplingParams
    from longcat.engine.chat import render_prompt
    from longcat.models.random_init import init_checkpoint
    from longcat.serve import ServerThread, build_app

    if device != "cpu":
        raise ValueError(f"device: the serving benchmark runs on cpu (the engine loads checkpoints there), "
                         f"got {device!r}")
    levels = [1, 8] if quick else [1, 8, 32]
    max_tokens = 16 if quick else 64
    repeats = 2 if quick else 3
    result = BenchResult(
        area="serve", title=f"longcat serve vs AsyncEngine in process (tiny, {max_tokens} streamed tokens/request)",
        columns=["concurrency", "engine tok/s", "http tok/s", "engine ttft ms", "http ttft ms", "http/engine wall"])
    result.context["machine"] = machine_info(device)
    result.context["max_tokens"] = max_tokens
    result.context["repeats (median)"] = repeats
    model = "tiny"
    with tempfile.TemporaryDirectory() as tmp:
        init_checkpoint(tmp, "tiny", seed=0)
        engine = AsyncEngine.from_pretrained(tmp, max_model_len=512, max_num_seqs=max(levels))
        with ServerThread(build_app(engine, model)) as server:
            prompt = render_prompt(engine.tokenizer, [{"role": "user", "content": USER}])

            def params(seed):   # as the server builds them for a chat request with ignore_eos
                return SamplingParams(max_tokens=max_tokens, seed=seed, ignore_eos=True)

            async def measure_all():
                client = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)
                await _round(lambda i: _direct(engine, prompt, params(i)), 2)     # warm-up both paths
                await _round(lambda i: _http(client, model, max_tokens, i), 2)
                for c in levels:
                    runs = {"engine": [], "http": []}
                    for _ in range(repeats):   # interleaved, so load changes hit both alike
                        runs["engine"].append(await _round(lambda i: _direct(engine, prompt, params(i)), c))
                        runs["http"].append(await _round(lambda i: _http(client, model, max_tokens, i), c))
                    row = {"concurrency": c}
                    for name, rs in runs.items():
                        assert all(tokens == c * max_tokens for _, _, tokens in rs), f"{name}: short output"
                        wall = statistics.median(w for w, _, _ in rs)
                        row[f"{name} tok/s"] = c * max_tokens / wall
                        row[f"{name} ttft ms"] = 1e3 * statistics.median(t for _, ts, _ in rs for t in ts)
                        row[f"{name} wall"] = wall
                    row["http/engine wall"] = row["http wall"] / row["engine wall"]
                    result.add(**row)
                await client.close()

            asyncio.run(measure_all())
    return result


def main(argv: list[str] | None = None) -> None:
    from longcat.cli import main as cli_main

    cli_main(["bench", "serve", *(argv or [])])
