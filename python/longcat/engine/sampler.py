"""Sampling for one engine step, vectorised over the batch.

Order as vLLM's V1 sampler: raw logprobs (``log_softmax`` of the model's float32 logits, before
temperature and filters: vLLM's default ``raw_logprobs``) -> temperature -> min-p -> top-k /
top-p -> sample. Rows with temperature 0 take the argmax. Random rows sample by the exponential
race (``argmax(p / E)``, ``E ~ Exp(1)``), which draws exactly from ``p``; each row draws its noise
from its own ``torch.Generator``, so a seeded request gets the same tokens whatever else is in
the batch (one RNG call per row; every vocabulary-wide operation is batched).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from longcat.engine.types import SamplingParams

MAX_LOGPROBS = 20  # top alternatives per token (vLLM's server default cap)


def validate_params(params: SamplingParams) -> None:
    """Raise ValueError naming the field of an invalid SamplingParams."""
    def bad(name, expected):
        raise ValueError(f"SamplingParams.{name} must be {expected}, got {getattr(params, name)!r}")

    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    if not isinstance(params, SamplingParams):
        raise TypeError(f"sampling_params must be a SamplingParams, got {type(params).__name__}")
    if not is_int(params.n) or params.n < 1:
        bad("n", "an int >= 1")
    if not isinstance(params.temperature, (int, float)) or not params.temperature >= 0 \
            or params.temperature == float("inf"):
        bad("temperature", "a finite number >= 0")
    if not isinstance(params.top_p, (int, float)) or not 0 < params.top_p <= 1:
        bad("top_p", "in (0, 1]")
    if not is_int(params.top_k) or params.top_k < -1:
        bad("top_k", "an int (0 or -1 = off, else >= 1)")
    if not isinstance(params.min_p, (int, float)) or not 0 <= params.min_p <= 1:
        bad("min_p", "in [0, 1]")
    if params.seed is not None and not is_int(params.seed):
        bad("seed", "None or an int")
    if params.max_tokens is not None and (not is_int(params.max_tokens) or params.max_tokens < 1):
        bad("max_tokens", "None or an int >= 1")
    if params.logprobs is not None and (not is_int(params.logprobs) or not 0 <= params.logprobs <= MAX_LOGPROBS):
        bad("logprobs", f"None or an int in [0, {MAX_LOGPROBS}]")
    if params.stop is not None:
        if isinstance(params.stop, str) or not all(isinstance(s, str) and s for s in params.stop):
            bad("stop", "None or a list of non-empty strings")
    if params.stop_token_ids is not None and not all(is_int(t) and t >= 0 for t in params.stop_token_ids):
        bad("stop_token_ids", "None or a list of token ids >= 0")
    if params.logits_processors is not None and (isinstance(params.logits_processors, (str, bytes)) or not all(
            callable(f) for f in params.logits_processors)):
        bad("logits_processors", "None or a list of callables f(generated_token_ids, logits) -> logits")


@dataclass
class SamplerOutput:
    token_ids: list[int]                       # the sampled token of each row
    logprobs: list[float]                      # its raw logprob
    top_ids: Optional[list[list[int]]]         # top-MAX alternatives of each row (None if no row asks)
    top_logprobs: Optional[list[list[float]]]


def apply_filters(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
                  min_p: torch.Tensor) -> torch.Tensor:
    """Scaled, filtered logits ``[N, V]`` (removed entries -inf). temperature ``[N]`` (> 0),
    top_k ``[N]`` int (<= 0: off), top_p ``[N]`` in (0, 1], min_p ``[N]`` in [0, 1]. The most
    likely token always survives."""
    logits = logits / temperature[:, None]
    vocab = logits.shape[-1]
    if bool((min_p > 0).any()):
        probs = logits.softmax(-1)
        threshold = probs.amax(-1, keepdim=True) * min_p[:, None]
        logits = logits.masked_fill(probs < threshold, float("-inf"))
    use_k = (top_k > 0) & (top_k < vocab)
    use_p = top_p < 1
    if bool(use_k.any()) or bool(use_p.any()):
        sorted_logits, order = logits.sort(-1, descending=True)
        rank = torch.arange(vocab, device=logits.device)[None, :]
        k = torch.where(use_k, top_k, vocab)
        remove = rank >= k[:, None]
        sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
        probs = sorted_logits.softmax(-1)
        # Keep the smallest prefix whose mass reaches top_p: drop a token when the mass before
        # it already does (the first token is always kept).
        mass_before = probs.cumsum(-1) - probs
        remove = remove | (mass_before >= top_p[:, None])
        remove[:, 0] = False
        logits = torch.full_like(logits, float("-inf")).scatter(
            -1, order, sorted_logits.masked_fill(remove, float("-inf")))
    return logits


def sample(logits: torch.Tensor, params: Sequence[SamplingParams],
           generators: Sequence[Optional[torch.Generator]]) -> SamplerOutput:
    """Sample one token per row of float32 ``logits [N, V]``; row i follows ``params[i]`` and
    draws from ``generators[i]`` (None only for greedy rows)."""
    logits = logits.float()
    n = logits.shape[0]
    raw_logprobs = logits.log_softmax(-1)
    temps = [p.temperature for p in params]
    greedy = [t == 0 for t in temps]
    tokens = logits.argmax(-1)
    if not all(greedy):
        dev = logits.device
        temperature = torch.tensor([t if t > 0 else 1.0 for t in temps], device=dev)
        top_k = torch.tensor([p.top_k for p in params], device=dev)
        top_p = torch.tensor([float(p.top_p) for p in params], device=dev)
        min_p = torch.tensor([float(p.min_p) for p in params], device=dev)
        probs = apply_filters(logits, temperature, top_k, top_p, min_p).softmax(-1)
        noise = torch.empty_like(probs)
        for i in range(n):
            if not greedy[i]:
                noise[i].exponential_(generator=generators[i])
        noise.clamp_(min=torch.finfo(noise.dtype).tiny)  # an exact 0 would divide by zero
        sampled = (probs / noise).argmax(-1)
        tokens = torch.where(torch.tensor(greedy, device=dev), tokens, sampled)
    chosen = raw_logprobs.gather(-1, tokens[:, None])[:, 0]
    want = max((p.logprobs or 0) for p in params)
    top_ids = top_lp = None
    if want > 0:
        top = raw_logprobs.topk(want, -1)
        top_ids, top_lp = top.indices.tolist(), top.values.tolist()
    return SamplerOutput(tokens.tolist(), chosen.tolist(), top_ids, top_lp)
