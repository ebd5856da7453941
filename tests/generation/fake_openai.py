"""An OpenAI-compatible chat-completions server on loopback, with faults that tests switch on.

A real HTTP/1.1 server (ThreadingHTTPServer, one thread per connection, keep-alive) so the real
`openai` client talks to it over a socket. Faults are consumed from a queue (`server.push(...)`)
or drawn at random (`server.fault_rates`), per request:

    "429"        429 with `Retry-After: <retry_after>` (seconds)
    "429-date"   429 with `Retry-After: <HTTP date>`
    "500"        500 with a JSON error body
    "slow"       sleeps `slow_seconds` before answering (past the client's timeout)
    "reset"      closes the connection with a TCP RST, no response
    "malformed"  200 with a body that is not JSON
    "401"        401 invalid API key
    "400"        400 bad request

`server.reject_response_format = True` answers 400 to any request that has `response_format`.

`python -m tests.generation.fake_openai --latency 0.2 --rate-429 0.2` serves from its own process
(the throughput benchmark) and prints `PORT <n>` when ready.
"""

from __future__ import annotations

import argparse
import collections
import email.utils
import json
import random
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:  # quiet: clients hang up
        pass


def answer_for(messages: list[dict[str, Any]], seed: int | None) -> str:
    last = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
    suffix = f" seed {seed}" if seed is not None else ""
    return f"Answer to: {last}{suffix}"


def tokens_of(text: str) -> list[str]:
    parts = text.split(" ")
    return [parts[0]] + [" " + p for p in parts[1:]]


class FakeOpenAI:
    def __init__(
        self,
        *,
        api_key: str | None = None,
        models: tuple[str, ...] = ("teacher-model",),
        latency: float = 0.0,
    ) -> None:
        self.api_key = api_key
        self.models = set(models)
        self.latency = latency
        self.retry_after = "1"
        self.slow_seconds = 5.0
        self.fault_rates: dict[str, float] = {}
        self._faults: collections.deque[str] = collections.deque()
        self._lock = threading.Lock()
        self._rng = random.Random(1234)
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.statuses: collections.Counter[int | str] = collections.Counter()
        self.bodies: collections.deque[dict[str, Any]] = collections.deque(maxlen=10_000)
        self.arrivals: list[float] = []
        # Answer 400 to a request with `response_format`, as endpoints without structured
        # output do (the judge then asks again without it).
        self.reject_response_format = False
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- control from tests -------------------------------------------------------------------
    def push(self, *faults: str) -> None:
        with self._lock:
            self._faults.extend(faults)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self.fault_rates = {}

    def _next_fault(self) -> str | None:
        with self._lock:
            if self._faults:
                return self._faults.popleft()
            for fault, rate in self.fault_rates.items():
                if self._rng.random() < rate:
                    return fault
        return None

    @property
    def base_url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self, port: int = 0) -> FakeOpenAI:
        self._httpd = _Server(("127.0.0.1", port), _make_handler(self))
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- responses ------------------------------------------------------------------------------
    def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body.get("messages") or []
        text = answer_for(messages, body.get("seed"))
        tokens = tokens_of(text)
        max_tokens = body.get("max_tokens")
        finish = "stop"
        if max_tokens is not None and len(tokens) > int(max_tokens):
            tokens = tokens[: int(max_tokens)]
            finish = "length"
        text = "".join(tokens)
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish,
            "logprobs": None,
        }
        if body.get("logprobs"):
            k = int(body.get("top_logprobs") or 0)
            content = []
            for i, tok in enumerate(tokens):
                chosen = -0.05 - 0.01 * (i % 7)
                tops = [{"token": tok, "logprob": chosen, "bytes": list(tok.encode())}]
                tops += [
                    {"token": f" alt{j}", "logprob": -2.0 - j, "bytes": None} for j in range(1, k)
                ]
                content.append(
                    {
                        "token": tok,
                        "logprob": chosen,
                        "bytes": list(tok.encode()),
                        "top_logprobs": tops[:k],
                    }
                )
            choice["logprobs"] = {"content": content}
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages) + 3
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", ""),
            "choices": [choice],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(tokens),
                "total_tokens": prompt_tokens + len(tokens),
            },
        }


def _make_handler(server: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # http.server writes headers and body in separate sends; with Nagle on, the client's
        # delayed ACK stalls every response ~40 ms. Real servers (uvicorn, vLLM) set TCP_NODELAY.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
            pass

        def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(raw)
            with server._lock:
                server.statuses[status] += 1

        def _error(
            self,
            status: int,
            message: str,
            kind: str,
            headers: dict[str, str] | None = None,
            code: str | None = None,
        ) -> None:
            # The shape and codes OpenAI sends; clients show only the code, never the message.
            self._json(status, {"error": {"message": message, "type": kind, "code": code}}, headers)

        def do_GET(self) -> None:  # noqa: N802
            if self.path.rstrip("/").endswith("/models"):
                self._json(
                    200,
                    {
                        "object": "list",
                        "data": [{"id": m, "object": "model"} for m in sorted(server.models)],
                    },
                )
            else:
                self._error(404, "Not found", "invalid_request_error")

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            with server._lock:
                server.requests += 1
                server.in_flight += 1
                server.max_in_flight = max(server.max_in_flight, server.in_flight)
                server.arrivals.append(time.monotonic())
            try:
                self._handle(raw)
            finally:
                with server._lock:
                    server.in_flight -= 1

        def _handle(self, raw: bytes) -> None:
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._error(404, f"Unknown route {self.path}", "invalid_request_error")
                return
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                self._error(400, "Invalid JSON body", "invalid_request_error")
                return
            with server._lock:
                server.bodies.append(body)
            fault = server._next_fault()
            if server.latency:
                time.sleep(server.latency)
            if fault == "reset":
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.connection.close()
                self.close_connection = True
                with server._lock:
                    server.statuses["reset"] += 1
                return
            if fault == "slow":
                time.sleep(server.slow_seconds)
            if fault == "429":
                self._error(
                    429,
                    "Rate limit reached, slow down.",
                    "rate_limit_error",
                    {"Retry-After": server.retry_after},
                )
                return
            if fault == "429-date":
                when = email.utils.formatdate(time.time() + float(server.retry_after), usegmt=True)
                self._error(429, "Rate limit reached.", "rate_limit_error", {"Retry-After": when})
                return
            if fault == "500":
                self._error(
                    500, "The server had an error while processing your request.", "server_error"
                )
                return
            if fault == "401" or (
                server.api_key is not None
                and self.headers.get("Authorization") != f"Bearer {server.api_key}"
            ):
                self._error(401, "Incorrect API key provided.", "invalid_request_error")
                return
            if fault == "400":
                self._error(
                    400,
                    "This model's maximum context length is 8 tokens.",
                    "invalid_request_error",
                    code="context_length_exceeded",
                )
                return
            if server.reject_response_format and "response_format" in body:
                self._error(
                    400,
                    "response_format is not supported by this model.",
                    "invalid_request_error",
                )
                return
            if body.get("model") not in server.models:
                self._error(
                    404,
                    f"The model `{body.get('model')}` does not exist.",
                    "invalid_request_error",
                    code="model_not_found",
                )
                return
            if fault == "malformed":
                self._json(200, b'{"id": "chatcmpl-broken", "choices": [')
                return
            self._json(200, server.completion(body))

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--rate-429", type=float, default=0.0)
    parser.add_argument("--retry-after", default="0.2")
    args = parser.parse_args(argv)
    server = FakeOpenAI(latency=args.latency)
    server.retry_after = args.retry_after
    if args.rate_429:
        server.fault_rates = {"429": args.rate_429}
    server.start(args.port)
    assert server._httpd is not None
    print(f"PORT {server._httpd.server_address[1]}", flush=True)
    try:
        for line in sys.stdin:  # the parent closes stdin (or sends "stop") to end the server
            if line.strip() == "stop":
                break
    finally:
        server.stop()


if __name__ == "__main__":
    main()
