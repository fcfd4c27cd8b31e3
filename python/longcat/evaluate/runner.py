"""Evaluation of an agent on held-out environment tasks (``longcat eval``), clean and noisy.

The agent is a longcat checkpoint run through the engine (``LLM``; every active episode's next
turn is generated in one batch, the prompt rendered with ``longcat.data.format`` in the format
the checkpoint was fine-tuned with) or any OpenAI-compatible endpoint (``openai`` client, the
environment's tools passed as OpenAI function tools). Generated text is parsed into content and
tool calls by ``longcat.engine.chat.parse_assistant_text``; tool calls run in the environment,
text goes to the user simulator.

Metrics per condition (clean / noisy) and per tier (number of gold tool calls):
* ``success``  -- mean reward (1 = final database and every requested value right);
* ``pass^k``   -- probability that k samples of the same task all succeed, estimated from n
                  samples per task as C(c, k) / C(n, k) (tau-bench);
* ``partial``  -- credit for the parts: gold calls made with the gold arguments, requested values
                  told, database right, over their number;
* ``tokens``   -- generated tokens per task (and prompt tokens).
"""
from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from pathlib import Path
from typing import Mapping, Sequence

from longcat.data import envs_adapter as ea

__all__ = ["EvalConfig", "evaluate", "pass_hat_k", "partial_credit", "markdown_table", "load_heldout"]

CONDITIONS = {"clean": ea.CLEAN, "noisy": ea.NOISY_EVAL}


class EvalConfig:
    def __init__(self, conditions: Sequence[str] = ("clean", "noisy"), samples: int = 1, temperature: float = 0.0,
                 max_tokens: int = 128, max_turns: int = 12, max_tasks: int | None = None, tiers: Sequence[int] | None = None,
                 noise_intensity: float = 0.5, seed: int = 0, tool_format: str | None = None,
                 guided: bool = False, no_repeat_ngram: int = 0, copy_values: bool = False):
        unknown = [c for c in conditions if c not in CONDITIONS]
        if unknown or not conditions:
            raise ValueError(f"conditions: expected a non-empty subset of {list(CONDITIONS)}, got {list(conditions)}")
        for name, v in (("samples", samples), ("max_tokens", max_tokens), ("max_turns", max_turns)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
        if samples > 1 and temperature <= 0:
            raise ValueError(f"samples: {samples} samples need temperature > 0 (greedy decoding repeats one answer), "
                             f"got temperature {temperature}")
        self.conditions, self.samples, self.temperature = tuple(conditions), samples, float(temperature)
        self.max_tokens, self.max_turns, self.max_tasks = max_tokens, max_turns, max_tasks
        self.tiers = tuple(tiers) if tiers else None
        self.noise_intensity, self.seed, self.tool_format = noise_intensity, seed, tool_format
        # constrain tool calls to the episode's tools and their schemas (engine agents only)
        self.guided = bool(guided)
        # ... and each free string argument to a span of the conversation chosen by the model's
        # likelihood (longcat.engine.copying; implies guided)
        self.copy_values = bool(copy_values)
        self.guided = self.guided or self.copy_values
        # forbid repeating any n-gram of a turn's own output (0: off; engine agents only)
        if isinstance(no_repeat_ngram, bool) or not isinstance(no_repeat_ngram, int) or no_repeat_ngram == 1 \
                or no_repeat_ngram < 0:
            raise ValueError(f"no_repeat_ngram: expected 0 (off) or an int >= 2, got {no_repeat_ngram!r}")
        self.no_repeat_ngram = no_repeat_ngram


def apply_reply(conv, reply) -> None:
    """Plays one model reply in its episode; a malformed reply ends only that episode (logged in
    ``conv.info``)."""
    try:
        conv.apply(reply)
    except Exception as e:  # noqa: BLE001 - a malformed reply ends only its own episode
        conv.done = True
        conv.info = {"error": f"{type(e).__name__}: {e}"}


def load_heldout(folder: str | os.PathLike) -> tuple[dict, list]:
    """(environment records by id, tasks) of a ``longcat data synth`` folder's held-out split."""
    from longcat.data.format import read_jsonl

    folder = Path(folder)
    envs = {e["env_id"]: e for e in read_jsonl(folder / "eval_envs.jsonl")}
    tasks = [t for t in read_jsonl(folder / "eval_tasks.jsonl")]
    missing = sorted({t["env_id"] for t in tasks} - set(envs))
    if missing:
        raise ValueError(f"{folder / 'eval_tasks.jsonl'}: tasks of environments missing from eval_envs.jsonl: {missing[:3]}")
    return envs, tasks


def pass_hat_k(successes: Sequence[int], n: int, k: int) -> float:
    """Mean over tasks of C(c, k) / C(n, k): the chance that k of the n samples all succeed."""
    if not 1 <= k <= n:
        raise ValueError(f"k: expected 1 <= k <= n={n}, got {k}")
    if not successes:
        return 0.0
    return sum(math.comb(c, k) / math.comb(n, k) for c in successes) / len(successes)


def _canon(args) -> str:
    return json.dumps({str(k): str(v) for k, v in args.items()} if isinstance(args, Mapping) else str(args),
                      sort_keys=True)


def partial_credit(task: Mapping, episode: ea.Episode) -> float:
    """(gold calls made with their arguments + requested values told + database right) / their count."""
    made = Counter((n, _canon(a)) for n, a in episode.tool_calls)
    hit = 0
    for a in task["gold_actions"]:
        key = (a["name"], _canon(a["arguments"]))
        if made[key] > 0:
            made[key] -= 1
            hit += 1
    info = episode.reward_info or {}
    rub = sum(bool(x) for x in info.get("rubrics", []))
    db = 1 if info.get("db") else 0
    return (hit + rub + db) / (len(task["gold_actions"]) + len(task.get("rubrics", [])) + 1)


class _EngineAgent:
    """Batched turns from a checkpoint through ``LLM``."""

    def __init__(self, model: str, tool_format: str | None, engine_args: Mapping | None = None):
        from longcat.engine import LLM

        self.llm = LLM(model, **dict(engine_args or {}))
        meta = Path(model) / "sft_meta.json"
        fmt = json.loads(meta.read_text()).get("tool_format") if meta.is_file() else None
        self.tool_format = tool_format or fmt or "compact"
        self.name = str(model)
        self._guides: dict[str, object] = {}
        self._scorer = None     # the span scorer of --copy-values, made on first use
        self.copy_head = None   # and the checkpoint's copy head (copy_head.safetensors), when it has one
        self.model_dir = Path(model)
        self.has_copy_head = (self.model_dir / "copy_head.safetensors").is_file()

    def processors(self, conv, cfg: EvalConfig, prompt_ids: Sequence[int]) -> list | None:
        from longcat.engine.repetition import NoRepeatNGram

        procs = ([NoRepeatNGram(cfg.no_repeat_ngram)] if cfg.no_repeat_ngram else []) + \
            ([self.copying_guide(conv, prompt_ids)] if cfg.copy_values else
             [self.guide(conv.tools)] if cfg.guided else [])
        return procs or None

    def copying_guide(self, conv, prompt_ids: Sequence[int]):
        """A guide for one request whose free string arguments are spans of the user's and the
        tools' messages (``longcat.engine.copying``)."""
        from longcat.engine.guided import ToolCallGuide

        return ToolCallGuide(self.llm.tokenizer, conv.tools, copier=self.copier(conv.messages, prompt_ids))

    def copier(self, messages: Sequence[Mapping], prompt_ids: Sequence[int]):
        """The ``ContextCopier`` of one request: ranked by the checkpoint's copy head when it has
        one, else by the model's likelihood."""
        from longcat.engine.copying import ContextCopier, SpanScorer, copy_sources

        if self._scorer is None:
            from longcat.models.copy_head import CopyHead

            model = self.llm.engine.model
            self._scorer = SpanScorer(model)
            self.copy_head = CopyHead.load(self.model_dir, model.config.hidden_size, dtype=model.dtype,
                                           device=model.device)
        return ContextCopier(self._scorer, self.llm.tokenizer, prompt_ids, copy_sources(messages), head=self.copy_head)

    def guide(self, tools):
        """The tool-call guide of a tool list (one per distinct list: its token table is built once)."""
        from longcat.engine.guided import ToolCallGuide

        key = json.dumps(tools, sort_keys=True)
        if key not in self._guides:
            self._guides[key] = ToolCallGuide(self.llm.tokenizer, tools)
        return self._guides[key]

    def replies(self, convs, cfg: EvalConfig, seed: int) -> list[tuple[dict, int, int]]:
        from longcat.data.format import render
        from longcat.engine import SamplingParams
        from longcat.engine.chat import chat_stop_token_ids, parse_assistant_text

        tok = self.llm.tokenizer
        limit = self.llm.engine.max_model_len if hasattr(self.llm.engine, "max_model_len") else None
        prompts, params, idx = [], [], []
        out: list = [None] * len(convs)
        for i, c in enumerate(convs):
            ids = tok(render(c.messages, c.tools, self.tool_format, add_generation_prompt=True),
                      add_special_tokens=False)["input_ids"]
            if limit is not None and len(ids) + cfg.max_tokens > limit:
                # the context is full: the agent can only give up (the episode is scored as it stands)
                out[i] = ({"role": "assistant", "content": "###STOP###"}, len(ids), 0)
                continue
            prompts.append(ids)
            params.append(SamplingParams(temperature=cfg.temperature, max_tokens=cfg.max_tokens,
                                         stop_token_ids=chat_stop_token_ids(tok), seed=seed + i,
                                         logits_processors=self.processors(c, cfg, ids)))
            idx.append(i)
        if prompts:
            for i, comp in zip(idx, self.llm.generate(prompts, params)):
                o = comp.outputs[0] if comp.outputs else None
                text = o.text if o is not None else ""
                msg = parse_assistant_text(text)
                reply = {"role": "assistant", "content": msg.content}
                if msg.tool_calls:
                    reply["tool_calls"] = msg.tool_calls
                out[i] = (reply, len(comp.prompt_token_ids), len(o.token_ids) if o is not None else 0)
        return out


class _EndpointAgent:
    """Turns from an OpenAI-compatible chat completions endpoint, one conversation at a time."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None):
        from openai import OpenAI

        self.client = OpenAI(base_url=base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY", "none"))
        self.model = model
        self.name = f"{base_url} ({model})"
        self.tool_format = "json"

    def replies(self, convs, cfg: EvalConfig, seed: int) -> list[tuple[dict, int, int]]:
        out = []
        for c in convs:
            msgs = [{k: v for k, v in m.items() if k != "name" or m["role"] != "tool"} for m in c.messages]
            r = self.client.chat.completions.create(model=self.model, messages=msgs, tools=c.tools or None,
                                                    temperature=cfg.temperature, max_tokens=cfg.max_tokens)
            m = r.choices[0].message
            reply = {"role": "assistant", "content": m.content}
            if m.tool_calls:
                reply["tool_calls"] = [{"id": tc.id, "type": "function",
                                        "function": {"name": tc.function.name, "arguments": tc.function.arguments}}
                                       for tc in m.tool_calls]
            usage = r.usage
            out.append((reply, getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0))
        return out


def _run_condition(agent, envs: Mapping, tasks: Sequence[Mapping], cond: str, cfg: EvalConfig, bar) -> list[dict]:
    noise = ea.noise_config(CONDITIONS[cond], intensity=cfg.noise_intensity, seed=cfg.seed)
    rows = []
    for sample in range(cfg.samples):
        live = []
        for t in tasks:
            env = ea.make_env(envs[t["env_id"]], noise=noise, max_steps=4 * cfg.max_turns)
            conv = ea.Conversation(env, t, max_turns=cfg.max_turns)
            live.append({"task": t, "conv": conv, "prompt": 0, "gen": 0, "env": env})
        active = list(live)
        while active:
            replies = agent.replies([a["conv"] for a in active], cfg, seed=cfg.seed + 7919 * sample)
            for a, (reply, p, g) in zip(active, replies):
                a["prompt"] += p
                a["gen"] += g
                apply_reply(a["conv"], reply)
            finished = [a for a in active if a["conv"].done]
            active = [a for a in active if not a["conv"].done]
            if bar is not None and finished:
                bar.update(len(finished))
        for a in live:
            ep = a["conv"].result()
            rows.append({"task_id": a["task"]["task_id"], "domain": a["task"]["domain"], "tier": ea.tier_of(a["task"]),
                         "condition": cond, "sample": sample, "reward": ep.reward,
                         "partial": partial_credit(a["task"], ep), "prompt_tokens": a["prompt"],
                         "generated_tokens": a["gen"], "turns": a["conv"].turns, "tool_calls": len(ep.tool_calls)})
            a["env"].close()
    return rows


def _summarize(rows: Sequence[Mapping], samples: int) -> dict:
    by_task: dict[str, list] = {}
    for r in rows:
        by_task.setdefault(r["task_id"], []).append(r)
    succ = [sum(1 for r in rs if r["reward"] == 1.0) for rs in by_task.values()]
    n = len(rows) or 1
    return {"tasks": len(by_task), "episodes": len(rows),
            "success": sum(r["reward"] for r in rows) / n,
            **{f"pass^{k}": pass_hat_k(succ, samples, k) for k in range(1, samples + 1)},
            "partial": sum(r["partial"] for r in rows) / n,
            "generated_tokens_per_task": sum(r["generated_tokens"] for r in rows) / n,
            "prompt_tokens_per_task": sum(r["prompt_tokens"] for r in rows) / n}


def evaluate(envs: Mapping, tasks: Sequence[Mapping], *, model: str | None = None, endpoint: str | None = None,
             endpoint_model: str = "default", cfg: EvalConfig | None = None, out: str | os.PathLike | None = None,
             engine_args: Mapping | None = None, progress: bool = True) -> dict:
    """Scores the agent (``model`` checkpoint folder, or ``endpoint`` base URL) on ``tasks``;
    writes ``out``.json and ``out``.md when ``out`` is given; returns the results."""
    cfg = cfg or EvalConfig()
    if (model is None) == (endpoint is None):
        raise ValueError("evaluate: give exactly one of model (a checkpoint folder) or endpoint (a base URL)")
    if (cfg.guided or cfg.no_repeat_ngram) and endpoint is not None:
        raise ValueError("guided / copy_values / no_repeat_ngram: logits processors need a checkpoint run through the engine "
                         "(model=...), not an endpoint")
    if cfg.tiers:
        tasks = [t for t in tasks if ea.tier_of(t) in cfg.tiers]
    tasks = sorted(tasks, key=lambda t: t["task_id"])[:cfg.max_tasks] if cfg.max_tasks else list(tasks)
    if not tasks:
        raise ValueError("tasks: nothing to evaluate (no held-out task in the selected tiers)")
    agent = _EngineAgent(model, cfg.tool_format, engine_args) if model is not None else _EndpointAgent(endpoint, endpoint_model)
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(tasks) * cfg.samples * len(cfg.conditions), desc="eval", unit="episode")
    rows = []
    try:
        for cond in cfg.conditions:
            rows += _run_condition(agent, envs, tasks, cond, cfg, bar)
    finally:
        if bar is not None:
            bar.close()
    result: dict = {"agent": agent.name, "tool_format": agent.tool_format, "samples": cfg.samples, "guided": cfg.guided,
                    "copy_values": cfg.copy_values,
                    "copy_ranker": (None if not cfg.copy_values else
                                    "head" if getattr(agent, "has_copy_head", False) else "likelihood"),
                    "no_repeat_ngram": cfg.no_repeat_ngram,
                    "temperature": cfg.temperature, "seconds": time.perf_counter() - t0, "conditions": {}}
    for cond in cfg.conditions:
        cr = [r for r in rows if r["condition"] == cond]
        tiers = sorted({r["tier"] for r in cr})
        result["conditions"][cond] = {"all": _summarize(cr, cfg.samples),
                                      "tiers": {str(t): _summarize([r for r in cr if r["tier"] == t], cfg.samples)
                                                for t in tiers}}
    result["episodes"] = rows
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(result, indent=2))
        out.with_suffix(".md").write_text(markdown_table(result))
    return result


def markdown_table(result: Mapping) -> str:
    ks = [k for k in next(iter(result["conditions"].values()))["all"] if k.startswith("pass^")]
    head = ["condition", "tier (gold calls)", "tasks", "success", *ks, "partial", "gen tokens/task", "prompt tokens/task"]
    lines = [f"Agent: `{result['agent']}` (tools: {result['tool_format']}, samples per task: {result['samples']})", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cond, c in result["conditions"].items():
        for tier, s in [("all", c["all"]), *c["tiers"].items()]:
            lines.append("| " + " | ".join([cond, tier, str(s["tasks"]), f"{s['success']:.3f}",
                                            *[f"{s[k]:.3f}" for k in ks], f"{s['partial']:.3f}",
                                            f"{s['generated_tokens_per_task']:.0f}",
                                            f"{s['prompt_tokens_per_task']:.0f}"]) + " |")
    return "\n".join(lines) + "\n"
