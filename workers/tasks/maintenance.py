"""Periodic and health tasks (queue `default`)."""

from __future__ import annotations

import logging

from celery.signals import worker_ready

from workers.app import app

logger = logging.getLogger(__name__)


@app.task(name="workers.tasks.maintenance.ping")
def ping() -> str:
    """A no-op used by health checks and tests to prove a worker consumes the queue."""
    return "pong"


@app.task(name="workers.tasks.maintenance.sweep_stale_runs", ignore_result=True)
def sweep_stale_runs() -> list[tuple[str, int]]:
    """Re-send the task of every run whose worker stopped heart-beating. Celery beat sends this
    every DISTILLERY_RUN_SWEEP_SECONDS; idempotent (the claim decides who runs)."""
    from distillapp.core.runs.services import runs_sweep

    return runs_sweep()


@worker_ready.connect
def _sweep_on_start(sender: object = None, **kwargs: object) -> None:
    # Where no beat runs yet, a starting worker still picks up runs whose worker died.
    try:
        from distillapp.core.runs.services import runs_sweep

        runs_sweep()
    except Exception:  # noqa: BLE001 - never keep a worker from starting
        logger.exception("could not sweep stale runs at worker start")
