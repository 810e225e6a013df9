"""A fake OpenAI-compatible server on 127.0.0.1 for tests of the HTTP clients (engines, judge, eval, ask).

``ChatServer(reply)`` answers each POST with ``reply(body) -> (status, payload)``; it records every request's
body, headers and path, and how many requests were in flight at once. ``GET /v1/models`` lists one model.
``LoopbackServer`` is the HTTP server under it, and under the fake web of the web-tool tests.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

HUNG_UP = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class LoopbackServer(ThreadingHTTPServer):
    """A threading HTTP server on which a client that hangs up before its reply is not an error.

    Tests of timeouts and size caps make clients give up on purpose; the standard server would print the
    handler's ``BrokenPipeError`` traceback to stderr, from its thread, whenever that write happens.
    """

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], HUNG_UP):
            super().handle_error(request, client_address)


def completion(text: str, finish: str = "stop", logprobs: list[float] | None = None) -> dict:
    """A chat-completions response holding one assistant message."""
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
    if logprobs is not None:
        choice["logprobs"] = {"content": [{"token": "t", "logprob": v} for v in logprobs]}
    return {"id": "c", "object": "chat.completion", "choices": [choice]}


def last_user_text(body: dict) -> str:
    """The text of the last message of a chat request (its text parts joined)."""
    content = body["messages"][-1]["content"]
    return content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)


class ChatServer:
    """A chat-completions server whose replies come from ``self.reply(body) -> (status, payload)``."""

    def __init__(self, reply: Callable[[dict], tuple[int, dict]] | None = None, *, delay: float = 0.0):
        self.reply = reply or (lambda body: (200, completion("<reason>ok</reason><answer>x</answer>")))
        self.delay = delay
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.paths: list[str] = []
        self.in_flight = self.most_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, payload):
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(200, {"data": [{"id": "tiny-served"}]} if self.path == "/v1/models" else {})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                    server.paths.append(self.path)
                    server.in_flight += 1
                    server.most_in_flight = max(server.most_in_flight, server.in_flight)
                time.sleep(server.delay)
                with server.lock:
                    server.in_flight -= 1
                    status, payload = server.reply(body)
                self._send(status, payload)

        self.httpd = LoopbackServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "ChatServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
