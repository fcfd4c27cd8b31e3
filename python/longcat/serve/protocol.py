"""Request bodies of the OpenAI-compatible server (pydantic) and OpenAI's error envelope.

Fields follow OpenAI's chat/completions APIs; ``top_k``, ``min_p``, ``ignore_eos`` and
``return_token_ids`` are vLLM's extras (clients send them with ``extra_body``). Unknown fields
are ignored, as OpenAI does; fields we cannot honour (penalties, ``logit_bias``, ``echo``,
``suffix``) are refused with 400 rather than silently dropped. A forced tool choice ("required"
or a named function) is honoured with constrained decoding (``longcat.engine.guided``).
"""
from __future__ import annotations

from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from longcat.engine.sampler import MAX_LOGPROBS
from longcat.engine.types import SamplingParams

__all__ = ["ChatCompletionRequest", "CompletionRequest", "UpdateWeightsRequest", "APIError", "error_body"]


class APIError(Exception):
    """An error answered in OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, message: str, status: int = 400, param: Optional[str] = None,
                 code: Optional[str] = None, type: str = "invalid_request_error"):
        super().__init__(message)
        self.message, self.status, self.param, self.code, self.type = message, status, param, code, type

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str = "invalid_request_error", param: Optional[str] = None,
               code: Optional[str] = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class _Sampling(BaseModel):
    """What chat and completions requests share."""

    model_config = ConfigDict(extra="ignore")

    model: str
    n: int = Field(1, ge=1, le=64)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=-1)
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    seed: Optional[int] = None
    stop: Union[str, list[str], None] = None
    stream: bool = False
    stream_options: Optional[dict[str, Any]] = None
    ignore_eos: bool = False
    # vLLM's and SGLang's extension: stop after any of these token ids (the RL policy's turn ends)
    stop_token_ids: Optional[list[int]] = None
    return_token_ids: bool = False
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: Optional[dict[str, float]] = None

    def check_supported(self) -> None:
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                raise APIError(f"{name}: not supported by this server (send 0 or leave it out)", param=name)
        if self.logit_bias:
            raise APIError("logit_bias: not supported by this server", param="logit_bias")

    def stop_list(self) -> Optional[list[str]]:
        if self.stop is None or self.stop == []:
            return None
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        if not all(stops):
            raise APIError("stop: expected non-empty strings", param="stop")
        return stops

    def stop_ids(self, vocab_size: int, defaults: Optional[list[int]] = None) -> Optional[list[int]]:
        """``stop_token_ids`` checked against the vocabulary, added to ``defaults``."""
        ids = list(defaults or [])
        for t in self.stop_token_ids or []:
            if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab_size:
                raise APIError(f"stop_token_ids: expected token ids in [0, {vocab_size}), got {t!r}",
                               param="stop_token_ids")
            if t not in ids:
                ids.append(t)
        return ids or None

    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))

    def sampling_params(self, max_tokens: Optional[int], logprobs: Optional[int],
                        stop_token_ids: Optional[list[int]] = None) -> SamplingParams:
        return SamplingParams(n=self.n, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
                              min_p=self.min_p, seed=self.seed, max_tokens=max_tokens, stop=self.stop_list(),
                              stop_token_ids=stop_token_ids, ignore_eos=self.ignore_eos, logprobs=logprobs)


class ChatCompletionRequest(_Sampling):
    messages: list[Any] = Field(min_length=1)
    tools: Optional[list[Any]] = None
    tool_choice: Union[str, dict[str, Any], None] = None
    parallel_tool_calls: Optional[bool] = None
    max_tokens: Optional[int] = Field(None, ge=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: Optional[int] = Field(None, ge=0, le=MAX_LOGPROBS)

    def check_supported(self) -> None:
        super().check_supported()
        tc = self.tool_choice
        named = isinstance(tc, dict) and tc.get("type") == "function" and isinstance(tc.get("function"), dict) \
            and isinstance(tc["function"].get("name"), str)
        if tc not in (None, "auto", "none", "required") and not named:
            raise APIError(f"tool_choice: expected 'auto', 'none', 'required' or "
                           f"{{'type': 'function', 'function': {{'name': ...}}}}, got {tc!r:.120}", param="tool_choice")
        if (tc == "required" or named) and not self.tools:
            raise APIError(f"tool_choice: {tc!r:.120} forces a tool call, but the request has no tools",
                           param="tool_choice")
        if self.top_logprobs and not self.logprobs:
            raise APIError("top_logprobs: needs logprobs=true", param="top_logprobs")

    def max_new_tokens(self) -> Optional[int]:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def num_logprobs(self) -> Optional[int]:
        return (self.top_logprobs or 0) if self.logprobs else None

    def parse_tools(self) -> bool:
        return bool(self.tools) and self.tool_choice != "none"

    def forced_tools(self, tools: Optional[list[dict]]) -> Optional[list[dict]]:
        """The tools a call must be made to (``tool_choice`` "required": all; a named function:
        that one), or None when the model may answer in text."""
        tc = self.tool_choice
        if tc == "required":
            return tools
        if isinstance(tc, dict):
            name = tc["function"]["name"]
            chosen = [t for t in tools or [] if t["function"]["name"] == name]
            if not chosen:
                raise APIError(f"tool_choice: names the function {name!r}, which is not among the request's tools "
                               f"{[t['function']['name'] for t in tools or []]}", param="tool_choice")
            return chosen
        return None


class CompletionRequest(_Sampling):
    prompt: Union[str, list[int], list[str], list[list[int]]]
    max_tokens: Optional[int] = Field(16, ge=1)
    logprobs: Optional[int] = Field(None, ge=0, le=MAX_LOGPROBS)
    echo: bool = False
    suffix: Optional[str] = None
    best_of: Optional[int] = None

    def check_supported(self) -> None:
        super().check_supported()
        if self.echo:
            raise APIError("echo: not supported by this server", param="echo")
        if self.suffix:
            raise APIError("suffix: not supported by this server", param="suffix")
        if self.best_of not in (None, self.n):
            raise APIError("best_of: not supported by this server (leave it out or equal to n)", param="best_of")

    def single_prompt(self) -> Union[str, list[int]]:
        """The prompt as text or token ids; a list holding one prompt is that prompt."""
        p = self.prompt
        if isinstance(p, list) and p and isinstance(p[0], (str, list)):
            if len(p) != 1:
                raise APIError(f"prompt: one prompt per request is supported, got {len(p)}", param="prompt")
            p = p[0]
        if not p:
            raise APIError("prompt: expected a non-empty string or list of token ids", param="prompt")
        return p


class UpdateWeightsRequest(BaseModel):
    """SGLang's ``update_weights_from_disk`` body; ``model_path`` / ``weight_version`` are accepted too."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1)
    version: int = Field(ge=0)

    @classmethod
    def parse(cls, body: Any) -> "UpdateWeightsRequest":
        if isinstance(body, dict):
            body = dict(body)
            if "model_path" in body and "path" not in body:
                body["path"] = body.pop("model_path")
            if "weight_version" in body and "version" not in body:
                body["version"] = body.pop("weight_version")
            body.pop("flush_cache", None)
        return cls.model_validate(body)

