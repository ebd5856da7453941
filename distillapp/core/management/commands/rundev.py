"""`make run`: the web server, one Celery worker for every queue and Celery beat (the sweep that
re-enqueues runs whose worker died), stopped together by Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from distillapp.core.queues import Queue

# A local vLLM or Ollama on this machine is the usual teacher in development; production
# deployments refuse loopback unless DISTILLERY_OUTBOUND_ALLOW says otherwise (docs/security.md).
DEV_OUTBOUND_ALLOW = "127.0.0.0/8,::1/128,localhost"


def child_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of the web and worker processes: loopback allowed unless set already."""
    env = dict(environ)
    env.setdefault("DISTILLERY_OUTBOUND_ALLOW", DEV_OUTBOUND_ALLOW)
    return env


class Command(BaseCommand):
    help = "Serve the app on 127.0.0.1 with a Celery worker for all queues and beat until Ctrl-C."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--addr", default="127.0.0.1:8000")
        parser.add_argument("--concurrency", type=int, default=2)

    def handle(self, *args: Any, **options: Any) -> None:
        queues = ",".join(q.value for q in Queue)
        commands = {
            "worker": [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers.app",
                "worker",
                "-Q",
                queues,
                "-c",
                str(options["concurrency"]),
                "--loglevel",
                "INFO",
            ],
            "beat": [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers.app",
                "beat",
                "-s",
                str(settings.VAR_DIR / "celerybeat-schedule"),
                "--loglevel",
                "INFO",
            ],
            "web": [sys.executable, "manage.py", "runserver", options["addr"], "--noreload"],
        }
        env = child_env(os.environ)
        children = {name: subprocess.Popen(cmd, env=env) for name, cmd in commands.items()}
        self.stdout.write(
            f"Distillery at http://{options['addr']} with a worker on {queues} and beat. Ctrl-C stops all."
        )

        stopping = False

        def stop(signum: int, _frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        exit_code = 0
        try:
            while not stopping:
                for name, child in children.items():
                    if child.poll() is not None:
                        self.stderr.write(f"{name} exited with {child.returncode}; stopping.")
                        exit_code = child.returncode or 1
                        stopping = True
                time.sleep(0.5)
        finally:
            for child in children.values():
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 15
            for child in children.values():
                try:
                    child.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.kill()
        if exit_code:
            sys.exit(exit_code)
