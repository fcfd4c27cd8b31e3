"""RL recipes: YAML (or a dict) -> typed, validated dataclasses. Unknown keys, wrong types and
conflicting settings raise ``ValueError`` naming the key, before anything runs."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints


@dataclass
class ModelConfig:
    preset: Optional[str] = "tiny"       # a longcat.models PRESETS name (random init) ...
    checkpoint: Optional[str] = None     # ... or a Hugging Face-layout folder (overrides preset)
    init_std: Optional[float] = None


@dataclass
class TaskConfig:
    name: str = "arith"           # arith | envs | arith-summary (the Heavy Thinking summary step)
    max_operand: int = 20
    ops: str = "+-"
    n_terms: int = 2
    candidates: Optional[str] = None  # arith-summary: a candidates.jsonl; None: the one next to model.checkpoint
    template: str = "compact"         # arith-summary: the summary layout (longcat.heavy.templates)


@dataclass
class WarmStartConfig:
    """Supervised steps on correct answers before RL (0: none)."""
    steps: int = 0
    batch_size: int = 64
    lr: float = 3e-3


@dataclass
class LatencyConfig:
    """Injected reward/environment latency: none, or a heavy-tailed Pareto delay
    ``min(scale * U**(-1/alpha), cap)`` seconds per sample (the long tail of real environments)."""
    dist: str = "none"
    scale: float = 0.01
    alpha: float = 1.2
    cap: float = 2.0


@dataclass
class RolloutConfig:
    group_size: int = 8
    max_new_tokens: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    controllers: int = 2          # RolloutControllers (virtual rollout groups)
    max_concurrent: int = 16      # groups generating or being scored at once, over all controllers
    reward_timeout: float = 30.0  # seconds; a sample whose reward takes longer is dropped
    engine: dict = field(default_factory=dict)  # EngineArgs fields for every version's engine
    latency: LatencyConfig = field(default_factory=LatencyConfig)


@dataclass
class BudgetConfig:
    """Dynamic rollout budget (report 4.3.1, ``longcat.rl.budget``): ``none`` (every prompt gets
    ``rollout.group_size``), ``greedy`` (heap allocation over ``window`` prompts at a time under a
    fixed ``window * rollout.group_size`` samples, in chunks of ``unit``) or ``oversample``
    (``group_size / P(informative group)`` samples per prompt), from live per-prompt pass rates."""
    mode: str = "none"
    window: Optional[int] = None          # prompts planned together (greedy); None: train.batch_groups
    unit: int = 2                         # samples per allocation chunk (greedy)
    max_group_size: Optional[int] = None  # rollouts per prompt at most; None: 2 * rollout.group_size
    decay: float = 0.9                    # pass-rate memory (older results count this much less per update)
    max_factor: float = 4.0               # oversample: at most this many times rollout.group_size


@dataclass
class PolicyConfig:
    """Where rollouts are generated: ``engine`` (the built-in engine, one per live version) or
    ``openai`` (any OpenAI-compatible server at ``base_url``; the trainer pushes weights through
    its update endpoint, see ``longcat.rl.openai_policy``)."""
    kind: str = "engine"                 # engine | openai
    base_url: Optional[str] = None       # openai: e.g. http://127.0.0.1:8000
    model: Optional[str] = None          # openai: served model name (None: the first listed)
    api_key: Optional[str] = None        # openai: Bearer key (None: $LONGCAT_API_KEY if set)
    weights_dir: Optional[str] = None    # openai: where pushed weights are written (the server reads them)
    timeout: float = 120.0               # openai: seconds per HTTP request


@dataclass
class AlgorithmConfig:
    loss: str = "gspo"            # gspo | grpo
    eps_neg_low: float = 0.2
    eps_neg_high: float = 2.0
    eps_pos_high: float = 0.28
    tis_cap: Optional[float] = 2.0
    normalize_std: bool = True
    filter_degenerate: bool = True
    minibatches: int = 1


@dataclass
class TrainConfig:
    steps: int = 50
    batch_groups: int = 8         # the trainer steps as soon as this many groups are buffered
    lr: float = 1e-3
    max_staleness: int = 2        # 0 = synchronous (batch barrier)
    grad_clip: float = 1.0
    checkpoint_every: int = 10
    keep_checkpoints: int = 2
    max_nan_steps: int = 3        # consecutive non-finite steps before the run stops
    max_filtered_in_a_row: int = 1000  # all-correct/all-wrong groups in a row before the run stops
    data_parallel: int = 1        # trainer processes (torch.distributed, gloo): longcat.rl.distributed
    sharding: str = "none"        # none (every rank holds the weights) | fsdp2 (longcat.rl.fsdp)


@dataclass
class EnvsConfig:
    """``task.name: envs`` (``longcat.rl.agent``): multi-turn episodes in built environments."""
    build: Optional[str] = None        # a `longcat envs build` folder; None: build `count` envs into the run folder
    count: int = 30
    tasks_per_env: int = 3
    holdout: Optional[str] = None      # an eval_envs.jsonl (`longcat data synth`): its environments are not trained on
    domains: Optional[list] = None     # keep only these domains
    tiers: Optional[list] = None       # keep only tasks with these numbers of gold tool calls
    max_turns: int = 8                 # assistant turns per episode
    max_model_len: int = 2048          # the engine's context (prompt + generated tokens)
    tool_format: Optional[str] = None  # compact | json; None: the checkpoint's sft_meta.json, else compact
    reward: str = "success"            # success (0/1) | partial (partial credit)
    noise: list = field(default_factory=list)  # fixed noise types of noisy episodes (without a curriculum)
    noise_intensity: float = 0.3
    noisy_fraction: float = 0.5        # share of episodes run with noise (the rest measure the clean rate)
    episode_timeout: float = 120.0     # seconds; a longer episode is dropped


@dataclass
class ContextSection:
    """Hybrid context management (``longcat.rl.context``); None turns a rule off."""
    summarize_at: Optional[int] = None  # tokens: past this the policy summarises its tool-call history
    max_turns: Optional[int] = None     # assistant turns since the last reset: then all but system + question go


@dataclass
class CurriculumSection:
    """The noise curriculum (``longcat.envs.curriculum.NoiseCurriculum``) driving noisy episodes."""
    enabled: bool = False
    order: Optional[list] = None        # noise types in the order they join; None: the curriculum's default
    start_intensity: float = 0.1
    max_intensity: float = 0.6
    step: float = 0.1
    close_gap: float = 0.05
    backoff_gap: float = 0.3
    ema: float = 0.5
    min_updates: int = 3


@dataclass
class Recipe:
    name: str = "recipe"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    warm_start: WarmStartConfig = field(default_factory=WarmStartConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    envs: EnvsConfig = field(default_factory=EnvsConfig)
    context: ContextSection = field(default_factory=ContextSection)
    curriculum: CurriculumSection = field(default_factory=CurriculumSection)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _build(cls, data: Any, path: str):
    if not isinstance(data, dict):
        raise ValueError(f"recipe: '{path or 'recipe'}' must be a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{path}." if path else ""
        raise ValueError(f"recipe: unknown key '{where}{unknown[0]}' (known keys here: {', '.join(sorted(names))})")
    kwargs = {}
    for k, v in data.items():
        key = f"{path}.{k}" if path else k
        kwargs[k] = _value(hints[k], v, key)
    return cls(**kwargs)


def _value(tp, v, key):
    if dataclasses.is_dataclass(tp):
        return _build(tp, v, key)
    if get_origin(tp) is Union:
        args = [a for a in get_args(tp) if a is not type(None)]
        if v is None:
            return None
        return _value(args[0], v, key)
    ok = {int: isinstance(v, int) and not isinstance(v, bool),
          float: isinstance(v, (int, float)) and not isinstance(v, bool),
          str: isinstance(v, str), bool: isinstance(v, bool), dict: isinstance(v, dict)}.get(tp, True)
    if not ok:
        raise ValueError(f"recipe: '{key}' must be {tp.__name__}, got {v!r}")
    return float(v) if tp is float else v


def _check(r: Recipe) -> None:
    def need(cond, key, expected, got):
        if not cond:
            raise ValueError(f"recipe: '{key}' must be {expected}, got {got!r}")

    for key, v in (("seed", r.seed), ("task.max_operand", r.task.max_operand), ("warm_start.steps", r.warm_start.steps),
                   ("train.max_staleness", r.train.max_staleness)):
        need(v >= 0, key, ">= 0", v)
    for key, v in (("rollout.group_size", r.rollout.group_size), ("rollout.max_new_tokens", r.rollout.max_new_tokens),
                   ("rollout.controllers", r.rollout.controllers), ("rollout.max_concurrent", r.rollout.max_concurrent),
                   ("train.steps", r.train.steps), ("train.batch_groups", r.train.batch_groups),
                   ("train.checkpoint_every", r.train.checkpoint_every), ("train.keep_checkpoints", r.train.keep_checkpoints),
                   ("train.max_nan_steps", r.train.max_nan_steps),
                   ("train.max_filtered_in_a_row", r.train.max_filtered_in_a_row), ("algorithm.minibatches", r.algorithm.minibatches),
                   ("warm_start.batch_size", r.warm_start.batch_size), ("task.n_terms", r.task.n_terms)):
        need(v >= 1, key, ">= 1", v)
    need(r.rollout.group_size >= 2, "rollout.group_size", ">= 2 (advantages are relative within a group)",
         r.rollout.group_size)
    need(r.algorithm.loss in ("gspo", "grpo"), "algorithm.loss", "'gspo' or 'grpo'", r.algorithm.loss)
    need(r.task.name in ("arith", "envs", "arith-summary"), "task.name", "'arith', 'envs' or 'arith-summary'",
         r.task.name)
    if r.task.name != "arith-summary" and (r.task.candidates is not None or r.task.template != "compact"):
        raise ValueError(f"recipe: 'task.candidates' and 'task.template' only apply to task.name 'arith-summary', "
                         f"got task.name {r.task.name!r}")
    if r.task.name == "arith-summary":
        need(r.warm_start.steps == 0, "warm_start.steps", "0 with task.name 'arith-summary' (the warm start is "
             "model.checkpoint, a summary-tuned checkpoint)", r.warm_start.steps)
    need(r.rollout.latency.dist in ("none", "pareto"), "rollout.latency.dist", "'none' or 'pareto'",
         r.rollout.latency.dist)
    need(r.train.lr > 0, "train.lr", "> 0", r.train.lr)
    need(r.rollout.reward_timeout > 0, "rollout.reward_timeout", "> 0", r.rollout.reward_timeout)
    need(r.algorithm.tis_cap is None or r.algorithm.tis_cap > 0, "algorithm.tis_cap", "None or > 0", r.algorithm.tis_cap)
    need(r.algorithm.minibatches <= r.train.batch_groups * r.rollout.group_size, "algorithm.minibatches",
         "<= the samples of one batch (train.batch_groups * rollout.group_size)", r.algorithm.minibatches)
    _check_backends(r, need)
    b = r.budget
    need(b.mode in ("none", "greedy", "oversample"), "budget.mode", "'none', 'greedy' or 'oversample'", b.mode)
    need(b.window is None or b.window >= 1, "budget.window", "None or >= 1", b.window)
    need(b.unit >= 2, "budget.unit", ">= 2 (a chunk is a group of its own)", b.unit)
    need(0 < b.decay <= 1, "budget.decay", "in (0, 1]", b.decay)
    need(b.max_factor >= 1, "budget.max_factor", ">= 1", b.max_factor)
    # Conflicts between sections.
    window = r.train.batch_groups if b.window is None else b.window
    max_group = 2 * r.rollout.group_size if b.max_group_size is None else b.max_group_size
    if b.mode != "none" and max_group < max(b.unit, r.rollout.group_size if b.mode == "oversample" else 2):
        raise ValueError(f"recipe: 'budget.max_group_size' ({max_group}) must be >= budget.unit ({b.unit})"
                         f"{' and >= rollout.group_size' if b.mode == 'oversample' else ''}")
    if b.mode == "greedy" and b.unit > window * r.rollout.group_size:
        raise ValueError(f"recipe: 'budget.unit' ({b.unit}) is larger than the whole budget of a window "
                         f"(budget.window * rollout.group_size = {window * r.rollout.group_size})")
    if r.model.checkpoint is None and r.model.preset is None:
        raise ValueError("recipe: 'model' needs 'preset' or 'checkpoint'")
    if r.rollout.temperature != 1.0 or r.rollout.top_p != 1.0:
        # The engine reports raw logprobs (before temperature/top-p); the loss treats them as the
        # behaviour policy, which is only true for untempered, unfiltered sampling.
        raise ValueError(f"recipe: 'rollout.temperature' ({r.rollout.temperature}) and 'rollout.top_p' "
                         f"({r.rollout.top_p}) conflict with the policy-gradient loss: the engine's logprobs are "
                         "those of the untempered distribution, so both must be 1.0")
    _check_envs(r)
    if r.train.max_staleness == 0 and r.rollout.max_concurrent < r.train.batch_groups:
        raise ValueError(f"recipe: 'rollout.max_concurrent' ({r.rollout.max_concurrent}) conflicts with synchronous "
                         f"training (train.max_staleness 0): a batch of train.batch_groups ({r.train.batch_groups}) "
                         "groups must be able to run at once")


def _check_backends(r: Recipe, need) -> None:
    p = r.policy
    need(p.kind in ("engine", "openai"), "policy.kind", "'engine' or 'openai'", p.kind)
    need(p.timeout > 0, "policy.timeout", "> 0", p.timeout)
    if p.kind == "openai":
        need(isinstance(p.base_url, str) and p.base_url.startswith(("http://", "https://")), "policy.base_url",
             "an http(s) URL when policy.kind is 'openai'", p.base_url)
    else:
        for key in ("base_url", "model", "api_key", "weights_dir"):
            if getattr(p, key) is not None:
                raise ValueError(f"recipe: 'policy.{key}' conflicts with policy.kind 'engine' (it is for 'openai')")
    need(r.train.data_parallel >= 1, "train.data_parallel", ">= 1", r.train.data_parallel)
    need(r.train.sharding in ("none", "fsdp2"), "train.sharding", "'none' or 'fsdp2'", r.train.sharding)
    need(r.train.data_parallel <= r.train.batch_groups * r.rollout.group_size, "train.data_parallel",
         "<= the samples of one batch (train.batch_groups * rollout.group_size)", r.train.data_parallel)


def _check_envs(r: Recipe) -> None:
    """The multi-turn environment sections: valid values, and only with ``task.name: envs``."""
    if r.task.name != "envs":
        for section in ("envs", "context", "curriculum"):
            default = dataclasses.asdict(type(getattr(r, section))())
            for k, v in dataclasses.asdict(getattr(r, section)).items():
                if v != default[k]:
                    raise ValueError(f"recipe: '{section}.{k}' only applies to task.name 'envs', "
                                     f"got task.name {r.task.name!r}")
        return
    from longcat.envs.noise import NOISE_TYPES

    e, c, x = r.envs, r.curriculum, r.context

    def need(cond, key, expected, got):
        if not cond:
            raise ValueError(f"recipe: '{key}' must be {expected}, got {got!r}")

    for key, v in (("envs.count", e.count), ("envs.tasks_per_env", e.tasks_per_env), ("envs.max_turns", e.max_turns),
                   ("curriculum.min_updates", c.min_updates)):
        need(v >= 1, key, ">= 1", v)
    need(e.max_model_len > r.rollout.max_new_tokens, "envs.max_model_len", f"> rollout.max_new_tokens "
         f"({r.rollout.max_new_tokens})", e.max_model_len)
    need(e.reward in ("success", "partial"), "envs.reward", "'success' or 'partial'", e.reward)
    need(e.tool_format in (None, "compact", "json"), "envs.tool_format", "None, 'compact' or 'json'", e.tool_format)
    need(0 <= e.noisy_fraction <= 1, "envs.noisy_fraction", "in [0, 1]", e.noisy_fraction)
    need(0 <= e.noise_intensity <= 1, "envs.noise_intensity", "in [0, 1]", e.noise_intensity)
    need(e.episode_timeout > 0, "envs.episode_timeout", "> 0", e.episode_timeout)
    for key, names in (("envs.noise", e.noise), ("curriculum.order", c.order or [])):
        bad = [t for t in names if t not in NOISE_TYPES]
        need(not bad, key, f"a list of noise types from {list(NOISE_TYPES)}", bad)
    for key, v in (("envs.domains", e.domains), ("envs.tiers", e.tiers)):
        need(v is None or (isinstance(v, list) and v), key, "None or a non-empty list", v)
    for key, v in (("context.summarize_at", x.summarize_at), ("context.max_turns", x.max_turns)):
        need(v is None or v >= 1, key, "None or >= 1", v)
    if x.summarize_at is not None and x.summarize_at + r.rollout.max_new_tokens >= e.max_model_len:
        raise ValueError(f"recipe: 'context.summarize_at' ({x.summarize_at}) + rollout.max_new_tokens "
                         f"({r.rollout.max_new_tokens}) must stay below envs.max_model_len ({e.max_model_len}): "
                         "the summary is written before the context is full")
    if r.warm_start.steps:
        raise ValueError(f"recipe: 'warm_start.steps' ({r.warm_start.steps}) is the arithmetic warm start; with "
                         "task.name 'envs' the warm start is model.checkpoint (an SFT checkpoint) or --init")
    if c.enabled and e.noise:
        raise ValueError(f"recipe: 'envs.noise' ({e.noise}) conflicts with curriculum.enabled: the curriculum "
                         "chooses the noise of noisy episodes")
    if c.enabled and e.noisy_fraction in (0, 1):
        raise ValueError(f"recipe: 'envs.noisy_fraction' ({e.noisy_fraction}) must be strictly between 0 and 1 "
                         "with curriculum.enabled: the curriculum needs both clean and noisy episodes")
    try:
        from longcat.envs.curriculum import NoiseCurriculum

        NoiseCurriculum(start_intensity=c.start_intensity, max_intensity=c.max_intensity, step=c.step,
                        close_gap=c.close_gap, backoff_gap=c.backoff_gap, ema=c.ema)
    except ValueError as err:
        raise ValueError(f"recipe: 'curriculum': {err}") from None


def load_recipe(recipe: Union[str, os.PathLike, dict, Recipe]) -> Recipe:
    """A ``Recipe`` from a YAML path, a dict or a Recipe (validated either way)."""
    if isinstance(recipe, Recipe):
        data = recipe.to_dict()
    elif isinstance(recipe, dict):
        data = recipe
    elif isinstance(recipe, (str, os.PathLike)):
        import yaml

        path = os.fspath(recipe)
        if not os.path.isfile(path):
            raise ValueError(f"recipe: {path!r} is not a file")
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    else:
        raise TypeError(f"recipe must be a path, a dict or a Recipe, got {type(recipe).__name__}")
    r = _build(Recipe, data, "")
    _check(r)
    return r
