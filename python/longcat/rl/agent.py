"""Multi-turn environment RL (report section 4.3): the policy talks to an environment through
its tools and the user simulator, turn by turn, until the episode ends.

One trajectory is token-in, token-out: the engine is fed the exact ids the trainer will see.
Each assistant turn's generated tokens (with the engine's logprobs and the pinned version) go
into the sequence with loss mask 1; what the environment answers (tool results, user turns, the
chat template's markers between turns) is tokenised and appended with mask 0. Hybrid context
management (``longcat.rl.context``) may restart the sequence from the system prompt and the
question (discard) or from them plus a summary the policy writes (summarize): a trajectory is then
several segments, each a ``Sample`` of its own, all with the episode's reward and the same
``trajectory`` index, so the trainer gives them one advantage. The summary itself is a segment:
the policy is trained on the summaries it writes, with the reward of the episode they served.

The episode's reward is the environment's (1 = database and every requested value right), or
the partial credit of ``longcat.evaluate.runner.partial_credit`` when the recipe says
``envs.reward: partial``. The ``NoiseCurriculum`` picks the noise of the noisy episodes and is
fed the clean/noisy reward gap once per trainer step (``AgentTask.on_step``)."""
from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import os
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

from longcat.rl.context import ContextConfig, manage_context
from longcat.rl.protocols import Sample

SUMMARY_REQUEST = ("Summarise the tool calls you made so far and what they returned, in a few lines, "
                   "so you can continue the task from the summary alone.")


class ContextFull(RuntimeError):
    """The next turn would not fit the engine's ``max_model_len``: the episode ends as it stands."""


@dataclass
class _Segment:
    """One token sequence fed to the engine: the prompt, then turns (mask 1 on generated tokens)."""
    prompt: list[int]
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    text: str = ""

    @property
    def length(self) -> int:
        return len(self.prompt) + len(self.ids)

    def add(self, ids: list[int], logprobs: Optional[list[float]], trained: bool) -> None:
        self.ids += ids
        self.logprobs += list(logprobs) if logprobs is not None else [0.0] * len(ids)
        self.mask += [int(trained)] * len(ids)

    def sample(self, version: int) -> Sample:
        return Sample(list(self.prompt), list(self.ids), list(self.logprobs), [version] * len(self.ids), self.text,
                      "stop", loss_mask=list(self.mask))


class EnvTaskSource:
    """uid -> (task record, ids naming the task). Task ``uid`` is drawn from its own seed, so a
    re-queued prompt is the same task after a resume. The ids are the tokenised task id (the
    rollout budget's pass-rate key); the real prompt is rendered when the episode starts."""

    def __init__(self, tasks: list[dict], tokenizer, seed: int = 0):
        if not tasks:
            raise ValueError("EnvTaskSource: 'tasks' is empty; expected at least one environment task")
        self.tasks = sorted(tasks, key=lambda t: t["task_id"])
        self.tokenizer, self.seed = tokenizer, seed

    def get(self, uid: int) -> tuple[dict, list[int]]:
        task = self.tasks[random.Random(self.seed * 1_000_003 + uid).randrange(len(self.tasks))]
        return task, list(self.tokenizer(task["task_id"], add_special_tokens=False)["input_ids"])


class EnvSessions:
    """Running episodes' environments, by session id: ``start`` builds an environment and its
    ``Conversation``, ``apply`` executes one assistant reply (tool calls, user simulator),
    ``reward`` scores the episode, ``close`` frees it. Synchronous: ``LocalEnvHost`` runs it on
    threads of this process, ``longcat.rl.ray_backend.EnvWorkerActor`` inside a Ray actor."""

    def __init__(self, envs: Mapping[str, dict]):
        self.envs = envs
        self.sessions: dict[int, tuple] = {}
        self._ids = itertools.count()

    def start(self, task: Mapping, noise, max_steps: int, max_turns: int) -> tuple[int, list, list]:
        from longcat.data import envs_adapter as ea

        env = ea.make_env(self.envs[task["env_id"]], noise, max_steps)
        try:
            conv = ea.Conversation(env, task, max_turns, "brief")
        except BaseException:
            env.close()
            raise
        sid = next(self._ids)
        self.sessions[sid] = (env, conv, task)
        return sid, conv.messages, conv.tools

    def apply(self, sid: int, reply: dict, messages: Optional[list] = None) -> tuple[list, bool]:
        """``messages``: the history as context management left it (None: unchanged)."""
        _, conv, _ = self.sessions[sid]
        if messages is not None:
            conv.messages = [dict(m) for m in messages]
        conv.apply(reply)
        return conv.messages, conv.done

    def reward(self, sid: int, partial: bool) -> float:
        env, conv, task = self.sessions[sid]
        result = conv.result()
        if not partial or result.reward >= 1.0:
            return float(result.reward)
        from longcat.evaluate.runner import partial_credit

        if not result.reward_info:
            result.reward_info = env.evaluate()[1]
        return float(partial_credit(task, result))

    def close(self, sid: int) -> None:
        entry = self.sessions.pop(sid, None)
        if entry is not None:
            entry[0].close()


class LocalEnvHost:
    """``EnvSessions`` in this process, each call on a thread (environments block)."""

    def __init__(self, envs: Mapping[str, dict]):
        self.sessions = EnvSessions(envs)

    async def start(self, task, noise, max_steps: int, max_turns: int):
        return await asyncio.to_thread(self.sessions.start, task, noise, max_steps, max_turns)

    async def apply(self, sid, reply: dict, messages: Optional[list] = None):
        return await asyncio.to_thread(self.sessions.apply, sid, reply, messages)

    async def reward(self, sid, partial: bool) -> float:
        return await asyncio.to_thread(self.sessions.reward, sid, partial)

    async def close(self, sid) -> None:
        await asyncio.to_thread(self.sessions.close, sid)


class _Conv:
    """The episode's view of its conversation (messages, tools, done) on an env host: the
    environment itself may live in another process."""

    def __init__(self, host, sid, messages: list, tools: list):
        self.host, self.sid, self.messages, self.tools = host, sid, list(messages), tools
        self.done = False
        self._replaced = False

    def replace(self, messages: list) -> None:
        self.messages, self._replaced = list(messages), True

    async def apply(self, reply: dict) -> None:
        sent = self.messages if self._replaced else None
        self.messages, self.done = await self.host.apply(self.sid, reply, sent)
        self.messages, self._replaced = list(self.messages), False


class AgentEpisodes:
    """Runs one episode under a pinned policy version and returns its segments (``Sample``s
    with ``reward`` set). ``policy``: a ``longcat.rl.protocols.Policy`` whose sampling stops at
    the end of an assistant turn. ``noise_for(noisy, seed)`` gives the ``NoiseConfig`` of an
    episode (None: clean); a fraction ``noisy_fraction`` of episodes is noisy."""

    def __init__(self, envs: Mapping[str, dict], policy, tokenizer, *, context: ContextConfig = ContextConfig(),
                 max_turns: int = 8, max_model_len: int = 2048, max_new_tokens: int = 128,
                 tool_format: str = "compact", reward: str = "success", noisy_fraction: float = 0.5,
                 noise_for: Callable[[bool, int], Any] = lambda noisy, seed: None, seed: int = 0,
                 timeout: float = 120.0, env_host=None):
        if reward not in ("success", "partial"):
            raise ValueError(f"AgentEpisodes: 'reward' must be 'success' or 'partial', got {reward!r}")
        self.envs, self.policy, self.tokenizer = envs, policy, tokenizer
        self.env_host = env_host if env_host is not None else LocalEnvHost(envs)
        self.context, self.max_turns, self.max_model_len = context, max_turns, max_model_len
        self.max_new_tokens, self.tool_format, self.reward = max_new_tokens, tool_format, reward
        self.noisy_fraction, self.noise_for, self.seed, self.timeout = noisy_fraction, noise_for, seed, timeout
        from longcat.engine.chat import chat_stop_token_ids
        from longcat.models.tokenizer import CHAT_STOP_TOKEN

        self.stop_ids = chat_stop_token_ids(tokenizer)
        self.end_of_turn = CHAT_STOP_TOKEN
        self.outcomes: list[tuple[bool, float]] = []  # (noisy, reward) of finished episodes since take_stats
        self.events = {"summarize": 0, "discard": 0, "context_full": 0, "turns": 0}

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _render(self, messages, tools, gen: bool) -> str:
        from longcat.data.format import render

        return render(messages, tools, self.tool_format, add_generation_prompt=gen)

    async def _generate(self, seg: _Segment, version: int):
        if seg.length + self.max_new_tokens > self.max_model_len:
            raise ContextFull(f"{seg.length} tokens + {self.max_new_tokens} new > max_model_len {self.max_model_len}")
        s = (await self.policy.generate(seg.prompt + seg.ids, 1, version))[0]
        if any(v != version for v in s.versions):
            raise RuntimeError(f"episode: generated under versions {sorted(set(s.versions))}, pinned {version}")
        seg.add(list(s.completion_ids), list(s.logprobs), trained=True)
        return s

    async def __call__(self, task: Mapping, uid: int, index: int, version: int) -> list[Sample]:
        rng = random.Random((self.seed * 1_000_003 + uid) * 1024 + index)
        noisy = rng.random() < self.noisy_fraction
        noise = self.noise_for(noisy, rng.randrange(2 ** 31))
        sid, messages, tools = await self.env_host.start(task, noise, 4 * self.max_turns, self.max_turns)
        try:
            return await self._episode(_Conv(self.env_host, sid, messages, tools), task, version,
                                       noisy=noisy and noise is not None)
        finally:
            await self.env_host.close(sid)

    async def _episode(self, conv: "_Conv", task, version: int, noisy: bool) -> list[Sample]:
        from longcat.engine.chat import parse_assistant_text

        done_segments: list[_Segment] = []
        seg = _Segment(self._encode(self._render(conv.messages, conv.tools, gen=True)))

        async def summarize(history: list[dict]) -> str:
            head = conv.messages[:len(conv.messages) - len(history)]
            ask = head + history + [{"role": "user", "content": SUMMARY_REQUEST}]
            summary = _Segment(self._encode(self._render(ask, conv.tools, gen=True)))
            s = await self._generate(summary, version)
            summary.text = s.text
            done_segments.append(summary)
            return parse_assistant_text(s.text).content.strip()

        try:
            while not conv.done:
                messages, action = await manage_context(conv.messages, self.context, lambda _: seg.length, summarize)
                if action is not None:
                    self.events[action] += 1
                    conv.replace(messages)
                    if seg.ids:
                        done_segments.append(seg)
                    seg = _Segment(self._encode(self._render(messages, conv.tools, gen=True)))
                s = await self._generate(seg, version)
                seg.text += s.text
                msg = parse_assistant_text(s.text)
                reply = {"role": "assistant", "content": msg.content}
                if msg.tool_calls:
                    reply["tool_calls"] = msg.tool_calls
                n = len(conv.messages) + 1
                await conv.apply(reply)
                self.events["turns"] += 1
                if conv.done:
                    break
                # What the environment said, as the template renders it after this turn; the
                # template is append-only, so the new text is the suffix past the old render.
                before = self._render(conv.messages[:n], conv.tools, gen=False)
                after = self._render(conv.messages, conv.tools, gen=True)
                if not after.startswith(before):
                    raise RuntimeError("episode: the chat template re-rendered earlier turns differently")
                closed = bool(s.completion_ids) and s.completion_ids[-1] in self.stop_ids
                glue = "\n" if closed else self.end_of_turn + "\n"  # a turn cut by max_tokens is closed here
                seg.add(self._encode(glue + after[len(before):]), None, trained=False)
        except ContextFull:
            self.events["context_full"] += 1  # the episode ends as it stands (not done: reward 0)
        if seg.ids or not done_segments:
            done_segments.append(seg)
        reward = await self.env_host.reward(conv.sid, self.reward == "partial")
        self.outcomes.append((noisy, float(reward)))
        out = [s.sample(version) for s in done_segments]
        for s in out:
            s.reward = float(reward)
        return out

    def take_stats(self) -> dict:
        """Per-step episode counters (and the clean/noisy mean rewards), reset on read."""
        clean = [r for noisy, r in self.outcomes if not noisy]
        noisy = [r for n, r in self.outcomes if n]
        stats = {"episodes": len(self.outcomes), "clean_episodes": len(clean), "noisy_episodes": len(noisy),
                 "clean_reward": sum(clean) / len(clean) if clean else None,
                 "noisy_reward": sum(noisy) / len(noisy) if noisy else None,
                 "summaries": self.events["summarize"], "discards": self.events["discard"],
                 "context_full": self.events["context_full"],
                 "turns_mean": self.events["turns"] / len(self.outcomes) if self.outcomes else 0.0}
        self.outcomes = []
        self.events = dict.fromkeys(self.events, 0)
        return stats


def _load_envs_and_tasks(cfg, out_dir: str, seed: int, log) -> tuple[dict, list]:
    from longcat.data import envs_adapter as ea

    folder = cfg.build
    if folder is None:
        folder = os.path.join(out_dir, "envs")
        if not os.path.isfile(os.path.join(folder, "tasks.jsonl")):
            log(f"envs: building {cfg.count} environments into {folder} (envs.build not given)")
            ea.build_envs(folder, count=cfg.count, seed=seed, tasks_per_env=cfg.tasks_per_env, progress=False)
    envs, tasks = ea.load_build(folder)
    if cfg.holdout is not None:
        from longcat.data.format import read_jsonl

        held = {e["env_id"] for e in read_jsonl(cfg.holdout)}
        tasks = [t for t in tasks if t["env_id"] not in held]
    if cfg.domains:
        tasks = [t for t in tasks if t["domain"] in cfg.domains]
    if cfg.tiers:
        tasks = [t for t in tasks if ea.tier_of(t) in cfg.tiers]
    if not tasks:
        raise ValueError(f"recipe: no environment task left in {folder!r} after envs.holdout/domains/tiers")
    return envs, tasks


class AgentTask:
    """Everything ``train()`` needs for ``task.name: envs``: the tokenizer and warm-start model
    (``model.checkpoint`` or, when none is given, a random ``model.preset`` with the longcat
    tokenizer), the task source, the episode runner and the noise curriculum with its state."""

    def __init__(self, recipe, out_dir: str, log=print):
        from longcat.envs.curriculum import DEFAULT_ORDER, NoiseCurriculum

        self.recipe, self.out_dir, self.log = recipe, out_dir, log
        e, c = recipe.envs, recipe.curriculum
        self.curriculum = None
        if c.enabled:
            self.curriculum = NoiseCurriculum(order=tuple(c.order) if c.order else DEFAULT_ORDER,
                                              start_intensity=c.start_intensity, max_intensity=c.max_intensity,
                                              step=c.step, close_gap=c.close_gap, backoff_gap=c.backoff_gap,
                                              ema=c.ema, min_updates=c.min_updates, seed=recipe.seed)
        self.envs, tasks = _load_envs_and_tasks(e, out_dir, recipe.seed, log)
        self.model_dir = self._model_dir()
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.source = EnvTaskSource(tasks, self.tokenizer, recipe.seed)
        meta = os.path.join(self.model_dir, "sft_meta.json")
        fmt = json.load(open(meta)).get("tool_format") if os.path.isfile(meta) else None
        self.tool_format = e.tool_format or fmt or "compact"
        log(f"envs: {len(tasks)} training tasks in {len({t['env_id'] for t in tasks})} environments; "
            f"tool format {self.tool_format}")
        self.episodes: Optional[AgentEpisodes] = None

    def _model_dir(self) -> str:
        m = self.recipe.model
        if m.checkpoint is not None:
            if not os.path.isfile(os.path.join(m.checkpoint, "config.json")):
                raise ValueError(f"recipe: 'model.checkpoint' {m.checkpoint!r} is not a checkpoint folder "
                                 "(no config.json)")
            self.log(f"warm start: checkpoint {m.checkpoint}")
            return m.checkpoint
        from longcat.models.random_init import init_checkpoint

        path = os.path.join(self.out_dir, "init")
        if not os.path.isfile(os.path.join(path, "config.json")):
            init_checkpoint(path, m.preset, seed=self.recipe.seed)
        self.log(f"warm start: none given (model.checkpoint / --init), starting from a random '{m.preset}' preset "
                 f"({path}); give an SFT checkpoint to start from a policy that can use the tools")
        return path

    def load_model(self):
        import torch

        from longcat.models import LongcatFlashForCausalLM

        return LongcatFlashForCausalLM.from_pretrained(self.model_dir, dtype=torch.float32)

    def sampling(self) -> dict:
        from longcat.engine.chat import chat_stop_token_ids

        return {"stop_token_ids": chat_stop_token_ids(self.tokenizer)}

    def noise_for(self, noisy: bool, seed: int):
        from longcat.data import envs_adapter as ea

        if not noisy:
            return None
        if self.curriculum is not None:
            return dataclasses.replace(self.curriculum.noise_config(), seed=seed)
        e = self.recipe.envs
        return ea.noise_config(e.noise, e.noise_intensity, seed) if e.noise else None

    def make_episodes(self, policy, env_host=None) -> AgentEpisodes:
        e, r = self.recipe.envs, self.recipe.rollout
        ctx = ContextConfig(self.recipe.context.summarize_at, self.recipe.context.max_turns)
        self.episodes = AgentEpisodes(self.envs, policy, self.tokenizer, context=ctx, max_turns=e.max_turns,
                                      max_model_len=e.max_model_len, max_new_tokens=r.max_new_tokens,
                                      tool_format=self.tool_format, reward=e.reward,
                                      noisy_fraction=e.noisy_fraction if (self.curriculum or e.noise) else 0.0,
                                      noise_for=self.noise_for, seed=self.recipe.seed, timeout=e.episode_timeout,
                                      env_host=env_host)
        return self.episodes

    def on_step(self, row: dict) -> None:
        """Adds the step's episode stats to the metrics row and feeds the curriculum the gap."""
        stats = self.episodes.take_stats()
        row.update(stats)
        if self.curriculum is not None:
            if stats["clean_reward"] is not None and stats["noisy_reward"] is not None:
                self.curriculum.update(min(1.0, stats["clean_reward"]), min(1.0, stats["noisy_reward"]))
            cfg = self.curriculum.noise_config()
            row["curriculum"] = {**self.curriculum.state_dict(), "types": list(cfg.types), "gap": self.curriculum.gap}

    def state_dict(self) -> dict:
        return {"curriculum": None if self.curriculum is None else self.curriculum.state_dict()}

    def load_state_dict(self, state: Optional[dict]) -> None:
        if state and state.get("curriculum") is not None and self.curriculum is not None:
            self.curriculum.load_state_dict(state["curriculum"])


__all__ = ["AgentEpisodes", "AgentTask", "EnvSessions", "EnvTaskSource", "LocalEnvHost", "ContextFull",
           "SUMMARY_REQUEST"]
