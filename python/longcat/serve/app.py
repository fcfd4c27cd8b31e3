"""The OpenAI-compatible HTTP server over an ``AsyncEngine`` (FastAPI).

Routes: ``POST /v1/chat/completions`` (tools with ``tool_choice`` auto / none / required / a named
function, the forced ones by constrained decoding; streaming, logprobs),
``POST /v1/completions`` (a text or token-id prompt), ``GET /v1/models``, ``GET /health``, and
``POST /v1/update_weights`` ``{"path", "version"}`` (also at ``/update_weights_from_disk`` with
SGLang's ``model_path`` / ``weight_version``): loads a checkpoint folder or safetensors file into
the live engine between steps; running requests continue under the new weights.

Auth: with ``api_key`` set, every route but ``/health`` needs ``Authorization: Bearer <key>``;
the weight-update route changes what the server answers, so expose it only with a key or on
localhost.

RL extras: every choice carries ``policy_version`` (the weights version of its last token); with
logprobs each token carries its own ``policy_version``; ``return_token_ids`` adds the prompt's
and each choice's token ids and per-token ``policy_versions``.

Errors use OpenAI's envelope ``{"error": {"message", "type", "param", "code"}}``: 400 for
malformed JSON, invalid or unsupported fields and prompts the engine cannot serve (too long),
401 for a wrong key, 404 for an unknown model, 503 when the engine has died. A client that
disconnects from a stream aborts its request.
"""
from __future__ import annotations

import dataclasses
import json
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Optional

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from longcat.engine.async_engine import AsyncEngine, EngineDeadError
from longcat.engine.chat import (ToolCallParser, chat_stop_token_ids, normalize_messages, normalize_tools,
                                 parse_assistant_text)
from longcat.engine.guided import ToolCallGuide
from longcat.engine.types import Completion, CompletionOutput, SamplingParams
from longcat.serve.protocol import (APIError, ChatCompletionRequest, CompletionRequest, UpdateWeightsRequest,
                                    error_body)

__all__ = ["build_app", "ServerThread", "TokenText"]

MIN_LOGPROB = -9999.0   # OpenAI's "very unlikely"; JSON has no -inf


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet: printable character -> the byte it stands for."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(bs, cs)}


class TokenText:
    """The text and raw bytes of one token id for logprobs (a byte-level token may hold part of
    a UTF-8 character: its bytes are exact, its text uses U+FFFD)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.byte_of = _byte_decoder()
        self.added = set(tokenizer.get_added_vocab().values())
        self.cache: dict[int, tuple[str, list[int]]] = {}

    def __call__(self, token_id: int) -> tuple[str, list[int]]:
        hit = self.cache.get(token_id)
        if hit is None:
            piece = self.tokenizer.convert_ids_to_tokens(token_id) or ""
            if token_id not in self.added and all(c in self.byte_of for c in piece):
                raw = bytes(self.byte_of[c] for c in piece)
            else:
                raw = piece.encode("utf-8")
            hit = self.cache[token_id] = (raw.decode("utf-8", errors="replace"), list(raw))
        return hit


def _param_of(message: str) -> Optional[str]:
    """The field a ValueError names: "SamplingParams.top_p must ..." -> "top_p",
    "messages[0].role: ..." -> "messages[0].role"."""
    head = message.split(" ", 1)[0].rstrip(":")
    if head.startswith("SamplingParams."):
        return head.split(".", 1)[1]
    for name in ("messages", "tools", "prompt"):
        if head.startswith(name):
            return head
    return None


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def _logprob(v: float) -> float:
    return max(float(v), MIN_LOGPROB)


def _policy_version(out: CompletionOutput, current: int) -> int:
    return out.versions[-1] if out.versions else current


class _Server:
    """Route handlers bound to one engine (``build_app`` wires them into FastAPI)."""

    def __init__(self, engine: AsyncEngine, model_name: str, api_key: Optional[str]):
        if engine.tokenizer is None:
            raise ValueError("engine: has no tokenizer; the server needs one (checkpoint tokenizer files)")
        self.engine = engine
        self.model_name = model_name
        self.api_key = api_key
        self.tokenizer = engine.tokenizer
        self.token_text = TokenText(self.tokenizer)
        self.chat_stops = chat_stop_token_ids(self.tokenizer)
        self.vocab_size = engine.engine.vocab_size
        self.created = int(time.time())

    # ---- shared ----------------------------------------------------------------------------

    def check_auth(self, request: Request) -> None:
        if self.api_key is None:
            return
        if request.headers.get("authorization", "") != f"Bearer {self.api_key}":
            raise APIError("invalid or missing API key (Authorization: Bearer <key>)", status=401,
                           type="authentication_error", code="invalid_api_key")

    def check_model(self, model: str) -> None:
        if model != self.model_name:
            raise APIError(f"The model `{model}` does not exist; this server serves `{self.model_name}`",
                           status=404, param="model", code="model_not_found")

    async def submit(self, prompt, params: SamplingParams, request_id: str, prompt_param: str):
        """Queues the request and waits for its first Completion, so a bad request is answered
        with 400 before any stream starts. Returns (first Completion, the rest as a generator)."""
        gen = self.engine.generate(prompt, params, request_id)
        try:
            first = await gen.__anext__()
        except (ValueError, TypeError) as e:
            raise APIError(str(e), param=_param_of(str(e))) from None
        except EngineDeadError as e:
            raise APIError(str(e), status=503, type="server_error") from None
        if first.error is not None:
            await gen.aclose()
            raise APIError(first.error, param=prompt_param)
        return first, gen

    @staticmethod
    async def drain(first: Completion, gen) -> Completion:
        last = first
        try:
            async for out in gen:
                last = out
        except EngineDeadError as e:
            raise APIError(str(e), status=503, type="server_error") from None
        return last

    @staticmethod
    def usage(out: Completion) -> dict:
        prompt = len(out.prompt_token_ids)
        completion = sum(len(o.token_ids) for o in out.outputs)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _chat_token_logprobs(self, out: CompletionOutput, start: int, end: int, top_n: int) -> list[dict]:
        entries = []
        for i in range(start, end):
            tid, lps = out.token_ids[i], out.logprobs[i]
            text, raw = self.token_text(tid)
            top = sorted(lps.items(), key=lambda kv: -kv[1])[:top_n]
            entries.append({"token": text, "logprob": _logprob(lps[tid]), "bytes": raw,
                            "top_logprobs": [{"token": self.token_text(t)[0], "logprob": _logprob(lp),
                                              "bytes": self.token_text(t)[1]} for t, lp in top],
                            "policy_version": out.versions[i]})
        return entries

    def _completion_logprobs(self, out: CompletionOutput, start: int, end: int, top_n: int,
                             offset: int) -> dict:
        tokens, token_lps, tops, offsets = [], [], [], []
        for i in range(start, end):
            tid, lps = out.token_ids[i], out.logprobs[i]
            text = self.token_text(tid)[0]
            tokens.append(text)
            token_lps.append(_logprob(lps[tid]))
            tops.append({self.token_text(t)[0]: _logprob(lp)
                         for t, lp in sorted(lps.items(), key=lambda kv: -kv[1])[:top_n]} if top_n else None)
            offsets.append(offset)
            offset += len(text)
        return {"tokens": tokens, "token_logprobs": token_lps, "top_logprobs": tops, "text_offset": offsets,
                "policy_versions": list(out.versions[start:end])}

    # ---- chat ------------------------------------------------------------------------------

    async def chat(self, body: ChatCompletionRequest):
        self.check_model(body.model)
        body.check_supported()
        try:
            messages = normalize_messages(body.messages)
            tools = normalize_tools(body.tools)
        except ValueError as e:
            raise APIError(str(e), param=_param_of(str(e))) from None
        prompt = self.tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True,
                                                    tokenize=False)
        # <|im_end|> ends a chat turn as EOS ends a text; ignore_eos ignores both
        stops = body.stop_ids(self.vocab_size, None if body.ignore_eos else self.chat_stops)
        params = body.sampling_params(body.max_new_tokens(), body.num_logprobs(), stops)
        forced = body.forced_tools(tools)
        if forced is not None:   # the turn opens with a call, to one of these tools, in their schemas
            try:
                guide = ToolCallGuide(self.tokenizer, forced, required=True)
            except ValueError as e:   # a tokenizer without <tool_call> markers cannot be guided
                raise APIError(f"tool_choice: {e}", param="tool_choice") from None
            params = dataclasses.replace(params, logits_processors=[guide])
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        first, gen = await self.submit(prompt, params, rid, "messages")
        if body.stream:
            return StreamingResponse(self.chat_stream(body, rid, first, gen), media_type="text/event-stream")
        final = await self.drain(first, gen)
        choices = [self.chat_choice(body, o) for o in final.outputs]
        resp = {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": self.model_name,
                "choices": choices, "usage": self.usage(final), "system_fingerprint": None}
        if body.return_token_ids:
            resp["prompt_token_ids"] = final.prompt_token_ids
        return JSONResponse(resp)

    def chat_choice(self, body: ChatCompletionRequest, out: CompletionOutput) -> dict:
        if body.parse_tools():
            parsed = parse_assistant_text(out.text)
            content, calls = parsed.content, parsed.tool_calls
        else:
            content, calls = out.text, []
        message: dict = {"role": "assistant", "content": content}
        if calls:
            message["tool_calls"] = calls
        top_n = body.top_logprobs or 0
        choice = {"index": out.index, "message": message,
                  "logprobs": ({"content": self._chat_token_logprobs(out, 0, len(out.token_ids), top_n),
                                "refusal": None} if body.logprobs else None),
                  "finish_reason": "tool_calls" if calls and out.finish_reason == "stop" else out.finish_reason,
                  "stop_reason": out.stop_reason,
                  "policy_version": _policy_version(out, self.engine.version)}
        if body.return_token_ids:
            choice["token_ids"], choice["policy_versions"] = out.token_ids, out.versions
        return choice

    def chat_stream(self, body: ChatCompletionRequest, rid: str, first: Completion, gen) -> AsyncIterator[str]:
        n = len(first.outputs)
        parsers = [ToolCallParser() if body.parse_tools() else None for _ in range(n)]
        sent_text, sent_tokens, num_calls = [0] * n, [0] * n, [0] * n

        def choice(o: CompletionOutput, delta: dict, logprobs=None, finish=None) -> dict:
            c = {"index": o.index, "delta": delta, "logprobs": logprobs, "finish_reason": finish,
                 "policy_version": _policy_version(o, self.engine.version)}
            if finish is not None:
                c["stop_reason"] = o.stop_reason
            return c

        def choices_of(o: CompletionOutput) -> list[dict]:
            i = o.index
            # the engine's text only grows (it holds back possible stop-string starts)
            text = o.text[sent_text[i]:]
            sent_text[i] = len(o.text)
            start, end = sent_tokens[i], len(o.token_ids)
            sent_tokens[i] = end
            parser = parsers[i]
            events = (parser.feed(text) + (parser.finish() if o.finished else [])) if parser else \
                ([text] if text else [])
            logprobs = ({"content": self._chat_token_logprobs(o, start, end, body.top_logprobs or 0),
                         "refusal": None} if body.logprobs and end > start else None)
            content = "".join(e for e in events if isinstance(e, str))
            out = []
            if content or logprobs is not None:
                c = choice(o, {"content": content}, logprobs)
                if body.return_token_ids:
                    c["token_ids"] = o.token_ids[start:end]
                out.append(c)
            for call in (e for e in events if isinstance(e, dict)):
                out.append(choice(o, {"tool_calls": [dict(call, index=num_calls[i])]}))
                num_calls[i] += 1
            if o.finished:
                finish = "tool_calls" if num_calls[i] and o.finish_reason == "stop" else o.finish_reason
                out.append(choice(o, {}, finish=finish))
            return out

        head = [{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
                for i in range(n)]
        return self._stream(body, rid, "chat.completion.chunk", first, gen, choices_of, head)

    async def _stream(self, body, rid: str, object_type: str, first: Completion, gen, choices_of,
                      head: Optional[list] = None) -> AsyncIterator[str]:
        """The SSE loop of both streaming endpoints: one chunk per choice that ``choices_of(o)``
        makes of what an engine output added, until that output finishes; then the usage when
        asked, and ``[DONE]``. An engine that dies ends the stream with an error event; leaving the loop
        (a client that went away) closes ``gen``, which aborts the request."""
        created = int(time.time())

        def chunk(choices: list, usage: Optional[dict] = None) -> str:
            obj = {"id": rid, "object": object_type, "created": created, "model": self.model_name,
                   "system_fingerprint": None, "choices": choices}
            if usage is not None:
                obj["usage"] = usage
            return _sse(obj)

        done: set[int] = set()
        out = first
        try:
            if head is not None:
                yield chunk(head)
            while True:
                for o in out.outputs:
                    if o.index in done:
                        continue
                    for c in choices_of(o):
                        yield chunk([c])
                    if o.finished:
                        done.add(o.index)
                if out.finished:
                    break
                out = await gen.__anext__()
            if body.include_usage():
                yield chunk([], self.usage(out))
        except EngineDeadError as e:
            yield _sse(error_body(str(e), "server_error"))
        finally:
            await gen.aclose()
        yield "data: [DONE]\n\n"

    # ---- completions -------------------------------------------------------------------------

    async def completions(self, body: CompletionRequest):
        self.check_model(body.model)
        body.check_supported()
        params = body.sampling_params(body.max_tokens, body.logprobs, body.stop_ids(self.vocab_size))
        rid = f"cmpl-{uuid.uuid4().hex}"
        first, gen = await self.submit(body.single_prompt(), params, rid, "prompt")
        if body.stream:
            return StreamingResponse(self.completion_stream(body, rid, first, gen), media_type="text/event-stream")
        final = await self.drain(first, gen)
        choices = []
        for o in final.outputs:
            c = {"index": o.index, "text": o.text,
                 "logprobs": (self._completion_logprobs(o, 0, len(o.token_ids), body.logprobs, 0)
                              if body.logprobs is not None else None),
                 "finish_reason": o.finish_reason, "stop_reason": o.stop_reason,
                 "policy_version": _policy_version(o, self.engine.version)}
            if body.return_token_ids:
                c["token_ids"], c["policy_versions"] = o.token_ids, o.versions
            choices.append(c)
        resp = {"id": rid, "object": "text_completion", "created": int(time.time()), "model": self.model_name,
                "choices": choices, "usage": self.usage(final), "system_fingerprint": None}
        if body.return_token_ids:
            resp["prompt_token_ids"] = final.prompt_token_ids
        return JSONResponse(resp)

    def completion_stream(self, body: CompletionRequest, rid: str, first: Completion, gen) -> AsyncIterator[str]:
        n = len(first.outputs)
        sent_text, sent_tokens = [0] * n, [0] * n

        def choices_of(o: CompletionOutput) -> list[dict]:
            i = o.index
            text = o.text[sent_text[i]:]
            start, end = sent_tokens[i], len(o.token_ids)
            if not (text or end > start or o.finished):
                return []
            c = {"index": i, "text": text,
                 "logprobs": (self._completion_logprobs(o, start, end, body.logprobs, sent_text[i])
                              if body.logprobs is not None else None),
                 "finish_reason": o.finish_reason, "policy_version": _policy_version(o, self.engine.version)}
            if o.finished:
                c["stop_reason"] = o.stop_reason
            if body.return_token_ids:
                c["token_ids"] = o.token_ids[start:end]
            sent_text[i], sent_tokens[i] = len(o.text), end
            return [c]

        return self._stream(body, rid, "text_completion", first, gen, choices_of)

    # ---- models, health, weights ---------------------------------------------------------------

    def models(self) -> dict:
        return {"object": "list", "data": [{
            "id": self.model_name, "object": "model", "created": self.created, "owned_by": "longcat",
            "max_model_len": self.engine.engine.max_len, "policy_version": self.engine.version}]}

    def health(self) -> JSONResponse:
        dead = getattr(self.engine, "error", None)
        if dead is not None:
            return JSONResponse(error_body(f"engine step failed: {dead!r}", "server_error"), status_code=503)
        return JSONResponse({"status": "ok", "policy_version": self.engine.version})

    async def update_weights(self, request: Request) -> dict:
        try:
            raw = await request.json()
        except ValueError as e:
            raise APIError(f"malformed JSON body: {e}") from None
        try:
            body = UpdateWeightsRequest.parse(raw)
        except Exception as e:  # pydantic.ValidationError
            raise APIError(f"expected {{'path': str, 'version': int >= 0}}: {e}", param="path") from None
        t0 = time.perf_counter()
        try:
            await self.engine.update_weights(body.path, body.version)
        except EngineDeadError as e:
            raise APIError(str(e), status=503, type="server_error") from None
        except (ValueError, TypeError, KeyError, OSError, RuntimeError) as e:
            raise APIError(f"update_weights failed, the old weights keep serving: {e}", param="path") from None
        return {"success": True, "message": f"loaded {body.path} as version {body.version} "
                                            f"in {time.perf_counter() - t0:.3f} s",
                "policy_version": self.engine.version, "num_paused_requests": 0}


def _validation_message(exc: RequestValidationError) -> tuple[str, Optional[str]]:
    errors = exc.errors()
    if not errors:
        return "invalid request body", None
    e = errors[0]
    loc = [str(x) for x in e.get("loc", ()) if x != "body"]
    if e.get("type") == "json_invalid":
        return f"malformed JSON body: {e.get('msg')}", None
    param = ".".join(loc) or None
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{param or 'body'}: {e.get('msg')}{more}", param


def build_app(engine: AsyncEngine, model_name: str, api_key: Optional[str] = None) -> FastAPI:
    """The FastAPI app serving ``engine`` as ``model_name``; the app starts the engine's step
    loop at startup and shuts it down at exit."""
    server = _Server(engine, model_name, api_key)

    @asynccontextmanager
    async def lifespan(app):
        await engine.start()
        try:
            yield
        finally:
            await engine.shutdown()

    app = FastAPI(title="longcat", lifespan=lifespan)
    app.state.server = server
    auth = [Depends(server.check_auth)]

    @app.exception_handler(APIError)
    async def _api_error(request, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        message, param = _validation_message(exc)
        return JSONResponse(error_body(message, param=param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):
        return JSONResponse(error_body(str(exc.detail), "invalid_request_error" if exc.status_code < 500
                                       else "server_error"), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _internal(request, exc: Exception):
        return JSONResponse(error_body(f"internal error: {type(exc).__name__}: {exc}", "server_error"),
                            status_code=500)

    app.post("/v1/chat/completions", dependencies=auth)(server.chat)
    app.post("/v1/completions", dependencies=auth)(server.completions)
    app.get("/v1/models", dependencies=auth)(server.models)
    app.get("/health")(server.health)
    app.post("/v1/update_weights", dependencies=auth)(server.update_weights)
    app.post("/update_weights_from_disk", dependencies=auth)(server.update_weights)
    return app


class ServerThread:
    """Runs an app with uvicorn in a background thread (tests, notebooks, RL loops that embed a
    server): ``with ServerThread(app, port=0) as s: s.base_url``. Port 0 picks a free port."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, timeout: float = 60.0):
        import socket
        import threading

        import uvicorn

        if port == 0:
            with socket.socket() as sock:
                sock.bind((host, 0))
                port = sock.getsockname()[1]
        self.host, self.port, self.timeout = host, port, timeout
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="longcat-server", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + self.timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {self.base_url}")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(self.timeout)
