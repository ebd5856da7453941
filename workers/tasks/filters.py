"""Tasks of the automatic filters (queue `default`). Thin: re-fetch by id, call a service."""

from __future__ import annotations

import logging

from workers.app import app

logger = logging.getLogger(__name__)


def _refresh_review_queue(project_id: int) -> None:
    """New verdicts change what is reviewable and its priority: re-sync the project's queue."""
    from distillapp.projects.models import Project
    from distillapp.review.services import review_queue_sync

    project = Project.objects.filter(pk=project_id).first()
    if project is not None:
        review_queue_sync(project=project, force=True)


@app.task(
    name="workers.tasks.filters.run_job_filters",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def run_job_filters(job_id: int) -> int | None:
    """Filter a finished generation job's completions. Idempotent: a re-delivery recomputes the
    same verdicts (upsert per completion) and reuses judge scores of the same judge.
    """
    from distillapp.filters.services import filters_run_for_job
    from distillapp.generation.models import GenerationJob

    job = GenerationJob.objects.filter(pk=job_id).first()
    if job is None:
        logger.info("run_job_filters: job %s no longer exists", job_id)
        return None
    run = filters_run_for_job(job=job)
    _refresh_review_queue(job.project_id)
    return run.pk


@app.task(
    name="workers.tasks.filters.execute_filter_run",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def execute_filter_run(run_id: int) -> int | None:
    """Run an on-demand FilterRun. Idempotent: only the worker that claims it (queued → running,
    or a running one with a stale heartbeat) does the work; a duplicate delivery does nothing.
    """
    from distillapp.filters.services import filter_run_execute

    run = filter_run_execute(run_id=run_id)
    if run is None:
        return None
    _refresh_review_queue(run.project_id)
    return run.pk
