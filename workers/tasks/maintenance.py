from __future__ import annotations

from workers.app import app


@app.task(name="workers.tasks.maintenance.ping")
def ping() -> str:
    """A no-op used by health checks and tests to prove a worker consumes the queue."""
    return "pong"
