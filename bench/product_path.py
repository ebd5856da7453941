"""Drive Distillery in-process for a benchmark: a throwaway database and media folder, the same
service functions the views, the API and the demo call, and a stand-in broker that records each
task the services send (after commit, as `distillapp.core.dispatch` sends them) and runs it here
by calling the task function, as a Celery worker would after receiving it.

Use: ``django_setup(work)`` once, before importing anything from ``distillapp``; then call services
and ``BROKER.drain()`` (everything pending, in order of sending, plus whatever those tasks send) or
``run_tasks(BROKER.take(name), workers=2)`` (tasks of one kind on worker threads, like
two workers of a queue: each thread has its own database connection).
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Task:
    name: str
    args: tuple[Any, ...]
    queue: str

    def run(self) -> Any:
        module, function = self.name.rsplit(".", 1)
        # Calling a Celery task object runs its body in this process, as the worker does.
        return getattr(importlib.import_module(module), function)(*self.args)


class Broker:
    """Stands in for the broker: collects what `dispatch.send_task` would send."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.pending: list[Task] = []
        self.ran: list[Task] = []

    def send(self, name: str, *args: Any, queue: Any) -> None:
        with self._lock:
            self.pending.append(Task(name, tuple(args), str(getattr(queue, "value", queue))))

    def take(self, name: str) -> list[Task]:
        """Remove and return the pending tasks called `name` (e.g. to run them on threads)."""
        with self._lock:
            mine = [t for t in self.pending if t.name == name]
            self.pending = [t for t in self.pending if t.name != name]
        return mine

    def drain(self) -> list[Any]:
        """Run every pending task, oldest first, until none is left (tasks may send more)."""
        results = []
        while True:
            with self._lock:
                if not self.pending:
                    return results
                task = self.pending.pop(0)
            results.append(task.run())
            self.ran.append(task)


BROKER = Broker()
PRELOAD = (
    "workers.tasks.datasets",
    "workers.tasks.evaluation",
    "workers.tasks.filters",
    "workers.tasks.generation",
    "workers.tasks.prompts",
    "workers.tasks.training",
    "distillapp.datasets.services",
    "distillapp.evaluation.runner",
    "distillapp.filters.services",
    "distillapp.generation.runners",
    "distillapp.generation.runners.local",
    "distillapp.prompts.services",
    "distillapp.review.services",
    "distillapp.training.runner",
    "workers.engine.generate_local",
    "workers.engine.evaluation.local",
    "workers.engine.topk_format",
)


def run_tasks(
    tasks: Sequence[Task],
    *,
    workers: int,
    on_done: Callable[[Task, Any, float], None] | None = None,
) -> None:
    """Run `tasks` on `workers` threads, like that many workers of the tasks' queue (each thread
    has its own database connection); `on_done(task, result, seconds)` as each one ends."""
    from django.db import connection

    def one(task: Task) -> tuple[Any, float]:
        started = time.perf_counter()
        try:
            return task.run(), time.perf_counter() - started
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(one, t): t for t in tasks}
        for future in as_completed(futures):
            result, secs = future.result()
            if on_done is not None:
                on_done(futures[future], result, secs)
    BROKER.ran.extend(tasks)


def django_setup(work: Path, *, model_root: Path) -> None:
    """Settings pointing at a fresh SQLite file, VAR_DIR and MEDIA_ROOT under `work`, local
    models allowed from `model_root` only; migrate; tasks go to BROKER instead of Celery."""
    work.mkdir(parents=True, exist_ok=True)
    os.environ["DJANGO_SETTINGS_MODULE"] = "distillapp.settings"
    os.environ["DATABASE_URL"] = f"sqlite:///{work / 'distillery.sqlite3'}"
    os.environ["DISTILLERY_VAR_DIR"] = str(work)
    os.environ["DISTILLERY_MEDIA_ROOT"] = str(work / "media")
    os.environ["DISTILLERY_MODEL_ROOTS"] = str(model_root)
    os.environ["DISTILLERY_TRAINING_PROCESSES"] = "1"  # one trainer process per run, no torchrun
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    # Load every task and the worker code behind it now: the tasks import it lazily, and in a
    # checkout other people commit to, a module first imported an hour into the run can expect
    # a newer version of one already loaded (ImportError half-way through).
    for name in PRELOAD:
        importlib.import_module(name)
    from distillapp.core import dispatch

    dispatch.send_task = BROKER.send  # type: ignore[assignment]
