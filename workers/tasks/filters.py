"""Tasks of the automatic filters (queue `default`, or `gpu` with a local judge). Thin: take the
run's id, call the service, re-sync the review queue."""

from __future__ import annotations

import logging

from workers.app import app

logger = logging.getLogger(__name__)


@app.task(
    name="workers.tasks.filters.execute_filter_run",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def execute_filter_run(run_id: int) -> int | None:
    """Run (or take over) a FilterRun. Idempotent: only the claim's winner works; verdicts are
    upserts and judge scores of the same judge are reused, so a re-run pays for nothing twice."""
    from distillapp.filters.services import filter_run_execute
    from distillapp.review.services import review_queue_sync

    run = filter_run_execute(run_id=run_id)
    if run is None:
        return None
    # New verdicts change what is reviewable and its priority.
    review_queue_sync(project=run.project, force=True)
    return run.pk
