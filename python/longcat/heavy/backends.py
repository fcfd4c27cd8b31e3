"""Where candidates come from: the built-in engine or any OpenAI-compatible server.

A backend takes a list of ``SampleRequest`` (a prompt, text or chat messages, and ``n``) and
returns one ``SampleBatch`` per request. The engine runs them all in one ``LLM.generate`` call:
the ``n`` samples of a request fork from its prompt's KV-cache pages, so the prompt is prefilled
once. A server gets one ``n``-sample request per prompt (``/v1/completions`` for text,
``/v1/chat/completions`` for messages); if that request fails or times out, its samples are
asked for one by one, and the ones that still fail are reported (``num_failed``), not fatal.
"""
from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Optional, Protocol, Sequence, Union

from longcat.heavy.candidates import Candidate

Messages = list[dict]
Prompt = Union[str, Messages]


@dataclass
class SampleRequest:
    prompt: Prompt
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    seed: Optional[int] = None
    max_tokens: int = 256
    logprobs: Optional[int] = None   # top alternatives per token (DeepConf needs a few)
    tools: Optional[list[dict]] = None
    # The completions allowed (decoding constrained to them, then EOS): a summary that may only
    # answer with one of the shown answers. Only the built-in engine constrains.
    choices: Optional[list[str]] = None


class ChoiceConstraint:
    """A logits processor that lets a sample write only one of ``choices`` (token ids each,
    then ``eos``): at every step, tokens that continue no choice with the prefix written so
    far are masked, so the model's own scores choose among the choices token by token."""

    def __init__(self, choices: Sequence[Sequence[int]], eos: int):
        if not choices or any(len(c) == 0 for c in choices):
            raise ValueError(f"choices: expected at least one non-empty token sequence, got {list(choices)!r}")
        if eos is None:
            raise ValueError("eos: a constrained choice ends with the tokenizer's EOS token id; the tokenizer has none")
        self.choices = [list(c) + [eos] for c in choices]

    def __call__(self, generated: Sequence[int], logits):
        import torch

        n = len(generated)
        allowed = {c[n] for c in self.choices if len(c) > n and c[:n] == list(generated)}
        if not allowed:  # cannot happen while every step obeys the mask; EOS ends it if it does
            allowed = {self.choices[0][-1]}
        out = torch.full_like(logits, float("-inf"))
        idx = torch.tensor(sorted(allowed), device=logits.device)
        out[idx] = logits[idx]
        return out


@dataclass
class SampleBatch:
    candidates: list[Candidate]
    prompt_tokens: int = 0
    prompt_token_ids: Optional[list[int]] = None
    num_failed: int = 0
    errors: list[str] = field(default_factory=list)


class Backend(Protocol):
    def sample(self, requests: Sequence[SampleRequest]) -> list[SampleBatch]: ...

    def count_tokens(self, text: str) -> int: ...


class EngineBackend:
    """Samples with ``longcat.engine.LLM`` (a checkpoint folder or an ``LLM``)."""

    def __init__(self, llm, **engine_args):
        from longcat.engine import LLM

        self.llm = llm if isinstance(llm, LLM) else LLM(llm, **engine_args)
        self.tokenizer = self.llm.tokenizer
        if self.tokenizer is None:
            raise ValueError("EngineBackend: the engine has no tokenizer; Heavy Thinking works on text")

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def sample(self, requests: Sequence[SampleRequest]) -> list[SampleBatch]:
        from longcat.engine import SamplingParams
        from longcat.engine.chat import chat_stop_token_ids, render_prompt

        prompts, params = [], []
        for r in requests:
            stops = None
            prompt = r.prompt
            if not isinstance(prompt, str):
                prompt = render_prompt(self.tokenizer, prompt, r.tools)
                stops = chat_stop_token_ids(self.tokenizer)
            prompts.append(prompt)
            procs = None
            if r.choices:
                ids = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in r.choices]
                procs = [ChoiceConstraint([i for i in ids if i], self.tokenizer.eos_token_id)]
            params.append(SamplingParams(n=r.n, temperature=r.temperature, top_p=r.top_p, seed=r.seed,
                                         max_tokens=r.max_tokens, logprobs=r.logprobs, stop_token_ids=stops,
                                         logits_processors=procs))
        batches = []
        for r, out in zip(requests, self.llm.generate(prompts, params)):
            if out.error is not None:
                raise ValueError(f"prompt: the engine cannot serve it: {out.error}")
            cands = [Candidate(o.text, o.finish_reason, len(o.token_ids),
                               None if o.logprobs is None else [list(lp.values()) for lp in o.logprobs],
                               list(o.token_ids)) for o in out.outputs]
            batches.append(SampleBatch(cands, len(out.prompt_token_ids), list(out.prompt_token_ids)))
        return batches


class EndpointError(RuntimeError):
    """The server gave no candidate at all for a request."""


class OpenAIBackend:
    """Samples from an OpenAI-compatible server (``longcat serve``, vLLM, SGLang).

    ``endpoint``: the base URL (``http://host:port`` or ``.../v1``); ``model``: the served name
    (None: the first of ``/v1/models``); ``timeout``: seconds per HTTP request. Token counts
    come from the server (logprobs or usage); text is measured with ``tokenizer`` when given,
    else as one token per 4 characters (a budget estimate, said so in ``count_tokens``)."""

    def __init__(self, endpoint: str, model: Optional[str] = None, api_key: Optional[str] = None,
                 timeout: float = 120.0, tokenizer=None, max_workers: int = 8):
        if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"endpoint: expected an http(s) URL, got {endpoint!r}")
        if timeout <= 0:
            raise ValueError(f"timeout: expected seconds > 0, got {timeout!r}")
        base = endpoint.rstrip("/")
        self.base = base if base.endswith("/v1") else base + "/v1"
        self.api_key, self.timeout, self.max_workers = api_key, timeout, max_workers
        self.tokenizer = tokenizer
        self.model = model or self._first_model()

    # ---- HTTP ------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: Optional[dict] = None) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:300]
            raise EndpointError(f"{method} {self.base}{path}: HTTP {e.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, OSError, ValueError) as e:
            raise EndpointError(f"{method} {self.base}{path}: {type(e).__name__}: {e}") from None

    def _first_model(self) -> str:
        models = self._call("GET", "/models").get("data") or []
        if not models:
            raise EndpointError(f"{self.base}/models lists no model; pass model=")
        return models[0]["id"]

    def count_tokens(self, text: str) -> int:
        if self.tokenizer is not None:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return math.ceil(len(text) / 4)

    # ---- one request -------------------------------------------------------------------------

    def _body(self, r: SampleRequest, n: int, seed: Optional[int]) -> tuple[str, dict]:
        body = {"model": self.model, "n": n, "temperature": r.temperature, "top_p": r.top_p,
                "max_tokens": r.max_tokens}
        if seed is not None:
            body["seed"] = seed
        if isinstance(r.prompt, str):
            body["prompt"] = r.prompt
            if r.logprobs is not None:
                body["logprobs"] = r.logprobs
            return "/completions", body
        body["messages"] = r.prompt
        if r.tools:
            body["tools"] = r.tools
        if r.logprobs is not None:
            body["logprobs"], body["top_logprobs"] = True, r.logprobs
        return "/chat/completions", body

    def _candidate(self, choice: dict, chat: bool) -> Candidate:
        lps = None
        if chat:
            msg = choice.get("message") or {}
            text = msg.get("content") or ""
            for call in msg.get("tool_calls") or []:  # back to the text form the parser reads
                fn = call.get("function", {})
                args = fn.get("arguments") or "{}"
                try:
                    args = json.loads(args) if isinstance(args, str) else args
                except ValueError:
                    pass  # the parser will find it malformed and leave it as content
                text += f"<tool_call>\n{json.dumps({'name': fn.get('name'), 'arguments': args})}\n</tool_call>"
            entries = (choice.get("logprobs") or {}).get("content")
            if entries:
                lps = [[e["logprob"]] + [t["logprob"] for t in e.get("top_logprobs") or []
                                         if t.get("token") != e.get("token")] for e in entries]
        else:
            text = choice.get("text") or ""
            lp = choice.get("logprobs")
            if lp and lp.get("token_logprobs") is not None:
                tops = lp.get("top_logprobs") or [None] * len(lp["token_logprobs"])
                lps = [[v] + [x for tok, x in (top or {}).items() if tok != t]
                       for t, v, top in zip(lp["tokens"], lp["token_logprobs"], tops)]
        num = len(lps) if lps is not None else self.count_tokens(text)
        return Candidate(text, choice.get("finish_reason"), num, lps)

    def _request(self, r: SampleRequest, n: int, seed: Optional[int]) -> tuple[list[Candidate], int]:
        path, body = self._body(r, n, seed)
        resp = self._call("POST", path, body)
        choices = sorted(resp.get("choices") or [], key=lambda c: c.get("index", 0))
        cands = [self._candidate(c, path == "/chat/completions") for c in choices[:n]]
        return cands, int((resp.get("usage") or {}).get("prompt_tokens") or 0)

    def _sample_one(self, r: SampleRequest) -> SampleBatch:
        try:
            cands, prompt_tokens = self._request(r, r.n, r.seed)
            missing = r.n - len(cands)
            return SampleBatch(cands, prompt_tokens, num_failed=missing,
                               errors=[f"the server returned {len(cands)} of {r.n} choices"] if missing else [])
        except EndpointError as first:
            errors = [f"n={r.n} request: {first}"]
        # Sample by sample, each with its own seed, so one bad sample does not sink the others.
        seeds = [None if r.seed is None else r.seed + i for i in range(r.n)]
        cands, prompt_tokens, failed = [], 0, 0
        with ThreadPoolExecutor(min(self.max_workers, r.n)) as pool:
            for result in pool.map(lambda s: self._try(r, s), seeds):
                if isinstance(result, str):
                    failed += 1
                    errors.append(result)
                else:
                    cands += result[0]
                    prompt_tokens = prompt_tokens or result[1]
        if not cands:
            raise EndpointError(f"no candidate from {self.base} for this prompt ({r.n} tried): {errors[-1]}")
        return SampleBatch(cands, prompt_tokens, num_failed=failed, errors=errors)

    def _try(self, r: SampleRequest, seed: Optional[int]):
        try:
            return self._request(r, 1, seed)
        except EndpointError as e:
            return str(e)

    def sample(self, requests: Sequence[SampleRequest]) -> list[SampleBatch]:
        if any(r.choices for r in requests):
            raise ValueError("choices: constrained decoding (a summary template that constrains, e.g. 'choose') "
                             "needs the built-in engine (EngineBackend); OpenAI-compatible servers do not take it")
        if len(requests) == 1:
            return [self._sample_one(requests[0])]
        with ThreadPoolExecutor(min(self.max_workers, len(requests))) as pool:
            return list(pool.map(self._sample_one, requests))
