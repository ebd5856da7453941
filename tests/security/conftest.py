"""Fixtures of the security tests: a strict outbound policy and small loopback HTTP servers."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@pytest.fixture
def strict_outbound(settings, monkeypatch):
    """No private address allowed: what a production deployment gets by default."""
    settings.OUTBOUND_ALLOW = []
    monkeypatch.delenv("DISTILLERY_OUTBOUND_ALLOW", raising=False)
    return settings


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length", 0))
        self.rfile.read(length)
        self.server.paths.append(self.path)  # type: ignore[attr-defined]
        status, headers, body = self.server.answer(self.path)  # type: ignore[attr-defined]
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def chat_reply(text: str = "hello from loopback") -> tuple[int, dict[str, str], bytes]:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
    }
    return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()


@pytest.fixture
def http_server() -> Iterator[Callable[..., Any]]:
    """Start loopback servers whose answer is `answer(path) -> (status, headers, body)`."""
    servers: list[ThreadingHTTPServer] = []

    def start(answer: Callable[[str], tuple[int, dict[str, str], bytes]] = lambda p: chat_reply()):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.paths = []  # type: ignore[attr-defined]
        server.answer = answer  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        server.port = server.server_address[1]  # type: ignore[attr-defined]
        server.base_url = f"http://127.0.0.1:{server.port}/v1"  # type: ignore[attr-defined]
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def fake_dns(monkeypatch):
    """Answer made-up names with the addresses the test chooses; other names resolve as usual."""
    answers: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name in answers:
            out = []
            for address in answers[name]:
                family = socket.AF_INET6 if ":" in address else socket.AF_INET
                sockaddr = (
                    (address, int(port or 0), 0, 0) if ":" in address else (address, int(port or 0))
                )
                out.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
            return out
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers
