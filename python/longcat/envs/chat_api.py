"""A minimal client for OpenAI-compatible ``/v1/chat/completions`` endpoints (``longcat serve``,
vLLM, the OpenAI API): the LLM user simulator and ``OpenAIAgent`` talk to a model through it.

Standard library only (``urllib``), so the environments need no client package; the endpoint is
whatever URL the caller passes (tests use a local stub server; nothing here reaches the network
on its own).
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Mapping, Sequence

__all__ = ["ChatAPIError", "chat_completion", "completions_url"]


class ChatAPIError(RuntimeError):
    """The endpoint could not be reached or answered something that is not a chat completion."""


def completions_url(base_url: str) -> str:
    """``http://host:port`` or ``.../v1`` or the full ``.../v1/chat/completions`` -> the full URL."""
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise ValueError(f"base_url: expected an http(s) URL of an OpenAI-compatible endpoint, "
                         f"got {base_url!r}")
    url = base_url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    if not url.endswith("/v1"):
        url += "/v1"
    return url + "/chat/completions"


def chat_completion(base_url: str, messages: Sequence[Mapping], *, model: str = "default",
                    tools: Sequence[Mapping] | None = None, temperature: float = 0.0,
                    max_tokens: int | None = None, api_key: str | None = None,
                    timeout: float = 120.0) -> dict:
    """One chat completion; returns the first choice's ``message`` (``role``, ``content``,
    optional ``tool_calls``)."""
    body: dict[str, Any] = {"model": model, "messages": list(messages),
                            "temperature": temperature}
    if tools:
        body["tools"] = list(tools)
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    req = urllib.request.Request(completions_url(base_url), data=json.dumps(body).encode(),
                                 headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            payload = json.loads(resp.read().decode())
    except urllib.error.HTTPError as e:
        raise ChatAPIError(f"{completions_url(base_url)}: HTTP {e.code}: "
                           f"{e.read()[:300].decode(errors='replace')}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ChatAPIError(f"{completions_url(base_url)}: {e}") from None
    try:
        msg = payload["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        raise ChatAPIError(f"{completions_url(base_url)}: expected a chat completion with "
                           f"choices[0].message, got {str(payload)[:300]}") from None
    if not isinstance(msg, dict):
        raise ChatAPIError(f"{completions_url(base_url)}: choices[0].message is not an object")
    return msg
