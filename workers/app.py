"""The Celery application. Start workers with `celery -A workers.app worker -Q default,teacher`
and one beat with `celery -A workers.app beat`.

Tasks live in `workers/tasks/`: thin, idempotent functions that take ids and call services. This
module names them (`include`) without importing them, so the web can import the app to send a task
by name (`distillapp.core.dispatch`) without importing any task module.
"""

from __future__ import annotations

import os
import pkgutil
from pathlib import Path

import django
from celery import Celery
from kombu import Queue as KombuQueue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "distillapp.settings")
django.setup()

from django.conf import settings  # noqa: E402  (needs django.setup first)

from distillapp.core.queues import Queue  # noqa: E402

TASK_MODULES = [
    f"workers.tasks.{module.name}"
    for module in pkgutil.iter_modules([str(Path(__file__).with_name("tasks"))])
]

app = Celery("distillery", include=TASK_MODULES)
app.conf.update(
    broker_url=settings.CELERY_BROKER_URL,
    broker_connection_retry_on_startup=True,
    task_ignore_result=True,
    task_always_eager=settings.CELERY_TASK_ALWAYS_EAGER,
    task_eager_propagates=True,
    task_default_queue=Queue.DEFAULT.value,
    task_queues=[KombuQueue(q.value) for q in Queue],
    # A task is acknowledged only after it finished, and re-delivered if its worker died:
    # tasks are idempotent (a state guard plus a conditional update) so that is safe.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_soft_time_limit=6 * 3600,
    task_time_limit=6 * 3600 + 300,
    worker_hijack_root_logger=False,
    # Redis re-delivers an unacknowledged task after visibility_timeout; it must exceed the
    # longest task. The file-system broker (embedded default) shares one folder with the web.
    broker_transport_options=(
        {
            "data_folder_in": str(settings.CELERY_BROKER_DIR / "queue"),
            "data_folder_out": str(settings.CELERY_BROKER_DIR / "queue"),
            "processed_folder": str(settings.CELERY_BROKER_DIR / "processed"),
            "control_folder": str(settings.CELERY_BROKER_DIR / "control"),
            "store_processed": False,
        }
        if settings.CELERY_BROKER_URL.startswith("filesystem://")
        else {"visibility_timeout": settings.CELERY_BROKER_VISIBILITY_TIMEOUT}
    ),
)
# Services send every run's task with its queue (distillapp.core.dispatch); anything sent without
# one goes to `default`.
app.conf.task_routes = {"workers.tasks.*": {"queue": Queue.DEFAULT.value}}

# Celery beat (one per deployment): the sweep that re-enqueues runs whose worker died.
app.conf.beat_schedule = {
    "sweep-stale-runs": {
        "task": "workers.tasks.maintenance.sweep_stale_runs",
        "schedule": float(settings.RUN_SWEEP_SECONDS),
        "options": {"queue": Queue.DEFAULT.value, "expires": float(settings.RUN_SWEEP_SECONDS)},
    }
}
