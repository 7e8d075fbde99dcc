"""A real OpenAI-compatible HTTP server for tests: scripted replies and injected failures, on 127.0.0.1.

    from helpers.openai_server import OpenAIServer, Reply

    with OpenAIServer(script=[Reply(status=429), Reply(text="hello")]) as server:
        client = ChatClient(server.base_url, model="test")   # base_url = "http://127.0.0.1:<port>/v1"
        ...
        assert server.request_count == 2
        server.requests[-1]["body"]["messages"]               # every request, parsed, in arrival order

Which reply a request gets, in order of precedence:
1. the next unused entry of `script` (a list of `Reply`, consumed first-come first-served);
2. otherwise `responder(body)` if given (a function of the parsed request body, for replies that depend on the prompt);
3. otherwise `default` (`Reply(text="ok")` unless given).
Every reply is delayed by `latency` seconds on top of its own `delay`.

Failure injection through `Reply`: `status=429/500/...` (an OpenAI-style JSON error body, `headers` for Retry-After),
`delay=` longer than the client's timeout (a timeout), `raw=b"..."` (a malformed body sent as is with `status`),
`close=True` (drop the connection without answering), `finish_reason="length"` (a truncated completion).

Runs a `ThreadingHTTPServer` in a daemon thread (one thread per connection, so slow replies overlap like a real
server's). Only POST `{base_url}/chat/completions` is served; other paths get 404.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    """What the server answers to one request."""

    text: str = "ok"
    finish_reason: str = "stop"
    status: int = 200
    delay: float = 0.0
    raw: bytes | None = None
    close: bool = False
    prompt_tokens: int = 10
    completion_tokens: int | None = None  # default: the number of words in `text`
    headers: dict[str, str] = field(default_factory=dict)


class _Server(ThreadingHTTPServer):
    # The default listen backlog of 5 drops connections when many clients connect at once, and the kernel then
    # retries the SYN a second later: a benchmark at concurrency 32 would measure that, not the client.
    request_queue_size = 1024


class OpenAIServer:
    """Context manager: starts the server on a free port, yields itself, stops it on exit."""

    def __init__(
        self,
        script: list[Reply] | None = None,
        responder: Callable[[dict], Reply] | None = None,
        default: Reply | None = None,
        latency: float = 0.0,
        model: str = "test-teacher",
    ):
        self.script = list(script or [])
        self.responder = responder
        self.default = default or Reply()
        self.latency = latency
        self.model = model
        self.requests: list[dict] = []  # {"path", "body" (parsed JSON or None), "headers", "time"}
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    def __enter__(self) -> OpenAIServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length)
                try:
                    body = json.loads(data)
                except ValueError:
                    body = None
                reply = server._next_reply(self.path, body, {key.title(): value for key, value in self.headers.items()})
                time.sleep(server.latency + reply.delay)
                if self.path != "/v1/chat/completions":
                    reply = Reply(status=404, raw=b'{"error": {"message": "not found"}}')
                if reply.close:
                    self.close_connection = True
                    return
                if reply.raw is not None:
                    payload = reply.raw
                elif reply.status != 200:
                    payload = json.dumps({"error": {"message": f"injected {reply.status}", "code": reply.status}})
                    payload = payload.encode()
                else:
                    payload = json.dumps(server._completion(reply, body)).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout) before we answered

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True  # slow handlers must not block shutdown
        self._httpd.block_on_close = False
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _next_reply(self, path: str, body: dict | None, headers: dict) -> Reply:
        with self._lock:
            self.requests.append({"path": path, "body": body, "headers": headers, "time": time.monotonic()})
            if self.script:
                return self.script.pop(0)
        if self.responder is not None and body is not None:
            return self.responder(body)
        return self.default

    def _completion(self, reply: Reply, body: dict | None) -> dict:
        completion_tokens = reply.completion_tokens
        if completion_tokens is None:
            completion_tokens = len(reply.text.split())
        return {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": (body or {}).get("model") or self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.text},
                    "finish_reason": reply.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": reply.prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": reply.prompt_tokens + completion_tokens,
            },
        }
