"""The synchronous engine core: requests in, one packed model call per ``step()``, tokens out.

``LLM`` (offline) and ``AsyncEngine`` (streaming, a background step thread) both drive this
class; it is not thread-safe by itself (AsyncEngine calls it from its one step thread only).
"""
from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, replace
from typing import Optional, Sequence as Seq, Union

import torch

from longcat.engine import sampler
from longcat.engine.block_manager import BlockAllocator
from longcat.engine.kv_swap import HostKVTier
from longcat.engine.scheduler import Scheduler
from longcat.engine.sequence import Request, SeqStatus, Sequence
from longcat.engine.types import Completion, CompletionOutput, SamplingParams
from longcat.engine.weights import WeightsSource, apply_weights
from longcat.models.paged import PagedBatch

Prompt = Union[str, Seq[int]]
DETOKENIZE_CONTEXT = 5  # prompt tokens decoded before the first output token (leading spaces, merges)


@dataclass
class EngineArgs:
    """Engine sizing. ``num_pages`` None: ``max_num_seqs * ceil(max_model_len / page_size)``
    pages, capped so the caches of all sublayers take at most ``max_kv_cache_bytes``.
    ``max_model_len`` None: the config's ``max_position_embeddings``. ``dtype`` None: the
    model's. ``seed`` seeds the generators of requests that give no seed of their own.

    ``num_host_pages`` > 0 adds a host tier of that many pages (pinned on CUDA): sequences evicted
    for lack of device pages, or while device usage is above ``swap_high_watermark`` (a
    fraction of ``num_pages``), are swapped out to it and back instead of being recomputed,
    ``swap_chunk_pages`` pages per asynchronous copy (``engine/kv_swap.py``). 0: recompute."""

    page_size: int = 64
    num_pages: Optional[int] = None
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048
    max_model_len: Optional[int] = None
    dtype: Optional[Union[torch.dtype, str]] = None
    seed: int = 0
    enable_prefix_caching: bool = True
    max_kv_cache_bytes: int = 4 << 30
    num_host_pages: int = 0
    swap_high_watermark: float = 0.95
    swap_chunk_pages: int = 16

    def __post_init__(self):
        if isinstance(self.swap_high_watermark, bool) or not isinstance(self.swap_high_watermark, (int, float)) \
                or not 0.0 < self.swap_high_watermark <= 1.0:
            raise ValueError(f"EngineArgs.swap_high_watermark must be a number in (0, 1], got {self.swap_high_watermark!r}")
        for name, low in (("page_size", 1), ("max_num_seqs", 1), ("max_num_batched_tokens", 1),
                          ("num_host_pages", 0), ("swap_chunk_pages", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"EngineArgs.{name} must be an int >= {low}, got {v!r}")
        for name in ("num_pages", "max_model_len"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"EngineArgs.{name} must be None or an int >= 1, got {v!r}")
        if isinstance(self.dtype, str):
            dt = getattr(torch, self.dtype, None)
            if not isinstance(dt, torch.dtype):
                raise ValueError(f"EngineArgs.dtype must be a torch dtype or its name, got {self.dtype!r}")
            self.dtype = dt


def _config_get(config, name, default=None):
    if isinstance(config, dict):
        return config.get(name, default)
    return getattr(config, name, default)


class LLMEngine:
    """Continuous-batching generation over a ``PagedModel`` (see ``longcat.models.paged``)."""

    def __init__(self, model: torch.nn.Module, tokenizer=None, args: Optional[EngineArgs] = None):
        self.args = args = args or EngineArgs()
        if args.dtype is not None:
            model = model.to(args.dtype)
        model.eval()
        self.model = model
        self.tokenizer = tokenizer
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        config = model.config
        self.vocab_size = int(_config_get(config, "vocab_size"))
        self.max_model_len = args.max_model_len or int(_config_get(config, "max_position_embeddings", 2048))
        ps = args.page_size
        num_pages = args.num_pages
        if num_pages is None:
            num_pages = args.max_num_seqs * math.ceil(self.max_model_len / ps)
            probe = model.make_kv_caches(1, ps, dtype=self.dtype, device="meta")
            page_bytes = sum(c.numel() * c.element_size() for c in probe)
            num_pages = max(1, min(num_pages, args.max_kv_cache_bytes // page_bytes))
        self.num_pages = num_pages
        self.kv_caches = model.make_kv_caches(num_pages, ps, dtype=self.dtype, device=self.device)
        # A sequence longer than the whole cache could never run: the cache caps the length too.
        self.max_len = min(self.max_model_len, num_pages * ps)
        self.allocator = BlockAllocator(num_pages, ps, args.enable_prefix_caching)
        self.host_tier = (HostKVTier(self.kv_caches, args.num_host_pages, args.swap_chunk_pages)
                          if args.num_host_pages else None)
        self.scheduler = Scheduler(self.allocator, args.max_num_seqs, args.max_num_batched_tokens,
                                   self.host_tier, float(args.swap_high_watermark))
        self.eos_ids = self._eos_ids(config, tokenizer)
        self.version = 0
        self.requests: dict[str, Request] = {}
        self._seq_ids = itertools.count()
        self._arrivals = itertools.count()
        self._auto_ids = itertools.count()
        self._rng = random.Random(args.seed)
        self.num_steps = 0

    @staticmethod
    def _eos_ids(config, tokenizer) -> set[int]:
        eos = _config_get(config, "eos_token_id")
        ids = set(eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])
        if tokenizer is not None and getattr(tokenizer, "eos_token_id", None) is not None:
            ids.add(int(tokenizer.eos_token_id))
        return ids

    # ---- requests --------------------------------------------------------------------------

    def _encode(self, prompt: Prompt) -> tuple[Optional[str], list[int]]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("prompt: a text prompt needs a tokenizer; pass token ids or give the engine one")
            return prompt, list(self.tokenizer(prompt)["input_ids"])
        if isinstance(prompt, torch.Tensor):
            prompt = prompt.tolist()
        if not isinstance(prompt, (list, tuple)):
            raise TypeError(f"prompt must be a str or a list of token ids, got {type(prompt).__name__}")
        ids = list(prompt)
        for t in ids:
            if isinstance(t, bool) or not isinstance(t, int):
                raise TypeError(f"prompt: token ids must be ints, got {type(t).__name__}")
        return None, ids

    def _check_prompt(self, ids: list[int]) -> Optional[str]:
        """Why this prompt cannot be served, or None."""
        if not ids:
            return "prompt is empty"
        bad = [t for t in ids if not 0 <= t < self.vocab_size]
        if bad:
            return f"prompt holds token id(s) outside [0, {self.vocab_size}): {bad[:5]}"
        if len(ids) >= self.max_model_len:
            return (f"prompt has {len(ids)} tokens; max_model_len {self.max_model_len} leaves no room for a "
                    f"generated token")
        if len(ids) >= self.max_len:
            return (f"prompt has {len(ids)} tokens; the KV cache holds {self.max_len} tokens per sequence "
                    f"({self.num_pages} pages of {self.args.page_size})")
        return None

    def add_request(self, prompt: Prompt, params: Optional[SamplingParams] = None,
                    request_id: Optional[str] = None) -> Request:
        """Queue a request. Invalid sampling params raise ValueError; a prompt that cannot be
        served gives a Request that is already finished with ``error`` set."""
        params = params if params is not None else SamplingParams()
        sampler.validate_params(params)
        if params.stop and self.tokenizer is None:
            raise ValueError("SamplingParams.stop: stop strings need a tokenizer (the engine has none)")
        if params.n > self.args.max_num_seqs:
            raise ValueError(f"SamplingParams.n must be <= max_num_seqs ({self.args.max_num_seqs}), got {params.n}")
        text, ids = self._encode(prompt)
        if request_id is None:
            request_id = f"req-{next(self._auto_ids)}"
            while request_id in self.requests:  # a caller may have used this name
                request_id = f"req-{next(self._auto_ids)}"
        elif request_id in self.requests:
            raise ValueError(f"request_id {request_id!r} is already in use")
        req = Request(request_id, text, ids, params, next(self._arrivals),
                      outputs=[CompletionOutput(index=i, cumulative_logprob=0.0,
                                                logprobs=[] if params.logprobs is not None else None)
                               for i in range(params.n)])
        req.error = self._check_prompt(ids)
        if req.error is None:
            self.requests[request_id] = req
            seq = self._new_sequence(req, 0, list(ids))
            self.scheduler.add(seq)
        return req

    def _generator(self, params: SamplingParams, index: int) -> Optional[torch.Generator]:
        if params.temperature == 0:
            return None
        seed = params.seed if params.seed is not None else self._rng.getrandbits(62)
        g = torch.Generator(device=self.device)
        # Sample i of a seeded request: its own stream, a function of (seed, i) only.
        g.manual_seed((seed * 1_000_003 + index) % (1 << 63) if index else seed % (1 << 63))
        return g

    def _new_sequence(self, req: Request, index: int, token_ids: list[int]) -> Sequence:
        seq = Sequence(next(self._seq_ids), req, index, token_ids, self._generator(req.params, index),
                       req.outputs[index])
        req.seqs.append(seq)
        return seq

    def abort(self, request_id: str) -> Optional[Request]:
        """Stop a request now; its pages are freed. Returns it (None if unknown or done)."""
        req = self.requests.pop(request_id, None)
        if req is None:
            return None
        for seq in req.seqs:
            if not seq.finished:
                self._finish(seq, "abort")
        for out in req.outputs:
            if out.finish_reason is None:
                out.finish_reason = "abort"
        return req

    def has_unfinished(self) -> bool:
        return bool(self.requests)

    def kv_cache_stats(self) -> dict:
        """Cache pressure so far: preemptions for recompute, and what the host tier moved
        (``SwapStats``: swap-outs/-ins, bytes each way, stall seconds, recomputation avoided)."""
        stats = {"num_preemptions": self.scheduler.num_preemptions, "num_pages": self.num_pages,
                 "num_free_pages": self.allocator.num_free, "num_swapped": len(self.scheduler.swapped)}
        if self.host_tier is not None:
            stats.update(self.host_tier.stats.as_dict(), num_host_pages=self.host_tier.num_pages,
                         num_free_host_pages=self.host_tier.num_free)
        return stats

    # ---- weights ---------------------------------------------------------------------------

    def update_weights(self, state_dict_or_path: WeightsSource, version: int, recompute_kv: bool = True,
                       strict: bool = True) -> None:
        """Swap the weights between steps; requests continue, their new tokens stamped ``version``.

        recompute_kv (default): running sequences drop their cached latents and are prefilled
        again (prompt + tokens so far) under the new weights, so every token after the switch is
        exactly what the new weights produce for that context (AReaL's interruptible
        generation). False keeps the old latents (cheaper; vLLM's pause(keep) without
        clear_cache). Cached prefixes of finished requests are never reused across versions.
        """
        if isinstance(version, bool) or not isinstance(version, int):
            raise TypeError(f"update_weights: argument 'version' must be an int, got {type(version).__name__}")
        apply_weights(self.model, state_dict_or_path, strict=strict)
        self.version = version
        self.scheduler.epoch += 1
        self.allocator.clear_prefix_cache()
        if recompute_kv:
            self.scheduler.preempt_all()

    # ---- one step --------------------------------------------------------------------------

    def _build_batch(self, seqs: list[Sequence], num_tokens: list[int]) -> tuple[PagedBatch, list[Sequence]]:
        ids: list[int] = []
        positions: list[int] = []
        cu = [0]
        seq_lens: list[int] = []
        rows: list[int] = []
        sampling: list[Sequence] = []
        for seq, n in zip(seqs, num_tokens):
            start = seq.num_computed
            ids.extend(seq.token_ids[start:start + n])
            positions.extend(range(start, start + n))
            cu.append(cu[-1] + n)
            seq_lens.append(start + n)
            if start + n == len(seq.token_ids):
                rows.append(cu[-1] - 1)
                sampling.append(seq)
        max_pages = max(len(s.pages) for s in seqs)
        table = [s.pages + [0] * (max_pages - len(s.pages)) for s in seqs]
        batch = PagedBatch.from_lists(ids, positions, cu, seq_lens, table, rows, max(num_tokens), self.device)
        return batch, sampling

    def _copy_pages(self, copies: list[tuple[int, int]]) -> None:
        src = torch.tensor([s for s, _ in copies], device=self.device)
        dst = torch.tensor([d for _, d in copies], device=self.device)
        for cache in self.kv_caches:
            cache[dst] = cache[src]

    def _fork(self, seq: Sequence) -> list[Sequence]:
        """Samples 1..n-1 of seq's request, sharing its pages (the prompt is computed once)."""
        req = seq.request
        req.forked = True
        children = []
        for i in range(1, req.params.n):
            child = self._new_sequence(req, i, list(seq.token_ids))
            child.num_computed, child.kv_epoch = seq.num_computed, seq.kv_epoch
            child.pages, child.page_keys = list(seq.pages), list(seq.page_keys)
            for p in child.pages:
                self.allocator.share(p)
            self.scheduler.add_running(child)
            children.append(child)
        return children

    def step(self) -> list[Request]:
        """Run one scheduled batch; returns the requests that got tokens or finished."""
        sched = self.scheduler.schedule()
        if not sched.seqs:
            return []
        self.num_steps += 1
        if sched.copies:
            self._copy_pages(sched.copies)
        batch, sampling = self._build_batch(sched.seqs, sched.num_tokens)
        with torch.inference_mode():
            logits = self.model.forward_paged(batch, self.kv_caches)
        for seq, n in zip(sched.seqs, sched.num_tokens):
            seq.num_computed += n
            self.scheduler.register_full_pages(seq)
        rows, row_seqs = [], []
        for i, seq in enumerate(sampling):
            group = [seq]
            if not seq.request.forked and seq.request.params.n > 1:
                group += self._fork(seq)
            rows += [i] * len(group)
            row_seqs += group
        if not row_seqs:
            return []
        if len(rows) != logits.shape[0]:
            logits = logits[torch.tensor(rows, device=logits.device)]
        failed: dict[str, str] = {}
        if any(s.request.params.logits_processors for s in row_seqs):
            logits = logits.float().clone()   # the forward's inference-mode tensor cannot be written
            for i, seq in enumerate(row_seqs):
                error = self._apply_logits_processors(seq, logits, i)
                if error is not None:
                    failed.setdefault(seq.request.request_id, error)
        out = sampler.sample(logits, [s.request.params for s in row_seqs], [s.generator for s in row_seqs])
        touched: dict[str, Request] = {}
        for rid, error in failed.items():   # only that request ends; the rest of the batch goes on
            req = self.abort(rid)
            if req is not None:
                req.error = error
                touched[rid] = req
        for i, seq in enumerate(row_seqs):
            if seq.request.request_id in failed:
                continue
            top = None if out.top_ids is None else (out.top_ids[i], out.top_logprobs[i])
            self._append_token(seq, out.token_ids[i], out.logprobs[i], top)
            touched[seq.request.request_id] = seq.request
        for req in touched.values():
            if req.finished:
                self.requests.pop(req.request_id, None)
        return list(touched.values())

    @staticmethod
    def _apply_logits_processors(seq: Sequence, logits: torch.Tensor, row: int) -> Optional[str]:
        """Runs the request's logits processors on its row in place; a processor that raises or
        returns something else than a tensor of the row's shape gives the error that ends only
        this request."""
        for j, proc in enumerate(seq.request.params.logits_processors or ()):
            try:
                new = proc(list(seq.output.token_ids), logits[row])
            except Exception as e:  # a user callable: any failure is that request's
                return f"SamplingParams.logits_processors[{j}] raised {type(e).__name__}: {e}"
            if not isinstance(new, torch.Tensor) or new.shape != logits[row].shape:
                got = tuple(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__
                return (f"SamplingParams.logits_processors[{j}]: expected a tensor of shape "
                        f"{tuple(logits[row].shape)}, got {got}")
            logits[row] = new
        return None

    # ---- tokens, text, stopping --------------------------------------------------------------

    def _append_token(self, seq: Sequence, token: int, logprob: float, top) -> None:
        params, out = seq.request.params, seq.output
        seq.token_ids.append(token)
        out.token_ids.append(token)
        out.versions.append(self.version)
        out.cumulative_logprob += logprob
        if params.logprobs is not None:
            entry = {token: logprob}
            if top is not None:
                for tid, lp in zip(top[0][:params.logprobs], top[1][:params.logprobs]):
                    entry.setdefault(tid, lp)
            out.logprobs.append(entry)
        if token in self.eos_ids and not params.ignore_eos:
            return self._finish(seq, "stop", None)
        if params.stop_token_ids and token in params.stop_token_ids:
            return self._finish(seq, "stop", token)
        if self.tokenizer is not None:
            delta = self._detokenize(seq)
            if params.stop and delta:
                hit = self._find_stop(seq.full_text, len(delta), params.stop)
                if hit is not None:
                    pos, stop = hit
                    out.text = seq.full_text[:pos + (len(stop) if params.include_stop_str_in_output else 0)]
                    return self._finish(seq, "stop", stop, set_text=False)
            hold = 0 if params.include_stop_str_in_output or not params.stop else max(map(len, params.stop)) - 1
            out.text = seq.full_text[:len(seq.full_text) - hold]
        if params.max_tokens is not None and len(out.token_ids) >= params.max_tokens:
            return self._finish(seq, "length")
        if len(seq.token_ids) >= self.max_len:
            return self._finish(seq, "length")

    def _detokenize(self, seq: Sequence, final: bool = False) -> str:
        """Text added by the newest tokens (vLLM's windowed incremental decode: the window starts
        a few tokens back, into the prompt at first, so merges and leading spaces come out as in
        a full decode; a token that ends inside a UTF-8 character waits for the next one)."""
        ids = seq.token_ids
        if seq.read_offset == 0:  # first output token: start the window in the prompt's tail
            seq.read_offset = seq.num_prompt
            seq.prefix_offset = max(0, seq.num_prompt - DETOKENIZE_CONTEXT)
        decode = self.tokenizer.decode
        prefix = decode(ids[seq.prefix_offset:seq.read_offset], skip_special_tokens=True)
        full = decode(ids[seq.prefix_offset:], skip_special_tokens=True)
        if len(full) > len(prefix) and (final or not full.endswith("\ufffd")):
            delta = full[len(prefix):]
            seq.prefix_offset, seq.read_offset = seq.read_offset, len(ids)
            seq.full_text += delta
            return delta
        return ""

    @staticmethod
    def _find_stop(text: str, new_chars: int, stops: list[str]) -> Optional[tuple[int, str]]:
        best = None
        for s in stops:
            i = text.find(s, max(0, len(text) - new_chars - len(s) + 1))
            if i >= 0 and (best is None or i < best[0]):
                best = (i, s)
        return best

    def _finish(self, seq: Sequence, reason: str, stop_reason=None, set_text: bool = True) -> None:
        out = seq.output
        if self.tokenizer is not None and set_text:
            self._detokenize(seq, final=True)
            out.text = seq.full_text
        out.finish_reason, out.stop_reason = reason, stop_reason
        self.scheduler.finish(seq)

    # ---- results -----------------------------------------------------------------------------

    @staticmethod
    def snapshot(req: Request) -> Completion:
        """The request's result so far, detached from the engine's live lists."""
        outs = [replace(o, token_ids=list(o.token_ids), versions=list(o.versions),
                        logprobs=None if o.logprobs is None else list(o.logprobs)) for o in req.outputs]
        return Completion(req.request_id, req.prompt, list(req.prompt_token_ids), outs, req.finished, req.error)


__all__ = ["EngineArgs", "LLMEngine", "SeqStatus"]
