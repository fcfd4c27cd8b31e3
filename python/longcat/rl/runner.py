"""``train(recipe, out_dir)``: build the policy, task and trainer from a recipe, warm-start,
run the streaming loop, log, checkpoint, resume, plot."""
from __future__ import annotations

import asyncio
import math
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional, Union

import torch

from longcat.rl.budget import RolloutBudget
from longcat.rl.buffer import SampleBuffer, StalenessManager, staleness_histogram
from longcat.rl.checkpoint import (groups_from_list, groups_to_list, latest_checkpoint, load_state, rng_state,
                                   save_checkpoint, set_rng_state)
from longcat.rl.loop import RolloutManager, StepReport, StreamingLoop
from longcat.rl.losses import TripletClip
from longcat.rl.metrics import MetricsLog, Progress, read_metrics, write_plots
from longcat.rl.policy import EnginePolicy
from longcat.rl.recipe import Recipe, load_recipe
from longcat.rl.tasks import ArithReward, ArithSource, DelayedReward, arith_tokenizer, warm_start


@dataclass
class TrainResult:
    checkpoint_dir: str         # Hugging Face-layout policy (LLM(checkpoint_dir) loads it)
    metrics_path: str           # one JSON row per trainer step
    plots: list                 # PNG paths
    steps: int
    final_reward: float         # mean reward of the last steps' scored samples
    resumed_from: Optional[str] = None
    stopped: Optional[str] = None  # why the run stopped early (repeated NaN), else None
    wall_s: float = 0.0            # this process's loop time (warm start excluded)
    generator_busy_s: float = 0.0  # time the rollout engines spent stepping (idle = wall - busy)


class NonFiniteLossError(RuntimeError):
    pass


def _build_model(recipe: Recipe):
    from longcat.models import LongcatFlashConfig, LongcatFlashForCausalLM

    if recipe.model.checkpoint is not None:
        return LongcatFlashForCausalLM.from_pretrained(recipe.model.checkpoint, dtype=torch.float32)
    torch.manual_seed(recipe.seed)
    model = LongcatFlashForCausalLM(LongcatFlashConfig.from_preset(recipe.model.preset), dtype=torch.float32)
    if recipe.model.init_std is not None:
        model.reset_parameters(recipe.model.init_std)
    return model


def _policy_weights(model) -> dict:
    return {k: v.detach().clone() for k, v in model.hf_state_dict().items()}


BACKENDS = ("local", "ray")


class _Run:
    def __init__(self, recipe: Recipe, out_dir: str, max_steps: Optional[int], progress: bool,
                 reward_fn=None, log=print, backend: str = "local"):
        self.recipe, self.out_dir, self.log, self.backend = recipe, out_dir, log, backend
        self.total_steps = recipe.train.steps if max_steps is None else max_steps
        os.makedirs(out_dir, exist_ok=True)
        random.seed(recipe.seed)
        self.agent = _agent_task(recipe, out_dir, log)
        if self.agent is not None:
            self.tokenizer, self.source = self.agent.tokenizer, self.agent.source
        else:
            self.tokenizer = arith_tokenizer()
            t = recipe.task
            self.source = ArithSource(self.tokenizer, recipe.seed, t.max_operand, t.ops, t.n_terms) \
                if t.name == "arith" else _summary_source(recipe, self.tokenizer)
        resume = latest_checkpoint(out_dir)
        self.resumed_from = resume
        if resume is not None:
            from longcat.models import LongcatFlashForCausalLM

            state = load_state(resume)
            self.model = LongcatFlashForCausalLM.from_pretrained(os.path.join(resume, "model"), dtype=torch.float32)
        else:
            state = None
            self.model = _build_model(recipe) if self.agent is None else self.agent.load_model()
            ws = recipe.warm_start
            if ws.steps:
                t0 = time.perf_counter()
                losses = warm_start(self.model, self.source, ws.steps, ws.batch_size, ws.lr, recipe.seed)
                log(f"warm start: {ws.steps} supervised steps in {time.perf_counter() - t0:.1f}s, "
                    f"loss {losses[0]:.3f} -> {losses[-1]:.3f}")
        a = recipe.algorithm
        trainer_args = dict(lr=recipe.train.lr, loss=a.loss, clip=TripletClip(a.eps_neg_low, a.eps_neg_high,
                                                                              a.eps_pos_high),
                            tis_cap=a.tis_cap, max_len=recipe.rollout.max_new_tokens if self.agent is None
                            else recipe.envs.max_model_len, normalize_std=a.normalize_std,
                            grad_clip=recipe.train.grad_clip, minibatches=a.minibatches)
        self.trainer = self._make_trainer(trainer_args)
        r = recipe.rollout
        self.version = 0 if state is None else state["version"]
        self.step = 0 if state is None else state["step"]
        b = recipe.budget
        self.budget = None if b.mode == "none" else RolloutBudget(
            b.mode, r.group_size, window=recipe.train.batch_groups if b.window is None else b.window, unit=b.unit,
            max_group_size=b.max_group_size, decay=b.decay, max_factor=b.max_factor,
            counts=None if state is None else state.get("pass_rates"))
        max_group = r.group_size if self.budget is None else self.budget.max_group_size
        engine_args = {"max_model_len": (64 if recipe.task.name == "arith" else 192) if self.agent is None
                       else recipe.envs.max_model_len,
                       "max_num_seqs": max(64, max_group), "seed": recipe.seed, **r.engine}
        sampling = dict(temperature=r.temperature, top_p=r.top_p, max_tokens=r.max_new_tokens,
                        **({} if self.agent is None else self.agent.sampling()))
        self.policy = self._make_policy(engine_args, sampling)
        self.env_host = None
        if self.agent is not None and backend == "ray":  # environments in worker actors
            from longcat.rl.ray_backend import RayEnvHost

            self.env_host = RayEnvHost(self.agent.envs, workers=r.controllers)
        episodes = None if self.agent is None else self.agent.make_episodes(self.policy, self.env_host)
        self.manager = RolloutManager() if state is None else RolloutManager(
            state["manager"]["next_uid"], state["manager"]["requeued"], state["manager"]["ledger"])
        self.buffer = SampleBuffer()
        self.staleness = StalenessManager(recipe.train.batch_groups, recipe.train.max_staleness, r.max_concurrent)
        self.staleness.version = self.version
        if state is not None:
            self.trainer.optimizer.load_state_dict(state["optimizer"])
            set_rng_state(state["rng"])
            self.buffer.restore(groups_from_list(state["buffer"]))
            # AReaL's on_version_recovered: every finished version consumed one batch.
            self.staleness.accepted = state["accepted"]
            if self.agent is not None:
                self.agent.load_state_dict(state.get("agent"))
        self.nan_steps = 0 if state is None else state["nan_steps"]
        self.elapsed0 = 0.0 if state is None else state["elapsed_s"]
        reward = reward_fn if reward_fn is not None else ArithReward(self.tokenizer) if self.agent is None else None
        lat = r.latency
        if lat.dist == "pareto" and reward is not None:
            reward = DelayedReward(reward, lat.scale, lat.alpha, lat.cap, seed=recipe.seed + self.step)
        if backend == "ray" and reward is not None:  # scoring in reward-worker actors
            from longcat.rl.ray_backend import RayReward

            reward = RayReward(reward, workers=r.controllers)
        self.reward = reward
        self.loop = StreamingLoop(policy=self.policy, source=self.source, reward_fn=reward, manager=self.manager,
                                  buffer=self.buffer, staleness=self.staleness, group_size=r.group_size,
                                  controllers=r.controllers, reward_timeout=r.reward_timeout,
                                  filter_degenerate=a.filter_degenerate, log=lambda m: None,
                                  max_filtered_in_a_row=recipe.train.max_filtered_in_a_row, budget=self.budget,
                                  episodes=episodes)
        self.metrics = MetricsLog(out_dir)
        self.progress = Progress(self.total_steps, progress, start=self.step)
        self._exec = ThreadPoolExecutor(1, thread_name_prefix="longcat-rl-trainer")
        self.stopped: Optional[str] = None
        self.last_ckpt = resume

    # ---- backends: which policy and trainer (the loop, logging and checkpoints are the same) ----

    def _make_policy(self, engine_args: dict, sampling: dict):
        p = self.recipe.policy
        if p.kind == "openai":
            from longcat.rl.openai_policy import OpenAIPolicy

            # The server starts from the trainer's weights: pushed as the current version.
            return OpenAIPolicy(p.base_url, p.model, sampling=sampling, version=self.version,
                                state_dict=_policy_weights(self.model), weights_dir=p.weights_dir,
                                api_key=p.api_key or os.environ.get("LONGCAT_API_KEY"), timeout=p.timeout)
        if self.backend == "ray":
            from longcat.rl.ray_backend import RayPolicy

            return RayPolicy(self.model, self.tokenizer, generators=self.recipe.rollout.controllers,
                             engine_args=engine_args, sampling=sampling, version=self.version)
        return EnginePolicy(self.model, self.tokenizer, engine_args=engine_args, version=self.version,
                            sampling=sampling)

    def _make_trainer(self, trainer_args: dict):
        t = self.recipe.train
        if self.backend == "ray":
            from longcat.rl.ray_backend import RayTrainer

            return RayTrainer(self.model, t.data_parallel, t.sharding, **trainer_args)
        from longcat.rl.distributed import DataParallelTrainer, launched_by_torchrun, make_trainer

        if launched_by_torchrun():  # this process is rank 0; torchrun started the other ranks
            world = int(os.environ["WORLD_SIZE"])
            if t.sharding == "fsdp2":
                from longcat.rl.fsdp import FSDPTrainer

                return FSDPTrainer(self.model, world, spawn=False, **trainer_args)
            return DataParallelTrainer(self.model, world, spawn=False, **trainer_args)
        return make_trainer(self.model, trainer_args, t.data_parallel, t.sharding)

    def _state(self) -> dict:
        return {"version": self.version, "step": self.step, "optimizer": self.trainer.optimizer.state_dict(),
                "rng": rng_state(), "manager": self.manager.state(), "buffer": groups_to_list(self.buffer.groups),
                "accepted": self.staleness.accepted, "nan_steps": self.nan_steps,
                "elapsed_s": self.elapsed0 + time.perf_counter() - self.t_start, "recipe": self.recipe.to_dict(),
                "pass_rates": None if self.budget is None else dict(self.budget.rates.counts),
                "agent": None if self.agent is None else self.agent.state_dict()}

    def checkpoint(self) -> str:
        # Synchronous from here to the end: the snapshot sees one consistent moment of the loop.
        self.last_ckpt = save_checkpoint(self.out_dir, self.step, self.model, self.tokenizer, self._state(),
                                         self.recipe.train.keep_checkpoints, carry_from=self.recipe.model.checkpoint)
        return self.last_ckpt

    async def on_batch(self, report: StepReport) -> bool:
        loop = asyncio.get_running_loop()
        stats = await loop.run_in_executor(self._exec, self.trainer.step, report.groups)
        self.step = report.step
        uids = [g.uid for g in report.groups]
        if stats["skipped"]:
            self.nan_steps += 1
            for u in uids:
                self.manager.record(u, "skipped")
            await self.staleness.forget(len(uids))  # consumed but not trained: the slots reopen
        else:
            self.nan_steps = 0
            self.version += 1
            await self.policy.update_weights(_policy_weights(self.model), self.version)
            await self.staleness.set_version(self.version)
            for u in uids:
                self.manager.record(u, "trained")
        now = time.perf_counter()
        s = self.loop.stats
        dt = max(now - self.t_last, 1e-9)
        rewards = s.rewards or [float("nan")]
        row = {"step": self.step, "version": self.version, "reward": sum(rewards) / len(rewards),
               "reward_trained": sum(x.reward for g in report.groups for x in g.samples)
               / sum(len(g.samples) for g in report.groups),
               "loss": stats["loss"], "grad_norm": stats["grad_norm"], "skipped": stats["skipped"],
               "clip_frac": stats.get("clip_frac", 0.0), "tis_mean": stats.get("tis_mean", 1.0),
               "logp_gap": stats["logp_gap"], "staleness_mean": sum(report.staleness) / len(report.staleness),
               "staleness_max": max(report.staleness), "staleness_hist": staleness_histogram(report.staleness),
               "samples_per_s": s.samples / dt, "tokens_per_s": s.tokens / dt, "groups": s.groups,
               "filtered": s.filtered, "failed_samples": s.failed_samples, "failed_groups": s.failed_groups,
               "lost": s.lost,
               "live_versions": len(self.policy.live_versions), "buffer": len(self.buffer),
               "elapsed_s": self.elapsed0 + now - self.t_start, "uids": uids, "samples": s.samples}
        if self.budget is not None:
            row.update(self.budget.take_stats())
        if self.agent is not None:
            self.agent.on_step(row)
            row["errors"] = s.errors[-5:]  # why trajectories were dropped (environment raised, timed out)
        self.loop.stats.__init__()  # per-step counters
        self.t_last = now
        self.metrics.write(row)
        self.progress.update(row)
        if stats["skipped"] and self.nan_steps >= self.recipe.train.max_nan_steps:
            self.stopped = f"{self.nan_steps} consecutive non-finite steps (last loss {stats['loss']})"
            return False  # the last checkpoint stays as it was: it holds no NaN
        if not stats["skipped"] and self.step % self.recipe.train.checkpoint_every == 0:
            self.checkpoint()
        return self.step < self.total_steps

    async def run(self) -> None:
        self.t_start = self.t_last = time.perf_counter()
        try:
            if self.step < self.total_steps:
                await self.loop.run(self.on_batch, start_step=self.step)
            if self.stopped is None and (self.last_ckpt is None or not self.last_ckpt.endswith(f"{self.step:06d}")):
                self.checkpoint()
        finally:
            self.progress.close()
            self.metrics.close()
            await self.policy.close()
            self._exec.shutdown(wait=True)
            for part in (self.trainer, self.reward):
                if callable(getattr(part, "close", None)):
                    part.close()
            if self.env_host is not None:
                self.env_host.close_all()
            self.wall_s = time.perf_counter() - self.t_start


def _agent_task(recipe: Recipe, out_dir: str, log):
    """The multi-turn environment task (``task.name: envs``), or None for arithmetic."""
    if recipe.task.name != "envs":
        return None
    from longcat.rl.agent import AgentTask

    return AgentTask(recipe, out_dir, log)


def _summary_source(recipe: Recipe, tokenizer):
    """``task.name: arith-summary``: summary prompts over the candidate bank (``longcat.heavy.rl_summary``)."""
    from longcat.heavy.rl_summary import SummarySource, load_bank
    from longcat.heavy.train_summary import CANDIDATES_FILE

    if recipe.model.checkpoint is None:
        raise ValueError("recipe: 'model.checkpoint' must be set (or --init) with task.name 'arith-summary': RL "
                         "on the summary step starts from a summary-tuned checkpoint")
    path = recipe.task.candidates or os.path.join(recipe.model.checkpoint, CANDIDATES_FILE)
    return SummarySource(tokenizer, load_bank(path), recipe.seed, recipe.task.template)


def _with_init(recipe: Recipe, init: Optional[str]) -> Recipe:
    """``--init CKPT``: the warm-start checkpoint replaces the recipe's ``model.checkpoint``."""
    if init is None:
        return recipe
    if not os.path.isfile(os.path.join(init, "config.json")):
        raise ValueError(f"train: 'init' must be a checkpoint folder with config.json, got {init!r}")
    data = recipe.to_dict()
    data["model"]["checkpoint"] = os.fspath(init)
    return load_recipe(data)


def train(recipe: Union[str, os.PathLike, dict, Recipe], out_dir: str, *,
          max_steps: Optional[int] = None, progress: bool = True, reward_fn=None,
          init: Optional[str] = None, backend: str = "local", ray_address: Optional[str] = None) -> TrainResult:
    """Train a policy with the streaming asynchronous loop. ``recipe``: a YAML path, a dict or a
    ``Recipe``; ``out_dir``: metrics, plots, checkpoints (a run resumes from ``out_dir``'s latest
    checkpoint). ``max_steps`` overrides ``train.steps``. ``reward_fn`` replaces the task's reward
    (an async ``(task, sample) -> float``). ``init`` (a checkpoint folder) overrides
    ``model.checkpoint``: the warm start of ``task.name: envs`` recipes (e.g. an SFT checkpoint).
    ``backend``: ``local`` (one process, asyncio) or ``ray`` (generators, reward or environment
    workers and the trainer as Ray actors, ``longcat.rl.ray_backend``; joins the cluster at
    ``ray_address``, or starts a local one, unless Ray is already initialised). With the local
    backend the trainer runs over ``train.data_parallel`` processes (``train.sharding``: none or
    fsdp2), or over torchrun's ranks when ``torchrun`` launched this process (rank 0 runs here)."""
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1):
        raise ValueError(f"train: 'max_steps' must be None or an int >= 1, got {max_steps!r}")
    if backend not in BACKENDS:
        raise ValueError(f"train: 'backend' must be one of {BACKENDS}, got {backend!r}")
    if ray_address is not None and backend != "ray":
        raise ValueError(f"train: 'ray_address' ({ray_address!r}) needs backend='ray', got backend={backend!r}")
    r = _with_init(load_recipe(recipe), init)
    from longcat.rl.distributed import launched_by_torchrun

    if launched_by_torchrun():
        world = int(os.environ["WORLD_SIZE"])
        if backend == "ray":
            raise ValueError("train: backend 'ray' conflicts with a torchrun launch (the Ray backend places its "
                             "own trainer actor); launch with plain `longcat rl train --ray`")
        if r.train.data_parallel not in (1, world):
            raise ValueError(f"recipe: 'train.data_parallel' ({r.train.data_parallel}) conflicts with torchrun's "
                             f"{world} processes (give 1 or the same number)")
    if backend == "ray":
        from longcat.rl.ray_backend import ray_session

        with ray_session(ray_address):
            run = _Run(r, os.fspath(out_dir), max_steps, progress, reward_fn, backend=backend)
            asyncio.run(run.run())
    else:
        run = _Run(r, os.fspath(out_dir), max_steps, progress, reward_fn)
        asyncio.run(run.run())
    rows = read_metrics(run.metrics.path) if os.path.exists(run.metrics.path) else []
    plots = write_plots(rows, run.out_dir)
    tail = [x["reward"] for x in rows[-5:] if not math.isnan(x["reward"])]
    model_dir = os.path.join(run.last_ckpt, "model") if run.last_ckpt else ""
    return TrainResult(checkpoint_dir=model_dir, metrics_path=run.metrics.path, plots=plots, steps=run.step,
                       final_reward=sum(tail) / len(tail) if tail else float("nan"),
                       resumed_from=run.resumed_from, stopped=run.stopped, wall_s=run.wall_s,
                       generator_busy_s=run.policy.busy_s)
