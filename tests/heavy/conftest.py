import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from longcat.heavy.backends import SampleBatch
from longcat.heavy.candidates import Candidate


class FakeBackend:
    """Answers every request with ``respond(prompt, i, request) -> text`` for sample i, and
    records the requests (the prompts the summary saw, the n asked for)."""

    def __init__(self, respond, finish="stop"):
        self.respond = respond
        self.finish = finish
        self.requests = []

    def count_tokens(self, text):
        return len(text.split())

    def sample(self, requests):
        self.requests += list(requests)
        out = []
        for r in requests:
            texts = [self.respond(r.prompt, i, r) for i in range(r.n)]
            out.append(SampleBatch([Candidate(t, self.finish, len(t.split()) or 1,
                                              [[-0.1, -2.0]] * max(1, len(t.split()))) for t in texts],
                                   prompt_tokens=7))
        return out


@pytest.fixture
def fake():
    return FakeBackend


class _Stub(BaseHTTPRequestHandler):
    """A minimal OpenAI-compatible server: /v1/models, /v1/completions, /v1/chat/completions.
    ``server.behaviour``: fail_batched (HTTP 500 when n > 1), fail_seeds (500 for these seeds),
    slow_seeds (answer after ``server.delay`` seconds)."""

    def log_message(self, *args):
        pass

    def _send(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send(200, {"object": "list", "data": [{"id": "stub-model", "object": "model"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        b = self.server.behaviour
        self.server.bodies.append(body)
        seed = body.get("seed")
        if body["n"] > 1 and b.get("fail_batched"):
            return self._send(500, {"error": {"message": "batched sampling broke"}})
        if seed in b.get("fail_seeds", ()):
            return self._send(500, {"error": {"message": f"seed {seed} broke"}})
        if seed in b.get("slow_seeds", ()):
            time.sleep(self.server.delay)
        answer = self.server.answer(body)
        choices = []
        for i in range(body["n"]):
            text = answer(i) if callable(answer) else answer
            if self.path.endswith("/chat/completions"):
                lp = {"content": [{"token": str(text), "logprob": -0.5, "top_logprobs": [
                    {"token": str(text), "logprob": -0.5}, {"token": "x", "logprob": -1.5}]}]} if body.get("logprobs") else None
                message = text if isinstance(text, dict) else {"role": "assistant", "content": text}
                choices.append({"index": i, "message": message, "finish_reason": "stop", "logprobs": lp})
            else:
                lp = {"tokens": [text], "token_logprobs": [-0.5], "top_logprobs": [{text: -0.5, "x": -1.5}],
                      "text_offset": [0]} if body.get("logprobs") is not None else None
                choices.append({"index": i, "text": text, "finish_reason": "stop", "logprobs": lp})
        self._send(200, {"choices": choices, "usage": {"prompt_tokens": 5, "completion_tokens": body["n"]}})


@pytest.fixture
def stub_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    server.behaviour, server.bodies, server.delay = {}, [], 2.0
    server.answer = lambda body: "19"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()
