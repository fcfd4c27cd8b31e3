"""The engine's request and result types (vLLM's names where they fit, so users can swap)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class SamplingParams:
    """How to sample one request. ``temperature == 0`` is greedy; ``top_k <= 0`` / ``top_p == 1``
    / ``min_p == 0`` disable those filters. ``seed`` makes the request's samples reproducible
    whatever else is in the batch. ``stop`` strings and ``stop_token_ids`` end a sample (the EOS
    token too unless ``ignore_eos``); the stop string is cut from the text unless
    ``include_stop_str_in_output``. ``logprobs``: None, or the number of top alternatives to
    report per generated token besides the sampled one (0 = the sampled token's only).
    ``logits_processors``: None, or callables ``f(generated_token_ids, logits) -> logits`` applied
    in order to the request's next-token logits ``[vocab]`` before sampling (vLLM's per-request
    form; e.g. ``longcat.engine.guided.ToolCallGuide``); reported logprobs are the processed ones."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: Optional[int] = None
    max_tokens: Optional[int] = 16
    stop: Optional[list[str]] = None
    stop_token_ids: Optional[list[int]] = None
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    logprobs: Optional[int] = None
    logits_processors: Optional[list] = None


@dataclass
class CompletionOutput:
    """One sample of a request. ``logprobs[i]`` maps token id -> logprob for generated token i
    (the sampled token first, then the top alternatives asked for); ``versions[i]`` is the policy
    version of the weights that produced token i. ``finish_reason``: None while running, then
    "stop" (EOS, stop token or stop string; ``stop_reason`` says which), "length" or "abort"."""

    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    cumulative_logprob: Optional[float] = None
    logprobs: Optional[list[dict[int, float]]] = None
    versions: list[int] = field(default_factory=list)
    finish_reason: Optional[str] = None
    stop_reason: Optional[object] = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class Completion:
    """A request's result (vLLM's RequestOutput): its prompt and ``n`` samples. While streaming,
    each yielded Completion holds everything generated so far (cumulative, as vLLM's)."""

    request_id: str
    prompt: Optional[str]
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool = False
    error: Optional[str] = None
