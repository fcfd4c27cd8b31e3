"""A local stand-in for an OpenAI-compatible /v1/chat/completions endpoint (tests only): it
answers each request with the next scripted message (or a function of the request) and keeps
the requests so tests can check what the client sent."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ChatStub:
    def __init__(self, respond):
        """``respond(request_body) -> message dict`` (role/content/tool_calls)."""
        self.respond = respond
        self.requests: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append(body)
                if not self.path.endswith("/v1/chat/completions"):
                    self.send_response(404)
                    self.end_headers()
                    return
                msg = stub.respond(body)
                data = json.dumps({"id": "x", "object": "chat.completion", "choices": [
                    {"index": 0, "message": msg, "finish_reason": "stop"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.server.shutdown()
        self.server.server_close()
