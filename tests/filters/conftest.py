"""A loopback OpenAI-compatible judge: a tiny http.server answering /v1/chat/completions.

The reply depends on the answer inside the request: "GOOD" → score 9, "MEH" → 5, "BAD" → 2,
"PROSE" → a plain-text reply with "7/10", "GARBAGE" → no score at all, "ECHO" → the request's
text echoed back (rubric and all), "BROKEN" → HTTP 400. Requests are kept in `server.requests`.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class JudgeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        self.server.requests.append(body)
        user = body["messages"][-1]["content"]
        answer = re.search(r"<answer>\n(.*)\n</answer>", user, re.DOTALL)
        answer = answer.group(1) if answer else ""
        if "BROKEN" in answer:
            return self._send(
                400, {"error": {"message": "bad request", "type": "invalid_request_error"}}
            )
        if "GARBAGE" in answer:
            content = "I cannot decide."
        elif "ECHO" in answer:
            content = user
        elif "PROSE" in answer:
            content = "Solid work overall. I'd give it 7/10 because it is mostly right."
        else:
            score = 9 if "GOOD" in answer else 5 if "MEH" in answer else 2 if "BAD" in answer else 6
            content = json.dumps({"score": score, "rationale": f"Rubric says {score}."})
        self._send(
            200,
            {
                "id": "chatcmpl-judge",
                "object": "chat.completion",
                "created": 0,
                "model": body.get("model", "judge"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            },
        )

    def _send(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def judge_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), JudgeHandler)
    server.daemon_threads = True
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield server
    server.shutdown()
    server.server_close()


def filter_job(job):
    """Start the automatic filter run of a finished job and run its task here, as a worker
    would. Returns the run's id (None when another worker had it)."""
    from distillapp.filters.services import filters_start_for_job
    from workers.tasks.filters import execute_filter_run

    return execute_filter_run.run(filters_start_for_job(job=job).pk)
