"""``OpenAIPolicy``: any OpenAI-compatible server (``longcat serve``, vLLM, SGLang) as the RL
policy, token level: prompts go out as token ids to ``POST /v1/completions`` with
``logprobs: 0`` and ``return_token_ids: true``, so every sample comes back with its token ids and
the server's logprob of each sampled token (what truncated importance sampling needs). A
multi-turn task's turn ends at its chat stop tokens, sent as ``stop_token_ids`` (the extension
vLLM, SGLang and ``longcat serve`` share).

Weight-sync protocol (the trainer pushes after every step):

1. ``update_weights(state_dict, version)`` stops handing out the old version: trajectories that
   already pinned it finish first (a server holds one set of weights, so this is how a trajectory
   never mixes versions); new trajectories pin ``version`` and wait for it.
2. The state dict (Hugging Face names, as ``model.hf_state_dict()``) is written to
   ``<weights_dir>/policy-v<version>.safetensors`` (written, then renamed: the server never reads
   half a file). ``weights_dir`` must be readable by the server at the same path (same machine or
   a shared filesystem).
3. ``POST /v1/update_weights {"path": <file>, "version": <version>}`` (SGLang's
   ``/update_weights_from_disk`` with ``model_path`` / ``weight_version`` is the same route in
   ``longcat serve``). The server answers ``{"success": true, "policy_version": <version>}``;
   anything else raises ``WeightSyncError`` and the old weights keep serving.
4. The previous file is deleted; new trajectories start.

A server that reports per-token ``policy_versions`` (``longcat serve``) is checked: a sample whose
tokens carry another version than the pinned one raises instead of training silently."""
from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections import Counter
from typing import Optional

from longcat.rl.protocols import PinnedVersions, Sample


class WeightSyncError(RuntimeError):
    """The server did not take the pushed weights."""


def _check_url(base_url) -> str:
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise ValueError(f"OpenAIPolicy: 'base_url' must be an http(s) URL like 'http://127.0.0.1:8000', "
                         f"got {base_url!r}")
    return base_url.rstrip("/").removesuffix("/v1")


class OpenAIPolicy(PinnedVersions):
    """``base_url``: the server (with or without ``/v1``); ``model``: the served model name (None:
    the first of ``GET /v1/models``). ``sampling``: ``temperature``, ``top_p``, ``max_tokens`` of
    every rollout. ``state_dict``: if given, pushed as ``version`` at construction, so the server
    starts from the trainer's weights. ``weights_dir``: where pushed weights are written (None: a
    temporary folder of this process, for a server on this machine)."""

    def __init__(self, base_url: str, model: Optional[str] = None, *, sampling: Optional[dict] = None,
                 version: int = 0, state_dict=None, weights_dir: Optional[str] = None,
                 api_key: Optional[str] = None, timeout: float = 120.0):
        import httpx

        self.base_url = _check_url(base_url)
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise ValueError(f"OpenAIPolicy: 'version' must be an int >= 0, got {version!r}")
        sampling = dict(sampling or {})
        unknown = sorted(set(sampling) - {"temperature", "top_p", "max_tokens", "stop_token_ids"})
        if unknown:
            raise ValueError(f"OpenAIPolicy: unknown 'sampling' key {unknown[0]!r} "
                             "(known: temperature, top_p, max_tokens, stop_token_ids)")
        self._sampling = sampling
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = timeout
        self._tmp = None
        if weights_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="longcat-rl-weights-")
            weights_dir = self._tmp.name
        os.makedirs(weights_dir, exist_ok=True)
        self.weights_dir = weights_dir
        self._httpx = httpx
        self.model = model if model is not None else self._first_model()
        self._version = version
        self._next: Optional[int] = None   # the version being pushed; new trajectories pin it
        self._pins: Counter = Counter()
        self._drained: Optional[asyncio.Event] = None
        self._switched: Optional[asyncio.Event] = None
        self._client = None
        self._last_file: Optional[str] = None
        self.busy_s = 0.0      # wall time with at least one request in flight
        self._inflight = 0
        self._busy_since = 0.0
        self.pushes: list[dict] = []  # one row per weight push: version, seconds, bytes
        if state_dict is not None:
            self._push_sync(state_dict, version)

    # ---- versions ----------------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self._version

    @property
    def live_versions(self) -> list[int]:
        return [self._version]

    def _released(self, version: int) -> None:
        if self._pins[version] == 0 and version == self._version and self._drained is not None:
            self._drained.set()

    # ---- generation --------------------------------------------------------------------------

    def _async_client(self):
        if self._client is None:
            self._client = self._httpx.AsyncClient(base_url=self.base_url, headers=self._headers,
                                                   timeout=self._timeout)
        return self._client

    async def generate(self, prompt_ids: list[int], n: int, version: int) -> list[Sample]:
        if self._next is not None and version == self._next:
            await self._switched.wait()  # pinned during a push: starts on the new weights
        if version != self._version:
            raise ValueError(f"generate: version {version} is not live (live: {self._version}); "
                             "pin it with acquire_version() first")
        body = {"model": self.model, "prompt": list(prompt_ids), "n": n, "logprobs": 0,
                "return_token_ids": True, **self._sampling}
        self._inflight += 1
        if self._inflight == 1:
            self._busy_since = time.perf_counter()
        try:
            resp = await self._async_client().post("/v1/completions", json=body)
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self.busy_s += time.perf_counter() - self._busy_since
        data = _json_or_raise(resp, "/v1/completions")
        out = []
        for c in sorted(data["choices"], key=lambda c: c["index"]):
            ids = c.get("token_ids")
            lp = (c.get("logprobs") or {}).get("token_logprobs")
            if ids is None or lp is None or len(ids) != len(lp):
                raise RuntimeError("generate: the server returned no token ids or logprobs per token "
                                   "(it must support 'return_token_ids' and 'logprobs' on /v1/completions)")
            versions = c.get("policy_versions") or [version] * len(ids)
            if any(v != version for v in versions):
                raise RuntimeError(f"generate: the server produced versions {sorted(set(versions))} for a "
                                   f"trajectory pinned to version {version}")
            out.append(Sample(list(prompt_ids), list(ids), [float(x) for x in lp], list(versions), c.get("text", ""),
                              c.get("finish_reason")))
        return out

    # ---- weight sync -------------------------------------------------------------------------

    def _write(self, state_dict, version: int) -> str:
        from safetensors.torch import save_file

        path = os.path.join(self.weights_dir, f"policy-v{version}.safetensors")
        tmp = path + ".tmp"
        save_file({k: v.detach().contiguous().cpu() for k, v in state_dict.items()}, tmp)
        os.replace(tmp, path)
        return path

    def _after_push(self, path: str, version: int, data: dict, t0: float) -> None:
        if not data.get("success", False) or data.get("policy_version", version) != version:
            raise WeightSyncError(f"update_weights: the server did not load version {version}: {data}")
        if self._last_file is not None and self._last_file != path and os.path.exists(self._last_file):
            os.remove(self._last_file)
        self._last_file = path
        self.pushes.append({"version": version, "seconds": time.perf_counter() - t0,
                            "bytes": os.path.getsize(path)})

    def _push_sync(self, state_dict, version: int) -> None:
        t0 = time.perf_counter()
        path = self._write(state_dict, version)
        with self._httpx.Client(base_url=self.base_url, headers=self._headers, timeout=self._timeout) as c:
            data = _json_or_raise(c.post("/v1/update_weights", json={"path": path, "version": version}),
                                  "/v1/update_weights", WeightSyncError)
        self._after_push(path, version, data, t0)

    async def update_weights(self, state_dict, version: int) -> None:
        if isinstance(version, bool) or not isinstance(version, int) or version <= self._version:
            raise ValueError(f"update_weights: 'version' must be an int > the live version {self._version}, "
                             f"got {version!r}")
        if self._next is not None:
            raise RuntimeError(f"update_weights: version {self._next} is still being pushed")
        self._next = version
        self._switched = asyncio.Event()
        try:
            while self._pins[self._version] > 0:  # in-flight trajectories finish on the old weights
                self._drained = asyncio.Event()
                await self._drained.wait()
            self._drained = None
            t0 = time.perf_counter()
            path = await asyncio.to_thread(self._write, state_dict, version)
            resp = await self._async_client().post("/v1/update_weights", json={"path": path, "version": version})
            self._after_push(path, version, _json_or_raise(resp, "/v1/update_weights", WeightSyncError), t0)
            self._version = version
        finally:
            self._next = None
            self._switched.set()

    def _first_model(self) -> str:
        with self._httpx.Client(base_url=self.base_url, headers=self._headers, timeout=self._timeout) as c:
            data = _json_or_raise(c.get("/v1/models"), "/v1/models")
        if not data.get("data"):
            raise ValueError(f"OpenAIPolicy: {self.base_url}/v1/models lists no model; pass 'model'")
        return data["data"][0]["id"]

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _json_or_raise(resp, route: str, exc=RuntimeError) -> dict:
    try:
        data = resp.json()
    except ValueError:
        data = {"error": {"message": resp.text[:500]}}
    if resp.status_code != 200:
        msg = (data.get("error") or {}).get("message", data) if isinstance(data, dict) else data
        raise exc(f"{route}: HTTP {resp.status_code}: {msg}")
    return data


__all__ = ["OpenAIPolicy", "WeightSyncError"]
