"""Enqueue a Celery task by name, after the current transaction commits.

Services never import `workers.tasks`: they name the task and its queue. Sending after commit means
a worker never looks for a row that is not committed yet; outside a transaction it sends at once.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from distillapp.core.queues import Queue


def send_task(name: str, *args: Any, queue: Queue) -> None:
    """Send task `name` with `args` on `queue` now (see `enqueue` for the usual, after-commit way)."""
    from workers.app import app  # the Celery app: only wiring, no task module is imported here

    if app.conf.task_always_eager:
        # Eager mode (debugging, some tests) runs registered tasks inline; send_task never would.
        app.loader.import_default_modules()
        app.tasks[name].apply_async(args, queue=queue.value)
    else:
        app.send_task(name, args=list(args), queue=queue.value)


def enqueue(name: str, *args: Any, queue: Queue) -> None:
    """Send task `name` on `queue` once the current transaction commits."""
    transaction.on_commit(lambda: send_task(name, *args, queue=queue))
